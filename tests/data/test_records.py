"""Every supported shape loads; every malformed record fails with one line naming file, line and field."""

import json
from pathlib import Path

import pytest

from qwen_sft.data.records import load_samples
from qwen_sft.utils.errors import UserError

DATA = Path(__file__).resolve().parents[1] / "fixtures"
ROOT = Path(__file__).resolve().parents[2]

def _write(tmp_path, name, records):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path

def test_alpaca_with_system_input_and_history(tmp_path):
    path = _write(tmp_path, "a.jsonl", [{"instruction": "翻译", "input": "hello", "output": "你好", "system": "S",
                                         "history": [["q1", "a1"]]}])
    [sample] = load_samples(path)
    assert sample.messages == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "翻译\nhello"}, {"role": "assistant", "content": "你好"}]
    assert sample.where == f"{path}:1" and sample.record["output"] == "你好"

def test_sharegpt_and_messages_agree(tmp_path):
    share = _write(tmp_path, "s.jsonl", [{"conversations": [{"from": "system", "value": "S"},
                                                            {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}])
    openai = _write(tmp_path, "m.jsonl", [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                                                        {"role": "assistant", "content": "a"}]}])
    assert load_samples(share)[0].messages == load_samples(openai)[0].messages

def test_json_array_and_save_to_disk(tmp_path):
    import datasets

    records = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]
    array = tmp_path / "a.json"
    array.write_text(json.dumps(records), encoding="utf-8")
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "saved"))
    from_array, from_disk = load_samples(array), load_samples(tmp_path / "saved")
    assert [s.messages for s in from_array] == [s.messages for s in from_disk]
    assert from_array[2].where == f"{array}[2]"

def test_bundled_sample_data_loads():
    for path in sorted((ROOT / "data").rglob("*.jsonl")):
        assert load_samples(path), path

@pytest.mark.parametrize("name", ["bom.jsonl", "crlf.jsonl"])
def test_bom_and_crlf_load(name):
    samples = load_samples(DATA / "good" / name)
    assert [s.messages[-1]["content"] for s in samples] == ["b", "d"]

BAD = {  # file → (line or index, what the message must say)
    "truncated_line.jsonl": (":2:", "invalid JSON"),
    "top_level_string.jsonl": (":1:", "expected a JSON object, got str"),
    "missing_keys.jsonl": (":2:", "unknown record shape"),
    "wrong_type.jsonl": (":2:", "field 'instruction': expected a string, got int"),
    "empty_answer.jsonl": (":2:", "empty assistant answer"),
    "invalid_utf8.jsonl": (":2:", "invalid UTF-8"),
    "mixed_formats.jsonl": (":2:", "mixed formats"),
    "empty.jsonl": (":", "empty file"),
    "unknown_role_sharegpt.jsonl": (":1:", "field 'conversations[1].from': unknown role 'bot'"),
    "unknown_role_messages.jsonl": (":1:", "field 'messages[1].role': unknown role 'robot'"),
    "ends_on_user.jsonl": (":1:", "ends on a user turn"),
    "array_wrong_item.json": ("[1]", "expected a JSON object, got int"),
}

@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_record_is_one_line_naming_file_and_line(name):
    where, what = BAD[name]
    with pytest.raises(UserError) as err:
        load_samples(DATA / "bad" / name)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(DATA / "bad" / name) + where), message
    assert what in message, message

