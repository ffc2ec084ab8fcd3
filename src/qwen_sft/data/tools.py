"""Tool calling in the OpenAI shape: checking tool definitions and calls in data, and reading calls back
out of generated text.

One shape everywhere after loading (data.py normalises every format to it):

  tools       [{"type": "function", "function": {"name", "description"?, "parameters"?}}, ...]
  tool call   {"id"?, "type": "function", "function": {"name": str, "arguments": dict}}

`arguments` is a JSON *object* here, not the JSON *string* of the OpenAI wire format: Qwen's templates
render `arguments | tojson`, and a string would be rendered as a quoted string (Qwen2.5) or verbatim
(Qwen3). vLLM parses the string into a dict before templating too, so a model served there sees what it
was trained on.

Qwen2.5 and Qwen3 answer a call as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`
(several in a row for parallel calls); `parse_tool_calls` turns that back into OpenAI `tool_calls`.
Qwen3 reasons inside `<think>...</think>` first; `parse_reasoning` splits that off.
"""

from __future__ import annotations

import json
import re
import uuid


class ToolFormatError(ValueError):
    """A malformed tool definition or call; the message names the field (data.py adds file and line)."""


def normalize_tools(value, field: str = "tools") -> list[dict] | None:
    """Tool definitions as OpenAI tool dicts; None for none.

    Accepts a list or its JSON string (LLaMA-Factory's sharegpt `tools` field); each item is either an
    OpenAI tool (`{"type": "function", "function": {...}}`) or a bare function (`{"name", ...}`), which
    is wrapped. Key order is kept: the templates print each tool as JSON.

    Raises:
        ToolFormatError: naming the field and what is wrong.
    """
    value = _json_value(value, field)
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise ToolFormatError(f"field {field!r}: expected a list of tools, got {type(value).__name__}")
    tools = []
    for i, tool in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(tool, dict):
            raise ToolFormatError(f"field {where!r}: expected a tool object, got {type(tool).__name__}")
        if "function" not in tool:  # a bare function definition
            tool = {"type": "function", "function": tool}
        elif tool.get("type", "function") != "function":
            raise ToolFormatError(f"field '{where}.type': only 'function' tools exist, got {tool['type']!r}")
        function = tool["function"]
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise ToolFormatError(f"field '{where}.function.name': expected a non-empty string")
        tools.append(tool)
    return tools


def normalize_tool_calls(value, field: str = "tool_calls") -> list[dict] | None:
    """Tool calls as `{"id"?, "type": "function", "function": {"name", "arguments": dict}}`; None for none.

    Accepts a list, a single call, or the JSON string of either (LLaMA-Factory's `function_call` turn);
    each call is OpenAI-shaped (`{"function": {...}}`) or bare (`{"name", "arguments"}`). `arguments`
    may be a dict or the JSON string of one (the OpenAI wire format).

    Raises:
        ToolFormatError: naming the field and what is wrong (invalid JSON, a missing name, arguments that
            are not a JSON object).
    """
    value = _json_value(value, field)
    if value is None or value == []:
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ToolFormatError(f"field {field!r}: expected a list of tool calls, got {type(value).__name__}")
    calls = []
    for i, call in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(call, dict):
            raise ToolFormatError(f"field {where!r}: expected a tool call object, got {type(call).__name__}")
        function = call.get("function", call)
        if function is not call:
            where += ".function"
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise ToolFormatError(f"field '{where}.name': expected a non-empty string")
        arguments = _json_value(function.get("arguments", {}), f"{where}.arguments")
        if not isinstance(arguments, dict):
            raise ToolFormatError(f"field '{where}.arguments': expected a JSON object, got {type(arguments).__name__}")
        normal = {"id": call["id"]} if isinstance(call.get("id"), str) else {}
        calls.append({**normal, "type": "function", "function": {"name": function["name"], "arguments": arguments}})
    return calls


def _json_value(value, field: str):
    """`value`, or what its JSON text decodes to (tool fields arrive as either)."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise ToolFormatError(f"field {field!r}: invalid JSON ({err.msg} at column {err.colno})") from None


_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def parse_tool_calls(text: str) -> tuple[str | None, list[dict]]:
    """Split generated text into (content, OpenAI `tool_calls`).

    Each `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` block becomes
    `{"id": "call_…", "type": "function", "function": {"name", "arguments": JSON string}}`, in order. A
    block that is not such JSON (or is never closed, as when max_tokens cuts it) stays in the content as
    text. Content is what is left, stripped (the whole text, unchanged, when there is no call); None when
    only tool calls were generated (OpenAI's shape).
    """
    calls, kept, start = [], [], 0
    for match in _CALL.finditer(text):
        try:
            call = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        arguments = call.get("arguments", {}) if isinstance(call, dict) else None
        if isinstance(arguments, str):  # some models emit the wire format's string
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = None
        if not (isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(arguments, dict)):
            continue
        kept.append(text[start:match.start()])
        start = match.end()
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": call["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}})
    if not calls:
        return text, []
    content = ("".join(kept) + text[start:]).strip()
    return content or None, calls


def parse_reasoning(text: str) -> tuple[str | None, str]:
    """Split Qwen3 output into (reasoning, answer): the text inside `<think>…</think>` and what follows.

    Works whether or not the prompt already held the opening `<think>` (thinking models whose template
    ends the prompt with it). Without a closing `</think>` there is no finished reasoning: (None, text).
    """
    if "</think>" not in text:
        return None, text
    reasoning, _, answer = text.partition("</think>")
    reasoning = reasoning.split("<think>", 1)[-1].strip("\n")
    return reasoning, answer.lstrip("\n")
