"""The server's hook into the template layer: messages (+ tools) → prompt ids, and answer text → tool calls.

Tools are passed on only when `template.encode_prompt` takes a `tools` argument; until the template layer
renders them, a request with `tools` gets a 400 naming the field rather than an answer that ignored them.
When it does, `parse_tool_calls(text)` (template layer) is where a route turns the answer into `tool_calls`.
"""

from __future__ import annotations

import inspect

from qwen_sft import template as template_layer
from qwen_sft.server.errors import ApiError


def supports_tools() -> bool:
    return "tools" in inspect.signature(template_layer.encode_prompt).parameters


def encode_chat(messages: list[dict], tokenizer, template, tools: list[dict] | None = None) -> list[int]:
    """Prompt ids ending in the assistant generation prompt, rendered as training renders them.

    Raises:
        ApiError: tools were given and the template layer cannot render them.
    """
    if not tools:
        return template_layer.encode_prompt(messages, tokenizer, template)
    if not supports_tools():
        raise ApiError(400, "tools: this server's chat template cannot render tools yet", "tools",
                       "tools_unsupported")
    return template_layer.encode_prompt(messages, tokenizer, template, tools=tools)
