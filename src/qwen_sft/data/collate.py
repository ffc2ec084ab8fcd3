"""Batching tokenised examples: right padding, or padding-free packing.

An example is `{"input_ids": list[int], "labels": list[int]}` (labels -100 where not trained).

Padding: `PadCollator(pad_id)` turns a list of examples into (B, T) input_ids / attention_mask / labels.

Packing (no pad tokens at all):
- `pack_examples(examples, max_length)` groups examples into bins of at most `max_length` tokens.
  The trainer uses these bins as its dataset items, with batch size 1 per device (a batch of k bins
  also works: it becomes one row of up to k·max_length tokens).
- `PackedCollator()` gets the DataLoader's batch (a list of bins, or a flat list of examples) and
  concatenates every example into ONE row (batch dim 1) with `position_ids` restarting at 0 per
  example and no attention_mask. transformers >= 5 turns that into per-example attention by itself:
  `masking_utils.find_packed_sequence_indices` reads the position_ids restarts and
  `create_causal_mask` builds a block-diagonal causal mask for sdpa/eager (CPU and GPU alike),
  while flash-attention takes its varlen path with cu_seqlens derived from position_ids
  (that path needs batch size 1, which is why everything goes into one row by default).
  `PackedCollator(per_bin=True, pad_id=...)` makes one row per bin instead (right-padded to the
  longest bin, the padding a sequence of its own): sdpa/eager attention costs (row length)^2
  whatever the mask, so k rows of one bin are k times cheaper than one row of k bins (train uses
  it, through `make_collator`, unless the model runs flash-attention or varlen).
  `PackedCollator(varlen=True)`: one row plus each example's boundaries (`varlen_boundaries`) for
  model/attention.py's `qwen_sft_varlen` (the default for packed runs on CUDA): no mask is built at all
  and position_ids are not scanned, each example attends to itself through the kernel.
  CAVEAT (transformers 5.23): the sdpa/eager detection only runs when no KV cache exists, and the
  model creates an empty DynamicCache whenever use_cache is on (the config default, in train mode
  too unless gradient checkpointing is on) -- examples would then silently attend to each other.
  So the forward that consumes a packed batch must run with use_cache=False (model/training.py sets
  `model.config.use_cache = False` and passes it explicitly).
  The first label of every example is set to -100 so no example learns to predict its own first
  token from the end of the previous one.
"""

import bisect
import itertools
import math

import torch

from qwen_sft.template.encode import IGNORE_INDEX, count_trained

VARLEN = "qwen_sft_varlen"  # the attention implementation model/attention.py registers; it reads our boundaries


def training_items(examples: list, packing: bool, max_length: int) -> list:
    """What the trainer's dataset holds for encoded examples (`template.encode.Example`s): one `{"input_ids",
    "labels"}` row each, or with packing the bins `pack_examples` groups them into. The one rule behind `train`,
    the forecast's plan and micro-run, and `check`."""
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    return pack_examples(rows, max_length) if packing else rows


def make_collator(packing: bool, pad_id: int, attention: str | None = None):
    """The collator for a model running attention implementation `attention`: padded batches, or with packing one
    row per bin, except under flash-attention (one row) and varlen (one row and the examples' boundaries)."""
    if not packing:
        return PadCollator(pad_id)
    return PackedCollator(per_bin="flash" not in str(attention), pad_id=pad_id, varlen=attention == VARLEN)


def _trained(examples: list[dict]) -> int:
    """Trained tokens of a batch, counted on the host from the lists: the trainer then never has to ask the GPU
    (a host-device sync per micro-step)."""
    return sum(count_trained(e["labels"]) for e in examples)


def _check(example: dict, where: int) -> int:
    n = len(example["input_ids"])
    if len(example["labels"]) != n:
        raise ValueError(f"example {where}: {n} input_ids but {len(example['labels'])} labels")
    return n


