"""Chat templates: a conversation becomes one list of pieces, from which both the training example and the
inference prompt are tokenised.

Templates (`get_template`; each renders exactly the text of the family's published chat template, which
the tests prove against the stored Jinja in qwen_sft/chat_templates/ and `template_proof` at load time):
  qwen1.5             Qwen1.5-Chat; default system "You are a helpful assistant" (`qwen` is an alias)
  qwen2               Qwen2-Instruct; default system "You are a helpful assistant."
  qwen2.5             Qwen2.5-Instruct; default system "You are Qwen, created by Alibaba Cloud. ..."; tools
  qwen3               Qwen3 (hybrid thinking); no default system; tools; reasoning in <think>...</think>
  qwen1.5-sft-legacy  the spec's prompt byte for byte: system with a period, `<|im_start|>assistant` with
                      no newline; training uses the same rendering, so train and inference agree

Tokenisation (one rule for train, preview, predict, chat, serve): a piece is text or a *marker*, an added
token the template itself inserts (<|im_start|>, <|im_end|>, and <tool_call>, <tool_response>, <think>
... only where the template puts them). A marker the tokenizer has as an added token is its one id; all
other text is tokenised by the plain BPE with no added tokens (`tokenizer.text_tokenizer`), so a
`<|im_end|>` typed into a message is text, never a control id. Consecutive text is one tokenisation run,
except that every assistant answer starts a new run: the point where an inference prompt ends. So the
prompt ids are, by construction, a prefix of the training ids. HF tokenisation of the rendered string
also splits at added tokens first, so the ids equal the checkpoint's `apply_chat_template(tokenize=True)`
except (1) content holding added-token text (by design) and (2) an answer that starts with whitespace
the BPE would merge with the text before it (e.g. "assistant\\n" + "\\nhi": here [assistant, \\n, \\nhi],
there [assistant, \\n\\n, hi]), where ours is what the model sees at inference.

Loss modes (which tokens are trained):
  all                     every token (system, user, tool results, template text, as the spec advises)
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

Truncation (max_length): the first max_length tokens are kept; if the cut falls inside an assistant
answer its last kept token becomes <|im_end|>, so an answer that is trained at all is still closed (the
model never learns to run on). Later messages are dropped.
"""

from __future__ import annotations

import bisect
import enum
import json
import re
from dataclasses import dataclass, field

from qwen_sft.errors import UserError
from qwen_sft.tokenizer import text_tokenizer

IGNORE_INDEX = -100


class Loss(str, enum.Enum):
    ALL = "all"
    ASSISTANT = "assistant"
    LAST = "last"
    ASSISTANT_NO_REASONING = "assistant_no_reasoning"
    LAST_NO_REASONING = "last_no_reasoning"


class Part(enum.Enum):
    """What a piece is, for the loss masks."""

    CONTEXT = "context"  # system, user, tool results, turn headers, template text, Qwen3's empty think block
    ANSWER = "answer"  # what the assistant generates: content, tool calls, the <|im_end|> closing the turn
    REASONING = "reasoning"  # a think block with reasoning, its markers included


@dataclass(frozen=True)
class Piece:
    text: str
    part: Part = Part.CONTEXT
    message: int = -1  # index of the message it renders; -1 for template text outside any message
    marker: bool = False  # inserted by the template; one id where the tokenizer has it as an added token
    new_run: bool = False  # an answer starts here: tokenised apart from the text before it


MARKERS = ("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
           "<think>", "</think>")
_MARKER_SPLIT = re.compile("(" + "|".join(re.escape(m) for m in MARKERS) + ")")
_CHATML_SEP = {"system": "\n", "user": "\n", "assistant": "\n"}


