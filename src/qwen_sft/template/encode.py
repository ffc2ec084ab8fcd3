"""One tokenisation: a conversation's pieces (`render.py`) become the training example and the inference prompt.

Tokenisation (one rule for train, preview, predict, chat, serve): a piece is text or a *marker*, an added
token the template itself inserts (<|im_start|>, <|im_end|>, and <tool_call>, <tool_response>, <think>
... only where the template puts them). A marker the tokenizer has as an added token is its one id; all
other text is tokenised by the plain BPE with no added tokens (`tokenizer.text_tokenizer`), so a
`<|im_end|>` typed into a message is text, never a control id. Consecutive text is one tokenisation run,
except that every assistant answer starts a new run: the point where an inference prompt ends. So the
prompt ids are, by construction, a prefix of the training ids. HF tokenisation of the rendered string
also splits at added tokens first, so the ids equal the checkpoint's `apply_chat_template(tokenize=True)`
except (1) content holding added-token text (by design) and (2) an answer that starts with whitespace
the BPE would merge with the text before it (e.g. "assistant\\n" + "\\nhi": here [assistant, \\n, \\n, hi],
there [assistant, \\n\\n, hi]), where ours is what the model sees at inference.

Loss modes (which tokens are trained):
  all                     every token (system, user, tool results, template text, as qwen1.5-sft advises)
  assistant               every assistant turn: its reasoning, content, tool calls and closing <|im_end|>
  last                    the last assistant turn only
  assistant_no_reasoning  as assistant, but a <think>...</think> block with reasoning is context
  last_no_reasoning       as last, likewise
The <|im_end|> closing an assistant turn is trained in every mode: it is what makes the model stop.

Qwen3: its template renders the last assistant turn (and any after the last user query that has
reasoning) with a think block, and drops the reasoning of turns before the last user query. A turn without
reasoning gets the empty block `<think>\\n\\n</think>\\n\\n`: that is the thinking-off prompt
(`enable_thinking=False`), template text the model never generates, so it is context in every mode but
`all` (which trains every token, this block included), and the answer run starts after it.

Truncation (max_length): the first max_length tokens are kept and later messages are dropped. An answer the
cut falls inside is trained up to the cut and gets no end token: replacing its last token by <|im_end|> would
teach the model to stop mid-sentence, and letting it run on is not taught either (nothing follows the cut).
"""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass

from qwen_sft.template.render import Part, Piece, Template, render_pieces
from qwen_sft.template.tokenizer import text_tokenizer
from qwen_sft.utils.errors import UserError

IGNORE_INDEX = -100  # a label that is not trained (PyTorch's cross-entropy default)


class Loss(str, enum.Enum):
    ALL = "all"
    ASSISTANT = "assistant"
    LAST = "last"
    ASSISTANT_NO_REASONING = "assistant_no_reasoning"
    LAST_NO_REASONING = "last_no_reasoning"


# ------------------------------------------------------------------------------------------- rendering

def pieces(messages: list[dict], template: Template, add_generation_prompt: bool = False, tools: list | None = None,
           enable_thinking: bool = True) -> list[Piece]:
    """The conversation as pieces; `render` joins their text, `encode_prompt` / `encode_example` tokenise them.

    Args:
        messages: [{"role", "content", "reasoning_content"?, "tool_calls"?}, ...] (data.Sample.messages).
        add_generation_prompt: end with the assistant header the answer is generated after.
        tools: OpenAI tool definitions offered to the model (qwen2.5, qwen3).
        enable_thinking: qwen3 only: False adds the empty think block to the generation prompt.

    Raises:
        UserError: tools, tool calls or tool messages for a template without a tool format.
    """
    return render_pieces(messages, template, add_generation_prompt, tools, enable_thinking)


def render(messages: list[dict], template: Template, add_generation_prompt: bool = False, tools: list | None = None,
           enable_thinking: bool = True) -> str:
    """The exact text a conversation becomes (what the family's own chat template renders)."""
    return "".join(p.text for p in pieces(messages, template, add_generation_prompt, tools, enable_thinking))


# ------------------------------------------------------------------------------------------ tokenising