def test_huge_single_line_is_reported_not_swallowed(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_text('{"instruction": "' + "x" * 10_000_000 + '", "output": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"huge.jsonl:1: field 'output': expected a string, got int"):
        load_samples(path)

def test_skip_bad_skips_and_reports(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "outp\n'
                    '{"instruction": "e", "output": ""}\n{"instruction": "f", "output": "g"}\n', encoding="utf-8")
    samples = load_samples(path, skip_bad=True)
    assert [s.where for s in samples] == [f"{path}:1", f"{path}:4"]
    assert "skipped 2 bad record(s) of 4" in caplog.text and f"{path}:2" in caplog.text and f"{path}:3" in caplog.text

def test_prediction_inputs_may_lack_answers(tmp_path):
    empty_answer = _write(tmp_path, "p.jsonl", [{"instruction": "q", "input": "", "output": ""}])
    [sample] = load_samples(empty_answer, require_answer=False)
    assert sample.messages[-1] == {"role": "assistant", "content": ""}
    ends_on_user = _write(tmp_path, "m.jsonl", [{"messages": [{"role": "user", "content": "q"}]}])
    [sample] = load_samples(ends_on_user, require_answer=False)
    assert sample.messages == [{"role": "user", "content": "q"}]
    with pytest.raises(UserError, match="ends on a user turn"):
        load_samples(ends_on_user)


def test_missing_source_is_user_error():
    with pytest.raises(UserError, match="no such file"):
        load_samples("does/not/exist.jsonl")

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
OPENAI_TOOL_RECORD = {"tools": TOOLS, "messages": [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "reasoning_content": "Use the tool.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18"},
    {"role": "assistant", "content": "18°C."}]}
NORMAL_TOOL_MESSAGES = [
    {"role": "system", "content": "S"}, {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "18"}, {"role": "assistant", "content": "18°C."}]


def test_openai_tool_calls_reasoning_and_tools(tmp_path):
    [sample] = load_samples(_write(tmp_path, "m.jsonl", [OPENAI_TOOL_RECORD]))
    assert sample.tools == TOOLS
    call = sample.messages[2]
    assert call["content"] == "" and call["reasoning_content"] == "Use the tool."
    assert call["tool_calls"] == [{"id": "call_1", "type": "function",
                                   "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert sample.messages[3] == {"role": "tool", "content": "18", "tool_call_id": "call_1"}


def test_sharegpt_function_call_and_observation_turns(tmp_path):
    record = {"system": "S", "tools": json.dumps([TOOLS[0]["function"]]), "conversations": [  # LLaMA-Factory
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": "18"},
        {"from": "gpt", "value": "18°C."}]}
    [sample] = load_samples(_write(tmp_path, "s.jsonl", [record]))
    assert sample.messages == NORMAL_TOOL_MESSAGES and sample.tools == TOOLS


def test_a_conversation_may_end_on_a_tool_call_and_plain_records_keep_their_shape(tmp_path):
    record = {"messages": OPENAI_TOOL_RECORD["messages"][:3]}
    [sample] = load_samples(_write(tmp_path, "m.jsonl", [record]))
    assert sample.messages[-1]["tool_calls"] and sample.tools is None
    [plain] = load_samples(_write(tmp_path, "p.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                                        {"role": "assistant", "content": "a"}]}]))
    assert plain.messages == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


BAD_TOOLS = {  # record -> what the one-line error must say
    "bad_arguments": ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": "{city: Paris}"}}]}]},
        "field 'messages[1].tool_calls[0].function.arguments': invalid JSON"),
    "bad_tools": ({"tools": "[{]", "messages": [{"role": "user", "content": "q"},
                                                {"role": "assistant", "content": "a"}]}, "field 'tools': invalid JSON"),
    "bad_function_call": ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{"}]},
                          "field 'conversations[1].value': invalid JSON"),
    "tool_without_call": ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                                        {"role": "tool", "content": "r"}]},
                          "message 2: expected role 'user', got 'tool'"),
    "call_without_result": ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": {}}}]}, {"role": "user", "content": "again"}]},
        "message 2: expected role 'tool', got 'user'"),
    "ends_on_tool": ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"function": {"name": "f"}}]}, {"role": "tool", "content": "r"}]}, "conversation ends on a tool turn"),
    "reasoning_not_text": ({"messages": [{"role": "user", "content": "q"},
                                         {"role": "assistant", "content": "a", "reasoning_content": 1}]},
                           "field 'messages[1].reasoning_content': expected a string, got int"),
}


@pytest.mark.parametrize("name", sorted(BAD_TOOLS))
def test_bad_tool_records_are_one_line_naming_file_line_and_field(tmp_path, name):
    record, what = BAD_TOOLS[name]
    path = _write(tmp_path, f"{name}.jsonl", [{"messages": [{"role": "user", "content": "ok"},
                                                            {"role": "assistant", "content": "ok"}]}, record]
                  if "messages" in record else [record])
    with pytest.raises(UserError) as err:
        load_samples(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:"), message
    assert what in message, message