@dataclass(frozen=True)
class Template:
    """How messages become text. `family` picks the renderer; the rest is that template's data."""

    name: str
    family: str  # chatml (Qwen1.5, Qwen2, legacy) | qwen2.5 | qwen3
    default_system: str | None  # added where a conversation has no system message; None: none
    role_sep: dict = field(default_factory=lambda: dict(_CHATML_SEP))  # text between role name and content
    tokenizer_family: str = "qwen1.5"  # `build_tokenizer` family whose added tokens this template uses
    official: str | None = None  # chat_templates/<official>.jinja is its published Jinja; None: generated
    tools: bool = False  # renders tools, tool calls and tool results
    thinking: bool = False  # renders reasoning_content, knows enable_thinking
    turn_start: str = "<|im_start|>"
    turn_end: str = "<|im_end|>\n"

    def turn_prefix(self, role: str) -> str:
        return f"{self.turn_start}{role}{self.role_sep.get(role, chr(10))}"


TEMPLATES = {t.name: t for t in (
    Template("qwen1.5", "chatml", "You are a helpful assistant"),
    Template("qwen2", "chatml", "You are a helpful assistant.", official="qwen2"),
    Template("qwen2.5", "qwen2.5", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
             tokenizer_family="qwen2.5", official="qwen2.5", tools=True),
    Template("qwen3", "qwen3", None, tokenizer_family="qwen3", official="qwen3", tools=True, thinking=True),
    Template("qwen1.5-sft-legacy", "chatml", "You are a helpful assistant.",
             role_sep={"system": "\n", "user": "\n", "assistant": ""}),
)}
ALIASES = {"qwen": "qwen1.5"}  # the name before Qwen2 / Qwen2.5 / Qwen3 templates existed
TEMPLATE_NAMES = ("auto", *ALIASES, *TEMPLATES)


def get_template(name: str) -> Template:
    """Return the template called `name` (`qwen` is `qwen1.5`; `auto` is resolved by `template_proof`).

    Raises:
        UserError: if no such template exists.
    """
    template = TEMPLATES.get(ALIASES.get(name, name))
    if template is None:
        hint = " (resolve it with qwen_sft.template_proof.resolve_template)" if name == "auto" else ""
        raise UserError(f"unknown template {name!r}{hint}; choose one of: {', '.join(TEMPLATE_NAMES)}")
    return template


# ------------------------------------------------------------------------------------------- rendering

class _Pieces:
    """The piece list of one rendering, appended in text order."""

    def __init__(self):
        self.items: list[Piece] = []

    def template(self, text: str, part: Part = Part.CONTEXT, message: int = -1) -> None:
        """Template text: the markers in it become marker pieces."""
        for chunk in _MARKER_SPLIT.split(text):
            if chunk:
                self.items.append(Piece(chunk, part, message, marker=chunk in MARKERS))

    def content(self, text: str | None, part: Part = Part.CONTEXT, message: int = -1) -> None:
        """Text from the conversation (content, names, JSON): never a marker, whatever it holds."""
        if text:
            self.items.append(Piece(text, part, message))

    def answer_start(self, message: int) -> None:
        self.items.append(Piece("", Part.ANSWER, message, new_run=True))


def pieces(messages: list[dict], template: Template, add_generation_prompt: bool = False, tools: list | None = None,
           enable_thinking: bool = True) -> list[Piece]:
    """The conversation as pieces; `render` joins their text, `encode_prompt` / `encode_example` tokenise them.

    Raises:
        UserError: tools, tool calls or tool messages for a template without a tool format.
    """
    if not template.tools and (tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)):
        raise UserError(f"template {template.name} has no tool-call format (the conversation has tools, "
                        "tool_calls or a tool message); use template qwen2.5 or qwen3")
    out = _Pieces()
    {"chatml": _chatml, "qwen2.5": _qwen25, "qwen3": _qwen3}[template.family](out, messages, template, tools)
    if add_generation_prompt:
        _assistant_header(out, template, -1, empty_think=template.thinking and not enable_thinking)
    return out.items


def render(messages: list[dict], template: Template, add_generation_prompt: bool = False, tools: list | None = None,
           enable_thinking: bool = True) -> str:
    """The exact text a conversation becomes (what the family's own chat template renders)."""
    return "".join(p.text for p in pieces(messages, template, add_generation_prompt, tools, enable_thinking))