def encode_pieces(items: list[Piece], tokenizer) -> tuple[list[int], list[Piece]]:
    """Token ids of a piece list, and for each id the piece it came from (see the module docstring)."""
    plain, added = text_tokenizer(tokenizer)
    segments: list[Piece | list[Piece]] = []  # a control piece, or a run of text pieces
    run: list[Piece] = []
    for piece in items:
        control = piece.marker and piece.text in added
        if (control or piece.new_run) and run:
            segments.append(run)
            run = []
        if control:
            segments.append(piece)
        elif piece.text:
            run.append(piece)
    if run:
        segments.append(run)
    # one run at a time: encode_batch would start tokenizers' thread pool, which a later fork (DataLoader
    # workers, servers) then warns about and disables
    encodings = (plain.encode("".join(p.text for p in s), add_special_tokens=False)
                 for s in segments if isinstance(s, list))
    ids: list[int] = []
    owners: list[Piece] = []
    for segment in segments:
        if isinstance(segment, Piece):
            ids.append(added[segment.text])
            owners.append(segment)
            continue
        encoding = next(encodings)
        ids += encoding.ids
        if all((p.part, p.message) == (segment[0].part, segment[0].message) for p in segment):
            owners += [segment[0]] * len(encoding.ids)
            continue
        starts, at = [], 0  # a run mixing parts: each token belongs to the piece its first character is in
        for p in segment:
            starts.append(at)
            at += len(p.text)
        owners += [segment[bisect.bisect_right(starts, start) - 1] for start, _ in encoding.offsets]
    return ids, owners


def encode_prompt(messages: list[dict], tokenizer, template: Template, tools: list | None = None,
                  enable_thinking: bool = True) -> list[int]:
    """Token ids of a conversation followed by the assistant generation prompt.

    Args:
        messages: ends with a user (or tool) turn.
        tools: OpenAI tool definitions offered to the model (qwen2.5, qwen3).
        enable_thinking: qwen3 only: False ends the prompt with the empty think block (answer directly).

    Raises:
        UserError: tools for a template without a tool format.
    """
    return encode_pieces(pieces(messages, template, True, tools, enable_thinking), tokenizer)[0]


def stop_token_ids(tokenizer) -> list[int]:
    """Generation stops at either of these: <|im_end|> closes a turn, <|endoftext|> ends a document."""
    return [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]


def count_trained(labels: list[int]) -> int:
    """Tokens one example trains: position t predicts labels[t + 1], so the first label never carries loss. The
    one count behind preview, the collators' per-batch counts, the forecast and the token-mean loss."""
    return sum(label != IGNORE_INDEX for label in labels[1:])


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where not trained
    truncated: bool = False

    @property
    def num_trained(self) -> int:
        return count_trained(self.labels)


def encode_example(messages: list[dict], tokenizer, template: Template, loss: str = "all",
                   max_length: int | None = None, tools: list | None = None) -> Example:
    """Tokenise a whole conversation and mark which tokens are trained.

    The ids are those of `encode_prompt` for the conversation before each answer, followed by the answer:
    both come from the same piece list (see the module docstring).

    Args:
        messages: [{"role", "content", "reasoning_content"?, "tool_calls"?}, ...] (data.Sample.messages).
        loss: all | assistant | last | assistant_no_reasoning | last_no_reasoning (module docstring).
        max_length: cut to this many tokens (a cut answer keeps no end token; see the module docstring).
        tools: OpenAI tool definitions (data.Sample.tools).

    Raises:
        UserError: an unknown loss mode; tools for a template without a tool format; reasoning_content
            for a template without a reasoning format (it would be dropped silently).
    """
    try:
        mode = Loss(loss)
    except ValueError:
        raise UserError(f"unknown loss mode {loss!r}; choose one of: {', '.join(m.value for m in Loss)}") from None
    if not template.thinking and any(m.get("reasoning_content") for m in messages):
        raise UserError(f"template {template.name} has no reasoning format, so reasoning_content would be "
                        "dropped; use template qwen3 (or remove reasoning_content)")
    ids, owners = encode_pieces(pieces(messages, template, tools=tools), tokenizer)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    reasoning = mode in (Loss.ALL, Loss.ASSISTANT, Loss.LAST)
    only_last = mode in (Loss.LAST, Loss.LAST_NO_REASONING)
    trained = [mode == Loss.ALL or ((p.part == Part.ANSWER or (reasoning and p.part == Part.REASONING))
                                    and (not only_last or p.message == last)) for p in owners]
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(ids, trained)]
    if max_length is None or len(ids) <= max_length:
        return Example(input_ids=ids, labels=labels)
    return Example(input_ids=ids[:max_length], labels=labels[:max_length], truncated=True)


def encode_sample(sample, tokenizer, template: Template, loss: str = "all", max_length: int | None = None) -> Example:
    """`encode_example` for a `data.Sample` (its messages and tools); errors name the sample's file and line.

    Raises:
        UserError: as `encode_example`, prefixed with `sample.where`.
    """
    try:
        return encode_example(sample.messages, tokenizer, template, loss, max_length, tools=sample.tools)
    except UserError as err:
        raise UserError(f"{sample.where}: {err}") from None
