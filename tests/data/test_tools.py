"""Tool definitions and calls normalise to one shape; generated `<tool_call>` text parses back to OpenAI calls."""

import json

import pytest

from qwen_sft.data.tools import (
    ToolFormatError,
    normalize_tool_calls,
    normalize_tools,
    parse_reasoning,
    parse_tool_calls,
)

FUNCTION = {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {}}}


def test_tools_accept_openai_bare_and_json_string_forms():
    openai = [{"type": "function", "function": FUNCTION}]
    assert normalize_tools(openai) == openai
    assert normalize_tools([FUNCTION]) == openai  # LLaMA-Factory lists bare functions
    assert normalize_tools(json.dumps([FUNCTION])) == openai  # ... often as a JSON string
    assert normalize_tools(None) is None and normalize_tools("") is None and normalize_tools([]) is None


@pytest.mark.parametrize("value,message", [
    ("[{", "field 'tools': invalid JSON"),
    ({"name": "x"}, "field 'tools': expected a list of tools, got dict"),
    ([1], "field 'tools[0]': expected a tool object, got int"),
    ([{"description": "no name"}], "field 'tools[0].function.name': expected a non-empty string"),
    ([{"type": "retrieval", "function": FUNCTION}], "field 'tools[0].type': only 'function' tools exist"),
])
def test_bad_tools_name_the_field(value, message):
    with pytest.raises(ToolFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        normalize_tools(value)


def test_tool_calls_become_openai_shape_with_object_arguments():
    wire = [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a": 1, "b": "é"}'}}]
    assert normalize_tool_calls(wire) == [
        {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": {"a": 1, "b": "é"}}}]
    bare = '[{"name": "f", "arguments": {"a": 1}}, {"name": "g"}]'  # LLaMA-Factory's function_call value
    assert normalize_tool_calls(bare) == [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
                                          {"type": "function", "function": {"name": "g", "arguments": {}}}]
    assert normalize_tool_calls('{"name": "f", "arguments": {}}')[0]["function"]["name"] == "f"


@pytest.mark.parametrize("value,message", [
    ('{"name": "f", "arguments": ', "field 'tool_calls': invalid JSON"),
    ([{"function": {"name": "f", "arguments": "{'a': 1}"}}], "field 'tool_calls[0].function.arguments': invalid JSON"),
    ([{"function": {"name": "f", "arguments": "[1, 2]"}}], "field 'tool_calls[0].function.arguments': expected a JSON"),
    ([{"function": {"arguments": {}}}], "field 'tool_calls[0].function.name': expected a non-empty string"),
    ([{"name": ""}], "field 'tool_calls[0].name': expected a non-empty string"),
])
def test_bad_tool_calls_name_the_field(value, message):
    with pytest.raises(ToolFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        normalize_tool_calls(value)


def test_parse_tool_calls_returns_openai_calls_with_ids():
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "巴黎"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "local_time", "arguments": {"zone": "Europe/Paris"}}\n</tool_call>')
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "local_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "巴黎"}  # the wire format: a JSON string
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert calls[0]["id"] != calls[1]["id"]


def test_parse_tool_calls_leaves_anything_else_as_text():
    assert parse_tool_calls("just an answer\n") == ("just an answer\n", [])
    only = parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>')
    assert only[0] is None and len(only[1]) == 1  # OpenAI: content null when the model only calls tools
    broken = 'a <tool_call>{"name": "f", "argu</tool_call> b'
    assert parse_tool_calls(broken) == (broken, [])
    unclosed = '<tool_call>\n{"name": "f", "arguments": {}}'  # max_tokens cut it
    assert parse_tool_calls(unclosed) == (unclosed, [])
    mixed = parse_tool_calls('<tool_call>nope</tool_call><tool_call>{"name": "g", "arguments": "{\\"x\\": 2}"}'
                             '</tool_call>')
    assert mixed[0] == "<tool_call>nope</tool_call>" and json.loads(mixed[1][0]["function"]["arguments"]) == {"x": 2}


def test_parse_reasoning():
    assert parse_reasoning("<think>\nstep 1\n</think>\n\nanswer") == ("step 1", "answer")
    assert parse_reasoning("step 1\n</think>\n\nanswer") == ("step 1", "answer")  # the prompt held <think>
    assert parse_reasoning("<think>\nunfinished") == (None, "<think>\nunfinished")
    assert parse_reasoning("<think>\n\n</think>\n\nanswer") == ("", "answer")
