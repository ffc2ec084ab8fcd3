"""The server's side of the template layer: request messages (+ tools) → prompt ids, answer text → tool calls.

Requests carry OpenAI's wire format (tool-call `arguments` as a JSON string); the template layer wants them as
objects (`tools.normalize_tool_calls`), as vLLM parses them before templating. A template without a tool format
(qwen1.5, qwen2) refuses tools with a 400 naming the field instead of answering as if they were not there.
"""

from __future__ import annotations

from qwen_sft.data.tools import ToolFormatError, normalize_tool_calls, normalize_tools, parse_tool_calls
from qwen_sft.server.errors import ApiError
from qwen_sft.template.encode import encode_prompt
from qwen_sft.utils.errors import UserError


def template_messages(messages) -> list[dict]:
    """`schema.ChatMessage`s as the template layer's message dicts.

    Raises:
        ApiError: a malformed tool call (400 naming it), an assistant turn with neither content nor calls.
    """
    out = []
    for i, m in enumerate(messages):
        if m.role != "tool" and m.tool_call_id is not None:
            raise ApiError(400, f"messages.{i}.tool_call_id: only tool messages answer a call", f"messages.{i}")
        if m.tool_calls and m.role != "assistant":
            raise ApiError(400, f"messages.{i}.tool_calls: only assistant messages make calls", f"messages.{i}")
        if m.content is None and not m.tool_calls:
            raise ApiError(400, f"messages.{i}.content: required (null only for an assistant turn with tool_calls)",
                           f"messages.{i}.content")
        message = {"role": m.role, "content": m.text()}
        if m.tool_calls:
            try:
                message["tool_calls"] = normalize_tool_calls([c.model_dump(exclude_none=True) for c in m.tool_calls],
                                                             f"messages.{i}.tool_calls")
            except ToolFormatError as err:
                raise ApiError(400, str(err), f"messages.{i}.tool_calls", "invalid_tool_call") from None
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


def encode_chat(messages: list[dict], tokenizer, template, tools: list[dict] | None = None) -> list[int]:
    """Prompt ids ending in the assistant generation prompt, rendered as training renders them.

    Raises:
        ApiError: tools (or tool turns) for a template without a tool format; malformed tool definitions.
    """
    try:
        tools = normalize_tools(tools) if tools else None
        return encode_prompt(messages, tokenizer, template, tools)
    except ToolFormatError as err:
        raise ApiError(400, str(err), "tools", "invalid_tools") from None
    except UserError as err:  # e.g. tools for a template without a tool format
        param = "tools" if tools else "messages"
        raise ApiError(400, f"{param}: {err}", param, "unsupported_by_template") from None


def split_tool_calls(text: str) -> tuple[str | None, list[dict]]:
    """(content, OpenAI tool_calls) of an answer generated with tools offered."""
    return parse_tool_calls(text)
