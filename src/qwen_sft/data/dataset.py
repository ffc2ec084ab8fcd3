"""Samples → tokenised training examples: the one load-and-encode loop that train, preview and check share.

Reports what it did to the data (truncated, untrainable) instead of silently changing it: an example with
nothing left to train after truncation is an error naming it, or, with `skip_bad`, skipped and listed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from qwen_sft.data import cache as data_cache
from qwen_sft.data.mix import SourceReport, load_mixed
from qwen_sft.data.records import Sample
from qwen_sft.template.encode import Example, encode_sample
from qwen_sft.template.render import Template
from qwen_sft.utils.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    examples: list[Example]
    samples: list[Sample]  # the sample behind each example
    truncated: list[str] = field(default_factory=list)  # where (file:line) of each cut example
    skipped: list[str] = field(default_factory=list)  # where + why of each example left out
    sources: list[SourceReport] = field(default_factory=list)  # what each source gave (sources.py)


def encode_samples(samples: list[Sample], tokenizer, template: Template, *, loss: str, max_length: int | None,
                   skip_bad: bool = False) -> Encoded:
    """Encode every sample as training does.

    Raises:
        UserError: an example with nothing to train after truncation (unless `skip_bad`).
    """
    out = Encoded([], [])
    for sample in samples:
        example = encode_sample(sample, tokenizer, template, loss=loss, max_length=max_length)
        if not example.num_trained:
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


def load_examples(source: str | list, tokenizer, template: Template, *, fmt: str = "auto", loss: str = "all",
                  max_length: int | None = None, skip_bad: bool = False, split: str = "train",
                  seed: int = 0, cache: bool = False) -> Encoded:
    """Load and mix the source(s) (`sources.load_mixed`), then `encode_samples`, with what happened to the data
    logged; `Encoded.sources` says how many examples each source gave.

    Args:
        cache: reuse the encoding a previous run stored in the tokenised-data cache (`data_cache`), else store it.

    Raises:
        UserError: bad records (see `data.load_samples`) or untrainable examples (see `encode_samples`).
    """
    samples, origin, reports = load_mixed(source, fmt=fmt, skip_bad=skip_bad, seed=seed)
    key = data_cache.cache_key(source, tokenizer, template, fmt=fmt, loss=loss, max_length=max_length, seed=seed) \
        if cache else None
    hit = data_cache.load(key, samples) if key else None
    if hit is not None and (skip_bad or not hit["skipped"]):  # else encode_samples raises for the first skipped
        encoded = Encoded(**hit)
    else:
        encoded = encode_samples(samples, tokenizer, template, loss=loss, max_length=max_length, skip_bad=skip_bad)
        if key:
            data_cache.store(key, samples, encoded)
    source_of = {id(sample): i for sample, i in zip(samples, origin)}  # a repeated sample is the same object
    for i, report in enumerate(reports):
        report.examples = sum(source_of[id(sample)] == i for sample in encoded.samples)
    encoded.sources = reports
    source = ", ".join(r.source for r in reports)
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