class PadCollator:
    """Right-pads a list of examples into (B, T) tensors.

    Args:
        pad_id: token id for padding input_ids (its labels are -100 and attention_mask 0, so the
            value itself never matters; Qwen uses <|endoftext|>).
        pad_to_multiple_of: round T up to a multiple of this (e.g. 8 for tensor cores).
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None):
        self.pad_id = pad_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Raises: ValueError if an example's input_ids and labels differ in length."""
        lengths = [_check(e, i) for i, e in enumerate(examples)]
        T = max(lengths, default=0)
        if self.pad_to_multiple_of:
            T = math.ceil(T / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(examples), T), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), T), dtype=torch.long)
        for row, (e, n) in enumerate(zip(examples, lengths)):
            input_ids[row, :n] = torch.tensor(e["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.tensor(e["labels"], dtype=torch.long)
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "num_trained": _trained(examples)}


def pack_examples(examples: list[dict], max_length: int) -> list[list[dict]]:
    """Groups examples into bins of at most `max_length` tokens (best-fit decreasing).

    Deterministic: longest examples first (ties by input order), each goes into the fullest bin it
    still fits in. Bins come out in creation order; the trainer shuffles them.

    Args:
        examples: tokenised examples, each at most `max_length` tokens long.
        max_length: token budget per bin (the packed row length).

    Returns:
        Bins (lists of examples); every example appears in exactly one bin.

    Raises:
        ValueError: if an example is longer than `max_length` (examples are truncated when they are
            tokenised, so this means the two lengths disagree) or input_ids/labels lengths differ.
    """
    lengths = [_check(e, i) for i, e in enumerate(examples)]
    for i, n in enumerate(lengths):
        if n > max_length:
            raise ValueError(f"example {i} has {n} tokens, more than max_length={max_length}; "
                             "truncate examples to max_length before packing")
    bins: list[list[dict]] = []
    free: list[tuple[int, int]] = []  # sorted (free tokens, bin index) of bins with room left
    for i in sorted(range(len(examples)), key=lambda i: (-lengths[i], i)):
        k = bisect.bisect_left(free, (lengths[i], -1))  # the fullest bin that still has room
        if k == len(free):
            bins.append([])
            room, b = max_length, len(bins) - 1
        else:
            room, b = free.pop(k)
        bins[b].append(examples[i])
        if room - lengths[i] > 0:
            bisect.insort(free, (room - lengths[i], b))
    return bins


class PackedCollator:
    """Packs examples into rows with per-example position_ids: no padding between examples.

    Accepts what a DataLoader hands over when the dataset items are bins from `pack_examples`
    (a list of bins), or a flat list of examples.
    Returns input_ids, position_ids and labels, each (rows, T), with every example's first label -100.
    Run the model with use_cache=False on it (see the module docstring), or the packing is ignored.

    Args:
        per_bin: one row per bin (right-padded to the longest bin with `pad_id`; the padding is a
            sequence of its own, with labels -100) instead of one row holding everything. The
            sdpa/eager attention of a packed row costs (row length)^2 whatever the mask, so k bins in
            one row cost k times the attention of k rows; flash-attention's varlen path needs one row.
        pad_id: token id for the padding of per_bin rows (never attended to by a real token).
        varlen: one row plus the examples' boundaries (`varlen_boundaries`) for the `qwen_sft_varlen`
            attention (attention.py), which needs no mask; per_bin is ignored.
    """

    def __init__(self, per_bin: bool = False, pad_id: int = 0, varlen: bool = False):
        self.per_bin = per_bin and not varlen
        self.pad_id = pad_id
        self.varlen = varlen

    def __call__(self, batch: list[dict] | list[list[dict]]) -> dict:
        """Raises: ValueError if an example's input_ids and labels differ in length, or batch is empty."""
        examples = [e for item in batch for e in (item if isinstance(item, list) else [item])]
        if self.per_bin and all(isinstance(item, list) for item in batch):
            rows = [self._row(item) for item in batch]
        else:
            rows = [self._row(examples)]
        rows = [r for r in rows if r[0]]
        if not rows:
            raise ValueError("PackedCollator got no tokens to pack")
        width = max(len(ids) for ids, _, _ in rows)
        out = {"input_ids": [], "position_ids": [], "labels": []}
        for ids, labels, positions in rows:
            pad = width - len(ids)
            out["input_ids"].append(ids + [self.pad_id] * pad)
            out["labels"].append(labels + [IGNORE_INDEX] * pad)
            out["position_ids"].append(positions + list(range(pad)))  # the padding: one more sequence
        batch = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        if self.varlen:  # one row (per_bin is off): its examples, in order
            lengths = [n for e in examples if (n := len(e["input_ids"]))]
            batch.update(varlen_boundaries(lengths), seq_lengths=lengths)  # the lengths as ints: for the forecast
        return {**batch, "num_trained": _trained(examples)}

    @staticmethod
    def _row(examples: list[dict]) -> tuple[list[int], list[int], list[int]]:
        input_ids, labels, position_ids = [], [], []
        for i, e in enumerate(examples):
            n = _check(e, i)
            if n == 0:
                continue
            input_ids += e["input_ids"]
            labels += [IGNORE_INDEX] + list(e["labels"][1:])  # never predict across the boundary
            position_ids += range(n)
        return input_ids, labels, position_ids


def varlen_boundaries(lengths: list[int]) -> dict:
    """The keyword arguments that carry packed examples' boundaries to attention (the names transformers'
    flash-attention path uses): cumulative lengths as an int32 CPU tensor, the longest length as an int."""
    cu_seq_lens = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    longest = max(lengths, default=0)
    return {"cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens, "max_length_q": longest,
            "max_length_k": longest}
