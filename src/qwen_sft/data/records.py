"""Load training / evaluation data into `Sample`s: a list of ChatML messages plus the record it came from.

Accepted: a JSON array or JSONL file, a directory written by `datasets.save_to_disk`, or a hub dataset
name (`owner/name`, resolved by `datasets.load_dataset` where a hub is reachable). Three record shapes,
detected from the first record or named with `fmt`:

  alpaca    {"instruction", "input"?, "output", "system"?, "history"?: [[question, answer], ...]}
  sharegpt  {"conversations": [{"from": "system"|"human"|"gpt"|"function_call"|"observation", "value"}, ...],
             "system"?, "tools"?}                                                     (LLaMA-Factory)
  messages  {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content", ...}, ...], "tools"?} (OpenAI)

Tool calling (see tools.py for the one shape everything becomes):
  messages  assistant `tool_calls` (OpenAI; `arguments` a JSON string or object), `tool` messages with
            `tool_call_id` / `name`, and the record's `tools` list
  sharegpt  a `function_call` turn (the JSON of {"name", "arguments"} or a list of them) becomes an
            assistant message with `tool_calls`, an `observation` turn a `tool` message; `tools` is a
            list or its JSON string
  alpaca    none: the format has no place for a tool turn
Assistant messages may carry `reasoning_content` (messages format; rendered by the qwen3 template).

Every problem is reported as one line naming the file, the line (JSONL) or index (JSON array), the field
and what is wrong. Nothing is dropped silently: with `skip_bad=True` bad records are skipped and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from qwen_sft.data.readers import BadRecord, read_records
from qwen_sft.data.tools import ToolFormatError, normalize_tool_calls, normalize_tools
from qwen_sft.utils.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("alpaca", "sharegpt", "messages")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "function_call": "function_call", "observation": "tool"}
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Sample:
    # [{"role", "content"}, ...]: user / assistant turns after an optional system message; an assistant
    # message may add "reasoning_content" and "tool_calls" (then "tool" messages with its results follow)
    messages: list[dict]
    record: dict  # the raw record, written back by `predict`
    where: str  # "file:line" or "file[index]"
    tools: list[dict] | None = None  # OpenAI tool definitions offered in this conversation


def load_samples(source: str | Path, fmt: str = "auto", require_answer: bool = True,
                 skip_bad: bool = False, problems: list | None = None) -> list[Sample]:
    """Read every record of `source` into `Sample`s.

    Args:
        source: JSON / JSONL file, `save_to_disk` directory, or hub dataset name (`owner/name[:split]`).
        fmt: "auto" | "alpaca" | "sharegpt" | "messages".
        require_answer: the conversation must end with a non-empty assistant answer (training, eval).
            For prediction inputs set False: a trailing empty answer or a conversation ending on a user
            turn is accepted.
        skip_bad: skip malformed records instead of failing; how many and where is logged.
        problems: if given, (where, error) of each skipped record is appended to it (`qwen-sft check` counts them).

    Raises:
        UserError: one line naming file, line and field, for the first bad record (unless skip_bad),
            or for an unreadable / empty source.
    """
    if fmt not in ("auto", *FORMATS):
        raise UserError(f"unknown data format {fmt!r}; choose one of: auto, {', '.join(FORMATS)}")
    samples, bad = [], []
    for where, record in read_records(source):
        try:
            if isinstance(record, BadRecord):  # unparseable line, reported like any other bad record
                raise record
            if not isinstance(record, dict):
                raise BadRecord(f"expected a JSON object, got {type(record).__name__}")
            shape = detect_format(record)
            if fmt == "auto":
                fmt = shape
            elif shape != fmt:
                raise BadRecord(f"looks like {shape} but the file's records are {fmt} (mixed formats in one file)")
            messages = to_messages(record, fmt)
            validate_messages(messages, require_answer)
            tools = to_tools(record, fmt)
        except (BadRecord, ToolFormatError) as err:
            if problems is not None:
                problems.append((where, err))
            if not skip_bad:
                raise UserError(f"{where}: {err}") from None
            bad.append(f"{where}: {err}")
            continue
        samples.append(Sample(messages=messages, record=record, where=where, tools=tools))
    if bad:
        log.warning("skip_bad: skipped %d bad record(s) of %d in %s:\n  %s", len(bad), len(bad) + len(samples),
                    source, "\n  ".join(bad[:20]) + ("\n  ..." if len(bad) > 20 else ""))
    if not samples:
        raise UserError(f"{source}: no usable records" + (f" ({len(bad)} bad)" if bad else " (empty)"))
    return samples


def detect_format(record: dict) -> str:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record or "output" in record:
        return "alpaca"
    raise BadRecord(f"unknown record shape with keys {sorted(record)}: expected alpaca "
                    "(instruction/input/output), sharegpt (conversations) or messages")


def to_messages(record: dict, fmt: str) -> list[dict]:
    """Convert one record of a known format into ChatML messages.

    Raises:
        BadRecord / ToolFormatError: naming the field.
    """
    if fmt == "alpaca":
        return _alpaca(record)
    if fmt == "sharegpt":
        turns = _field(record, "conversations", list)
        system = _text(record, "system", "system", required=False)
        return [{"role": "system", "content": system}] * bool(system) + [_sharegpt(t, i) for i, t in enumerate(turns)]
    turns = _field(record, "messages", list)
    return [_openai(t, i) for i, t in enumerate(turns)]


def to_tools(record: dict, fmt: str) -> list[dict] | None:
    """The record's tool definitions (OpenAI tool dicts), or None.

    Raises:
        ToolFormatError: naming the field.
    """
    return None if fmt == "alpaca" else normalize_tools(record.get("tools"))


def _sharegpt(turn, i: int) -> dict:
    role = _role(turn, i, "from", SHAREGPT_ROLES, "conversations")
    value = _text(turn, "value", f"conversations[{i}].value")
    if role == "function_call":  # LLaMA-Factory: the assistant's call(s) as JSON, without text
        calls = normalize_tool_calls(value, f"conversations[{i}].value")
        if not calls:
            raise BadRecord(f"field 'conversations[{i}].value': no tool call in it")
        return {"role": "assistant", "content": "", "tool_calls": calls}
    return {"role": role, "content": value}


def _openai(turn, i: int) -> dict:
    role = _role(turn, i, "role", {r: r for r in ROLES}, "messages")
    calls = normalize_tool_calls(turn.get("tool_calls"), f"messages[{i}].tool_calls") if role == "assistant" else None
    # OpenAI sends content null beside tool_calls
    message = {"role": role, "content": _text(turn, "content", f"messages[{i}].content", required=not calls)}
    if role == "assistant":
        reasoning = _text(turn, "reasoning_content", f"messages[{i}].reasoning_content", required=False)
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = calls
    elif role == "tool":
        for key in ("tool_call_id", "name"):
            if turn.get(key) is not None:
                message[key] = _text(turn, key, f"messages[{i}].{key}")
    return message



def _alpaca(record: dict) -> list[dict]:
    instruction = _text(record, "instruction", "instruction")
    extra = _text(record, "input", "input", required=False)
    messages = []
    if record.get("system"):
        messages.append({"role": "system", "content": _text(record, "system", "system")})
    for i, pair in enumerate(record.get("history") or []):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise BadRecord(f"field 'history[{i}]': expected [question, answer] strings")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    messages.append({"role": "user", "content": f"{instruction}\n{extra}" if extra else instruction})
    messages.append({"role": "assistant", "content": _text(record, "output", "output", required=False)})
    return messages


def validate_messages(messages: list[dict], require_answer: bool = True) -> None:
    """Check the turn order: after an optional system message, user and assistant alternate, except that an
    assistant message with tool_calls is followed by one or more tool messages (its results) and then the
    assistant again.

    Raises:
        BadRecord: naming the message index and what is wrong.
    """
    first = 1 if messages and messages[0]["role"] == "system" else 0
    if len(messages) == first:
        raise BadRecord("conversation has no user message")
    previous = None
    for index in range(first, len(messages)):
        m = messages[index]
        expected = _next_roles(previous)
        if m["role"] not in expected:
            raise BadRecord(f"message {index}: expected role {' or '.join(map(repr, expected))}, got {m['role']!r} "
                            "(roles must alternate user/assistant after an optional system message; an assistant "
                            "message with tool_calls is followed by tool messages)")
        previous = m
    if not require_answer:
        return
    if messages[-1]["role"] != "assistant":
        raise BadRecord(f"conversation ends on a {messages[-1]['role']} turn: there is no answer to train on")
    for index in range(first, len(messages)):
        m = messages[index]
        if m["role"] == "assistant" and not m["content"].strip() and not m.get("tool_calls"):
            raise BadRecord(f"message {index}: empty assistant answer")


def _next_roles(previous: dict | None) -> tuple[str, ...]:
    if previous is None:
        return ("user",)
    if previous["role"] == "user":
        return ("assistant",)
    if previous["role"] == "assistant":
        return ("tool",) if previous.get("tool_calls") else ("user",)
    return ("tool", "assistant")  # after a tool result: more results, or the assistant using them


def _field(record: dict, key: str, kind: type):
    if key not in record:
        raise BadRecord(f"missing field {key!r}")
    if not isinstance(record[key], kind):
        raise BadRecord(f"field {key!r}: expected {kind.__name__}, got {type(record[key]).__name__}")
    return record[key]


def _text(record, key: str, name: str, required: bool = True) -> str:
    if not isinstance(record, dict):
        raise BadRecord(f"field {name.rsplit('.', 1)[0]!r}: expected an object, got {type(record).__name__}")
    value = record.get(key)
    if value is None:
        if required:
            raise BadRecord(f"missing field {name!r}")
        return ""
    if not isinstance(value, str):
        raise BadRecord(f"field {name!r}: expected a string, got {type(value).__name__}")
    return value


def _role(turn, i: int, key: str, mapping: dict, list_name: str) -> str:
    role = _text(turn, key, f"{list_name}[{i}].{key}")
    if role not in mapping:
        raise BadRecord(f"field '{list_name}[{i}].{key}': unknown role {role!r}; expected one of {sorted(mapping)}")
    return mapping[role]