def _assistant_header(out: _Pieces, template: Template, message: int, empty_think: bool = False) -> None:
    """`<|im_start|>assistant\\n` (+ Qwen3's empty think block): the generation prompt, and the start of every
    rendered assistant turn, by the same code."""
    out.template(template.turn_start, message=message)
    out.content("assistant" + template.role_sep.get("assistant", "\n"), message=message)
    if empty_think:
        out.template("<think>\n\n</think>\n\n", message=message)


def _turn(out: _Pieces, role: str, content: str, i: int, sep: str = "\n") -> None:
    out.template("<|im_start|>", message=i)
    out.content(role + sep, message=i)
    out.content(content, message=i)
    out.template("<|im_end|>\n", message=i)


def _close_answer(out: _Pieces, i: int) -> None:
    out.template("<|im_end|>", Part.ANSWER, i)
    out.template("\n", Part.CONTEXT, i)  # never generated: the model stops at <|im_end|>


def _chatml(out: _Pieces, messages: list[dict], template: Template, tools) -> None:
    for i, m in enumerate(messages):
        if i == 0 and m["role"] != "system" and template.default_system is not None:
            out.template(template.turn_prefix("system") + template.default_system + template.turn_end)
        if m["role"] == "assistant":
            _assistant_header(out, template, i)
            out.answer_start(i)
            out.content(m["content"], Part.ANSWER, i)
            _close_answer(out, i)
        else:
            _turn(out, m["role"], m["content"], i, template.role_sep.get(m["role"], "\n"))


def _tojson(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # transformers' `tojson` filter for chat templates


TOOLS_HEAD = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
              "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
TOOLS_TAIL = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
              "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
              "<args-json-object>}\n</tool_call><|im_end|>\n")


def _tools_system(out: _Pieces, system: str | None, tools: list, message: int) -> None:
    """The system turn listing the tools (Qwen2.5 and Qwen3 word it the same; `system` may be None)."""
    out.template("<|im_start|>system\n")
    if system is not None:
        out.content(system, message=message)
        out.template("\n\n")
    out.template(TOOLS_HEAD)
    for tool in tools:
        out.template("\n")
        out.content(_tojson(tool))
    out.template(TOOLS_TAIL)


def _tool_call(out: _Pieces, call: dict, i: int, string_arguments_verbatim: bool) -> None:
    function = call.get("function") or call
    arguments = function.get("arguments")
    if not (string_arguments_verbatim and isinstance(arguments, str)):  # Qwen2.5 quotes a string, Qwen3 does not
        arguments = _tojson(arguments)
    out.template('<tool_call>\n{"name": "', Part.ANSWER, i)
    out.content(function.get("name"), Part.ANSWER, i)
    out.template('", "arguments": ', Part.ANSWER, i)
    out.content(arguments, Part.ANSWER, i)
    out.template("}\n</tool_call>", Part.ANSWER, i)


def _tool_result(out: _Pieces, messages: list[dict], i: int) -> None:
    """Consecutive tool messages share one user turn, each in <tool_response> tags."""
    if i == 0 or messages[i - 1]["role"] != "tool":
        out.template("<|im_start|>user", message=i)
    out.template("\n<tool_response>\n", message=i)
    out.content(_text(messages[i]), message=i)
    out.template("\n</tool_response>", message=i)
    if i == len(messages) - 1 or messages[i + 1]["role"] != "tool":
        out.template("<|im_end|>\n", message=i)


def _text(message: dict) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _qwen25(out: _Pieces, messages: list[dict], template: Template, tools) -> None:
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    if tools:
        _tools_system(out, template.default_system if system is None else system, tools, -1 if system is None else 0)
    else:
        _turn(out, "system", template.default_system if system is None else system, 0 if system is not None else -1)
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "user" or (role == "system" and i > 0):
            _turn(out, role, m["content"], i)
        elif role == "assistant":
            _assistant_header(out, template, i)
            out.answer_start(i)
            content = _text(m)
            if m.get("tool_calls") and content:  # the template's "\n" + content, then "\n<tool_call>"
                content += "\n"
            out.content(content, Part.ANSWER, i)
            for k, call in enumerate(m.get("tool_calls") or ()):
                if k:
                    out.template("\n", Part.ANSWER, i)
                _tool_call(out, call, i, string_arguments_verbatim=False)
            _close_answer(out, i)
        elif role == "tool":
            _tool_result(out, messages, i)


