"""Chat templates: one rendering function shared by training and inference.

The spec's original trained on `...user\\n{input}\\n<|im_end|>` + `<|im_start|>assistant\\n{output}` but
prompted at inference with `...<|im_end|>\\n<|im_start|>assistant` — two different strings, so the model
saw at inference a prefix it was never trained on. Here a conversation is turned into text by `render`
only, and a prompt is always a prefix of the training text of the same conversation.

Loss modes (which tokens are trained):
  all        every token (system, user and assistant), as the spec advises for SFT
  assistant  every assistant turn: its content and its closing <|im_end|>
  last       the last assistant turn only
The <|im_end|> closing an assistant turn is trained in every mode: it is what makes the model stop.

Truncation (max_length): whole messages are kept while they fit; the message crossing the limit keeps its
head; if it is an assistant answer its last kept token becomes <|im_end|>, so an answer that is trained
at all is still closed (the model never learns to run on). Later messages are dropped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qwen_sft.errors import UserError

IGNORE_INDEX = -100


class Loss(str, enum.Enum):
    ALL = "all"
    ASSISTANT = "assistant"
    LAST = "last"


@dataclass(frozen=True)
class Template:
    """How ChatML messages become text. Each turn is `{turn_start}{role}{role_sep}{content}{turn_end}`."""

    name: str
    default_system: str
    role_sep: dict  # text between the role name and the content, per role
    turn_start: str = "<|im_start|>"
    turn_end: str = "<|im_end|>\n"

    def turn_prefix(self, role: str) -> str:
        return f"{self.turn_start}{role}{self.role_sep.get(role, chr(10))}"


TEMPLATES = {
    # Qwen's own chat template (tokenizer_config.json of Qwen1.5-*-Chat / Qwen2-*-Instruct)
    "qwen": Template(name="qwen", default_system="You are a helpful assistant",
                     role_sep={"system": "\n", "user": "\n", "assistant": "\n"}),
    # The spec's inference prompt, byte for byte: system with a period, `<|im_start|>assistant` with no
    # newline. Training uses the same rendering, so train and inference agree.
    "qwen1.5-sft-legacy": Template(name="qwen1.5-sft-legacy", default_system="You are a helpful assistant.",
                                   role_sep={"system": "\n", "user": "\n", "assistant": ""}),
}


def get_template(name: str) -> Template:
    """Return the template called `name`.

    Raises:
        UserError: if no such template exists.
    """
    if name not in TEMPLATES:
        raise UserError(f"unknown template {name!r}; choose one of: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def with_system(messages: list[dict], template: Template) -> list[dict]:
    """Prepend the template's default system message where the conversation has none."""
    if messages and messages[0]["role"] == "system":
        return list(messages)
    return [{"role": "system", "content": template.default_system}, *messages]


def _segments(messages: list[dict], template: Template) -> list[tuple[str, str, str]]:
    """(role, prefix, content) per message, the default system message included."""
    return [(m["role"], template.turn_prefix(m["role"]), m["content"]) for m in with_system(messages, template)]


def render(messages: list[dict], template: Template, add_generation_prompt: bool = False) -> str:
    """The exact text a conversation becomes. Training and inference both call this."""
    text = "".join(prefix + content + template.turn_end for _, prefix, content in _segments(messages, template))
    if add_generation_prompt:
        text += template.turn_prefix("assistant")
    return text


def encode_prompt(messages: list[dict], tokenizer, template: Template) -> list[int]:
    """Token ids of a conversation ending in a user turn, followed by the assistant generation prompt."""
    return _encode(tokenizer, render(messages, template, add_generation_prompt=True))


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
                   max_length: int | None = None) -> Example:
    """Tokenise a whole conversation and mark which tokens are trained.

    Pieces are tokenised separately (turn prefix, content, turn end) and concatenated, exactly as at
    inference, where the prompt is tokenised and the answer is generated token by token after it. For the
    `qwen` template every piece boundary is a special token or a newline, so the ids also equal those of
    tokenising `render(...)` in one go (tests check this); for the legacy template, whose prompt ends in
    `assistant` with no newline, piecewise is what keeps training and inference identical.

    Args:
        messages: [{"role", "content"}, ...]; a default system message is added where missing.
        loss: "all" | "assistant" | "last" (see module docstring).
        max_length: cut to this many tokens, keeping a trained answer's closing <|im_end|>.

    Raises:
        UserError: for an unknown loss mode.
    """
    try:
        mode = Loss(loss)
    except ValueError:
        raise UserError(f"unknown loss mode {loss!r}; choose one of: all, assistant, last") from None
    segments = _segments(messages, template)
    last_assistant = max((i for i, (role, _, _) in enumerate(segments) if role == "assistant"), default=-1)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    end_ids = _encode(tokenizer, template.turn_end)  # [<|im_end|>, "\n"]

    input_ids: list[int] = []
    labels: list[int] = []
    truncated = False
    for i, (role, prefix, content) in enumerate(segments):
        is_answer = role == "assistant"
        trained_answer = is_answer and (mode != Loss.LAST or i == last_assistant)
        head, body = _encode(tokenizer, prefix), _encode(tokenizer, content) if content else []
        turn = head + body + end_ids
        if mode == Loss.ALL:
            turn_labels = list(turn)
        elif trained_answer:  # content + <|im_end|>; the newline after it is never generated, so not trained
            turn_labels = [IGNORE_INDEX] * len(head) + body + end_ids[:1] + [IGNORE_INDEX] * (len(end_ids) - 1)
        else:
            turn_labels = [IGNORE_INDEX] * len(turn)
        if max_length is not None and len(input_ids) + len(turn) > max_length:
            room = max_length - len(input_ids)
            turn, turn_labels = turn[:room], turn_labels[:room]
            if is_answer and room > len(head):  # part of the answer survives: close it
                turn[-1] = im_end
                if mode == Loss.ALL or trained_answer:
                    turn_labels[-1] = im_end
            input_ids += turn
            labels += turn_labels
            truncated = True
            break
        input_ids += turn
        labels += turn_labels
    return Example(input_ids=input_ids, labels=labels, truncated=truncated)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]
