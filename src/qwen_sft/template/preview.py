"""Trained spans made visible: the decoded text of an example with the tokens that carry loss marked."""

from __future__ import annotations

from qwen_sft.template.encode import IGNORE_INDEX

TRAINED_ON, TRAINED_OFF = "\033[1;32m", "\033[0m"  # green = trained; plain = context only


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
