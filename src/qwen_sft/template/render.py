"""How each Qwen family's chat template lays a conversation out: a list of pieces, text or *markers*
(the added tokens the template itself inserts), each tagged with what it is for the loss masks.

Each renderer follows its family's published Jinja (qwen_sft/template/chat_templates/) branch by branch, in
Python; the tests prove the text equal over arbitrary conversations. template.py tokenises the pieces.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field

from qwen_sft.utils.errors import UserError


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


def render_pieces(messages: list[dict], template: Template, add_generation_prompt: bool = False,
                  tools: list | None = None, enable_thinking: bool = True) -> list[Piece]:
    """The conversation as pieces, in text order (template.pieces documents the arguments).

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