def last_query_index(messages: list[dict]) -> int:
    """Qwen3: the last user message that is a real query (not tool output pasted into a user turn)."""
    for i in range(len(messages) - 1, -1, -1):
        content = messages[i].get("content")
        if messages[i]["role"] == "user" and isinstance(content, str) and not (
                content.startswith("<tool_response>") and content.endswith("</tool_response>")):
            return i
    return len(messages) - 1


def _qwen3(out: _Pieces, messages: list[dict], template: Template, tools) -> None:
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    if tools:
        _tools_system(out, system, tools, 0)
    elif system is not None:
        _turn(out, "system", system, 0)
    last_query = last_query_index(messages)
    for i, m in enumerate(messages):
        role, content = m["role"], _text(m)
        if role == "user" or (role == "system" and i > 0):
            _turn(out, role, content, i)
        elif role == "assistant":
            reasoning = m.get("reasoning_content")
            if not isinstance(reasoning, str):  # reasoning written inline, as <think>...</think> + answer
                reasoning = ""
                if "</think>" in content:
                    reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                    content = content.split("</think>")[-1].lstrip("\n")
            think = i > last_query and (i == len(messages) - 1 or bool(reasoning))
            shown = reasoning.strip("\n") if think else ""
            _assistant_header(out, template, i, empty_think=think and not shown)
            out.answer_start(i)
            if shown:
                out.template("<think>\n", Part.REASONING, i)
                out.content(shown, Part.REASONING, i)
                out.template("\n</think>", Part.REASONING, i)
                out.template("\n\n", Part.ANSWER, i)
            out.content(content.lstrip("\n") if think else content, Part.ANSWER, i)
            for k, call in enumerate(m.get("tool_calls") or ()):
                if k or content:
                    out.template("\n", Part.ANSWER, i)
                _tool_call(out, call, i, string_arguments_verbatim=True)
            _close_answer(out, i)
        elif role == "tool":
            _tool_result(out, messages, i)


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
    runs = [s for s in segments if isinstance(s, list)]
    encodings = iter(plain.encode_batch(["".join(p.text for p in r) for r in runs], add_special_tokens=False)
                     if runs else [])
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


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where not trained
    truncated: bool = False

    @property
    def num_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def encode_example(messages: list[dict], tokenizer, template: Template, loss: str = "all",
                   max_length: int | None = None, tools: list | None = None) -> Example:
    """Tokenise a whole conversation and mark which tokens are trained.

    The ids are those of `encode_prompt` for the conversation before each answer, followed by the answer:
    both come from the same piece list (see the module docstring).

    Args:
        messages: [{"role", "content", "reasoning_content"?, "tool_calls"?}, ...] (data.Sample.messages).
        loss: all | assistant | last | assistant_no_reasoning | last_no_reasoning (module docstring).
        max_length: cut to this many tokens, keeping a trained answer's closing <|im_end|>.
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
    ids, labels = ids[:max_length], labels[:max_length]
    if owners[max_length - 1].part != Part.CONTEXT:  # cut inside an answer: close it
        ids[-1] = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if labels[-1] != IGNORE_INDEX:
            labels[-1] = ids[-1]
    return Example(input_ids=ids, labels=labels, truncated=True)


def encode_sample(sample, tokenizer, template: Template, loss: str = "all", max_length: int | None = None) -> Example:
    """`encode_example` for a `data.Sample` (its messages and tools); errors name the sample's file and line.

    Raises:
        UserError: as `encode_example`, prefixed with `sample.where`.
    """
    try:
        return encode_example(sample.messages, tokenizer, template, loss, max_length, tools=sample.tools)
    except UserError as err:
        raise UserError(f"{sample.where}: {err}") from None
