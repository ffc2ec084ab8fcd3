"""Samples → tokenised training examples: the one load-and-encode loop that train, preview and check share.

Reports what it did to the data (truncated, untrainable) instead of silently changing it: an example with
nothing left to train after truncation is an error naming it, or, with `skip_bad`, skipped and listed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from qwen_sft.data import Sample, load_samples
from qwen_sft.errors import UserError
from qwen_sft.template import IGNORE_INDEX, Example, Template, encode_sample

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    examples: list[Example]
    samples: list[Sample]  # the sample behind each example
    truncated: list[str] = field(default_factory=list)  # where (file:line) of each cut example
    skipped: list[str] = field(default_factory=list)  # where + why of each example left out


def encode_samples(samples: list[Sample], tokenizer, template: Template, *, loss: str, max_length: int | None,
                   skip_bad: bool = False) -> Encoded:
    """Encode every sample as training does.

    Raises:
        UserError: an example with nothing to train after truncation (unless `skip_bad`).
    """
    out = Encoded([], [])
    for sample in samples:
        example = encode_sample(sample, tokenizer, template, loss=loss, max_length=max_length)
        if all(label == IGNORE_INDEX for label in example.labels[1:]):  # position 0 is never predicted
            why = (f"nothing left to train after truncation to max_length={max_length} with loss={loss} "
                   "(the prompt alone fills it); raise max_length")
            if not skip_bad:
                raise UserError(f"{sample.where}: {why}, or set skip_bad: true to leave such examples out")
            out.skipped.append(f"{sample.where}: {why}")
            continue
        if example.truncated:
            out.truncated.append(sample.where)
        out.examples.append(example)
        out.samples.append(sample)
    return out


def load_examples(source: str, tokenizer, template: Template, *, fmt: str = "auto", loss: str = "all",
                  max_length: int | None = None, skip_bad: bool = False, split: str = "train") -> Encoded:
    """`load_samples` + `encode_samples`, with what happened to the data logged.

    Raises:
        UserError: bad records (see `data.load_samples`) or untrainable examples (see `encode_samples`).
    """
    encoded = encode_samples(load_samples(source, fmt=fmt, skip_bad=skip_bad), tokenizer, template, loss=loss,
                             max_length=max_length, skip_bad=skip_bad)
    if encoded.skipped:
        log.warning("skip_bad: left out %d example(s) of %s with nothing to train:\n  %s", len(encoded.skipped),
                    source, "\n  ".join(encoded.skipped[:20]) + ("\n  ..." if len(encoded.skipped) > 20 else ""))
    if encoded.truncated:
        log.warning("%s: %d of %d examples cut to max_length=%d (first: %s)", source, len(encoded.truncated),
                    len(encoded.examples), max_length, encoded.truncated[0])
    if not encoded.examples:
        raise UserError(f"{source}: no example left to train on")
    n_tokens = sum(len(e.input_ids) for e in encoded.examples)
    log.info("%s set: %d examples, %d tokens", split, len(encoded.examples), n_tokens)
    return encoded
