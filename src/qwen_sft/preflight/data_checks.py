"""Data checks: what the records become, counted over the whole data set.

  data.records          records that cannot be used (invalid JSON, wrong shape, a template that cannot render them)
  data.tools            tool-call JSON that does not parse, or a call naming a tool the record's `tools` lacks
  data.nothing_to_train examples left with no trained token (the prompt alone fills max_length)
  data.truncated        examples cut at max_length, and how many trained answers lose their end
  data.duplicates       exact duplicates (same messages and tools)
  data.overlap          eval examples that are also training examples
  data.special_tokens   added-token text (<|im_end|>, <tool_call>, ...) typed inside content
  data.long_examples    single examples far longer than the rest (they set the padded width and the memory peak)
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics

from qwen_sft.data.tools import ToolFormatError
from qwen_sft.preflight.report import FAIL, PASS, WARN, Finding
from qwen_sft.template.encode import IGNORE_INDEX, encode_pieces, pieces
from qwen_sft.template.render import Part, Template

LONG = 8  # an example longer than LONG x the median is "very long"


def check_records(problems: list, n_records: int, skip_bad: bool) -> Finding:
    """`problems`: (where, error) of every record that cannot be used (tool-JSON ones go to `check_tools`)."""
    bad = [(where, err) for where, err in problems if not isinstance(err, ToolFormatError)]
    if not bad:
        return Finding("data.records", PASS, "every record reads and renders", 0, n_records)
    text = f"unusable records ({'skipped: skip_bad' if skip_bad else 'training stops at the first'}): {bad[0][1]}"
    return Finding("data.records", WARN if skip_bad else FAIL, text, len(bad), n_records, bad[0][0],
                   "correct them (the message names the field)" + ("" if skip_bad else ", or set skip_bad: true"))


def check_tools(samples: list, problems: list) -> Finding:
    broken = [(where, err) for where, err in problems if isinstance(err, ToolFormatError)]
    unknown = []
    for sample in samples:
        offered = {t["function"]["name"] for t in sample.tools or ()}
        names = [c["function"]["name"] for m in sample.messages for c in m.get("tool_calls") or ()]
        missing = [n for n in names if n not in offered]
        if missing:
            unknown.append((sample.where, missing[0]))
    with_calls = sum(any(m.get("tool_calls") for m in s.messages) for s in samples)
    if broken:
        return Finding("data.tools", FAIL, f"tool-call JSON that does not parse: {broken[0][1]}", len(broken),
                       with_calls + len(broken), broken[0][0], "write valid JSON (arguments: an object)")
    if unknown:
        return Finding("data.tools", FAIL, f"tool calls name tools the record's `tools` does not offer (first: "
                       f"{unknown[0][1]!r}): the model learns to call tools it was not given", len(unknown),
                       with_calls, unknown[0][0], "add the tool's definition to the record's tools, or fix the name")
    return Finding("data.tools", PASS, "every tool call parses and names an offered tool" if with_calls else
                   "no tool calls", 0, with_calls)


def check_nothing_to_train(encoded, n_samples: int, skip_bad: bool, max_length: int) -> Finding:
    if not encoded.skipped:
        return Finding("data.nothing_to_train", PASS, "every example has tokens to train", 0, n_samples)
    where, _, why = encoded.skipped[0].partition(": ")
    return Finding("data.nothing_to_train", WARN if skip_bad else FAIL,
                   f"examples with nothing to train ({'left out: skip_bad' if skip_bad else why})",
                   len(encoded.skipped), n_samples, where,
                   f"raise max_length (now {max_length}) or shorten the prompts" + ("" if skip_bad else
                                                                                   ", or set skip_bad: true"))


def full_lengths(encoded, tokenizer, template: Template, max_length: int | None) -> tuple[list[int], list[str]]:
    """Each example's length before truncation, and the wheres of cut examples whose trained answer lost its end.

    A cut inside a trained answer loses the end when its last kept label is not <|im_end|> (written so that it
    holds whether truncation trains the cut answer up to the cut, or closes it with <|im_end|>).
    """
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    lengths, lost = [], []
    for sample, example in zip(encoded.samples, encoded.examples):
        if not example.truncated:
            lengths.append(len(example.input_ids))
            continue
        ids, owners = encode_pieces(pieces(sample.messages, template, tools=sample.tools), tokenizer)
        lengths.append(len(ids))
        cut = len(example.input_ids) - 1
        if owners[cut].part != Part.CONTEXT and example.labels[-1] not in (IGNORE_INDEX, end):
            lost.append(sample.where)
    return lengths, lost


def check_truncation(encoded, lengths: list[int], lost: list[str], max_length: int) -> Finding:
    cut = encoded.truncated
    total = len(encoded.examples)
    if not cut:
        return Finding("data.truncated", PASS, f"no example is longer than max_length={max_length}", 0, total)
    fits = sorted(lengths)[min(len(lengths) - 1, int(0.99 * len(lengths)))]
    text = (f"examples cut at max_length={max_length} ({len(cut) / total:.0%}); {len(lost)} trained answers lose "
            "their end (the model never sees where they stop)")
    return Finding("data.truncated", WARN, text, len(cut), total, lost[0] if lost else cut[0],
                   f"max_length: {fits} fits 99% of the examples (the longest has {max(lengths)} tokens)")


def _digest(sample) -> str:
    text = json.dumps([sample.messages, sample.tools], sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def check_duplicates(samples: list) -> Finding:
    first: dict[str, str] = {}
    copies = []
    for sample in samples:
        key = _digest(sample)
        if key in first:
            copies.append((sample.where, first[key]))
        else:
            first[key] = sample.where
    if not copies:
        return Finding("data.duplicates", PASS, "no two examples are the same", 0, len(samples))
    return Finding("data.duplicates", WARN, f"exact duplicates of earlier examples (first repeats {copies[0][1]}): "
                   "they weigh double in the loss", len(copies), len(samples), copies[0][0], "remove the copies")


def check_overlap(samples: list, eval_samples: list | None) -> Finding:
    if eval_samples is None:
        return Finding("data.overlap", PASS, "n/a: no eval_data")
    seen = {_digest(s): s.where for s in samples}
    both = [(s.where, seen[k]) for s in eval_samples if (k := _digest(s)) in seen]
    if not both:
        return Finding("data.overlap", PASS, "no eval example is also a training example", 0, len(eval_samples))
    return Finding("data.overlap", WARN, f"eval examples that are also training examples (first = {both[0][1]}): "
                   "the eval loss flatters the model", len(both), len(eval_samples), both[0][0],
                   "remove them from eval_data (or from data)")


def check_special_tokens(samples: list, tokenizer, template: Template) -> tuple[Finding, set[str]]:
    """Added-token text inside content: qwen-sft tokenises it as plain text, but it usually means the data was
    rendered with a chat template already, or holds raw tool calls. Qwen3's inline <think>...</think> in an
    answer is its reasoning format, not flagged."""
    inline = {"<think>", "</think>"} if template.thinking else set()
    strings = sorted(set(tokenizer.get_added_vocab()), key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(s) for s in strings)) if strings else None
    found: list[tuple[str, str]] = []
    for sample in samples if pattern else ():
        for m in sample.messages:
            texts = (m.get("content") or "", m.get("reasoning_content") or "")
            hits = [h for text in texts for h in pattern.findall(text)
                    if not (m["role"] == "assistant" and h in inline)]
            if hits:
                found.append((sample.where, hits[0]))
                break
    wheres = {where for where, _ in found}
    if not found:
        return Finding("data.special_tokens", PASS, "no special-token text inside content", 0, len(samples)), wheres
    return Finding("data.special_tokens", WARN, f"content holds special-token text (first: {found[0][1]!r}), trained "
                   "as plain text: was the data rendered with a chat template already?", len(found), len(samples),
                   found[0][0], "store plain messages (role/content), not rendered text"), wheres


def check_long(lengths: list[int], wheres: list[str]) -> Finding:
    if not lengths:
        return Finding("data.long_examples", PASS, "no examples")
    median = statistics.median(lengths)
    long = [(n, w) for n, w in zip(lengths, wheres) if n > LONG * median]
    if not long:
        return Finding("data.long_examples", PASS, f"none longer than {LONG}x the median ({median:.0f} tokens; "
                       f"longest {max(lengths)})", 0, len(lengths))
    longest = max(long)
    return Finding("data.long_examples", WARN, f"examples over {LONG}x the median length ({median:.0f} tokens), up "
                   f"to {longest[0]} ({longest[1]}): each sets its batch's padded width and the memory peak",
                   len(long), len(lengths), long[0][1], "split or drop them, or use packing: true")
