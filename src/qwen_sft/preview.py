"""`qwen-sft preview`: see exactly what each example becomes before spending a GPU-hour on it."""

from __future__ import annotations

import json
import sys

from qwen_sft.data import load_samples
from qwen_sft.template import IGNORE_INDEX, encode_sample, get_template

TRAINED_ON, TRAINED_OFF = "\033[1;32m", "\033[0m"  # green = trained; plain = context only


def preview(data: str, *, template: str = "qwen", loss: str = "all", max_length: int | None = None, n: int = 3,
            json_lines: bool = False, data_format: str = "auto", color: bool | None = None) -> int:
    """Print the rendered text, token ids and trained tokens of the first examples of a data file.

    Args:
        data: JSON / JSONL file, save_to_disk dir or hub dataset name.
        template: qwen1.5 (= qwen) | qwen2 | qwen2.5 | qwen3 | qwen1.5-sft-legacy.
        loss: which tokens are trained: all | assistant | last | assistant_no_reasoning | last_no_reasoning.
        max_length: truncate to this many tokens (as training would).
        n: how many examples to show (0 = all).
        json_lines: print one JSON object per example (input_ids, labels, text) instead.
        data_format: auto | alpaca | sharegpt | messages.
        color: highlight trained tokens in green (default: when stdout is a terminal); else [[...]] marks them.
    """
    from qwen_sft.tokenizer import build_tokenizer

    chat_template = get_template(template)
    tokenizer = build_tokenizer(chat_template.tokenizer_family)  # the family's added tokens: <tool_call>, <think>
    samples = load_samples(data, fmt=data_format)
    shown = samples if n == 0 else samples[:n]
    color = sys.stdout.isatty() if color is None else color
    truncated = 0
    for sample in shown:
        example = encode_sample(sample, tokenizer, chat_template, loss=loss, max_length=max_length)
        truncated += example.truncated
        if json_lines:
            print(json.dumps({"where": sample.where, "input_ids": example.input_ids, "labels": example.labels,
                              "text": tokenizer.decode(example.input_ids), "truncated": example.truncated},
                             ensure_ascii=False))
            continue
        print(f"=== {sample.where}: {len(example.input_ids)} tokens, {example.num_trained} trained"
              + (" (truncated)" if example.truncated else ""))
        print(highlight(example.input_ids, example.labels, tokenizer, color))
        print(f"input_ids: {example.input_ids}")
        print(f"labels:    {example.labels}\n")
    if not json_lines:
        print(f"{len(shown)} of {len(samples)} examples shown; {truncated} truncated at max_length={max_length}; "
              f"template={template} loss={loss}")
    return 0


def highlight(input_ids: list[int], labels: list[int], tokenizer, color: bool) -> str:
    """The decoded text with trained spans marked (green, or [[...]] without a terminal)."""
    on, off = (TRAINED_ON, TRAINED_OFF) if color else ("[[", "]]")
    parts, span, trained = [], [], None
    for token, label in zip(input_ids, labels):
        is_trained = label != IGNORE_INDEX
        if is_trained != trained and span:
            parts.append(_wrap(tokenizer.decode(span), trained, on, off))
            span = []
        span.append(token)
        trained = is_trained
    if span:
        parts.append(_wrap(tokenizer.decode(span), trained, on, off))
    return "".join(parts)


def _wrap(text: str, trained: bool, on: str, off: str) -> str:
    return f"{on}{text}{off}" if trained else text
