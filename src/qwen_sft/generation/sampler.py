"""One sampler for predict, chat, eval and serve: `SamplingParams` and a batched `Sampler`.

Order, as transformers' `generate` applies it: vocabulary limit, repetition penalty (over prompt + answer,
as HF/vLLM), presence / frequency penalties (over the answer, OpenAI's definition), then for sampled rows
temperature, top-k, top-p, min-p. Greedy rows (temperature below MIN_TEMPERATURE) take the argmax.

Per-row randomness is a `random.Random` per sequence, seeded from the request's seed (and the choice index,
so `n` choices differ): a row's draw does not depend on what else is in the batch, and one uniform number
per row and step is all it needs (inverse-CDF draw, batched), cheaper than a `torch.multinomial` per row.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from qwen_sft.utils.errors import UserError

MIN_TEMPERATURE = 1e-4  # below this, logits / temperature overflows to inf: decode greedily instead
NUCLEUS_CANDIDATES = 1024  # top-p looks at this many best tokens first; a full sort only when they hold < top_p
MAX_TOP_LOGPROBS = 20  # OpenAI's limit


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request."""

    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 = greedy (deterministic)
    top_p: float = 1.0  # 1 = off
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off; > 1 discourages any token of prompt or answer (HF semantics)
    min_p: float = 0.0  # 0 = off; drop tokens less likely than min_p x the most likely one
    presence_penalty: float = 0.0  # OpenAI: subtracted once from every token already in the answer
    frequency_penalty: float = 0.0  # OpenAI: subtracted per occurrence in the answer
    seed: int | None = None  # same seed + same request = same answer, whatever else is in the batch
    stop: tuple[str, ...] = ()  # strings that end the answer; never part of it
    n: int = 1  # answers per prompt
    logprobs: bool = False  # return the chosen token's log-probability (of the raw model distribution)
    top_logprobs: int = 0  # and this many most likely alternatives

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE

    @property
    def penalized(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    def replace(self, **changes) -> SamplingParams:
        return dataclasses.replace(self, **changes)

    def check(self) -> SamplingParams:
        """Returns self. Raises UserError naming every out-of-range setting."""
        problems = [f"{name}: {why}" for name, bad, why in (
            ("max_new_tokens", self.max_new_tokens < 1, "must be >= 1"),
            ("temperature", not self.temperature >= 0, "must be >= 0 (0 = greedy)"),
            ("top_p", not 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("top_k", self.top_k < 0, "must be >= 0 (0 = off)"),
            ("repetition_penalty", not self.repetition_penalty > 0, "must be > 0 (1 = off)"),
            ("min_p", not 0 <= self.min_p <= 1, "must be in [0, 1] (0 = off)"),
            ("presence_penalty", not -2 <= self.presence_penalty <= 2, "must be in [-2, 2]"),
            ("frequency_penalty", not -2 <= self.frequency_penalty <= 2, "must be in [-2, 2]"),
            ("stop", not all(isinstance(s, str) and s for s in self.stop), "must be non-empty strings"),
            ("n", self.n < 1, "must be >= 1"),
            ("top_logprobs", not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS, f"must be in [0, {MAX_TOP_LOGPROBS}]"),
        ) if bad]
        if problems:
            raise UserError("invalid generation settings: " + "; ".join(problems))
        return self


CHECKPOINT_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens")


def from_generation_config(gen_config, base: SamplingParams | None = None) -> SamplingParams:
    """`base` with the sampling defaults a checkpoint's generation_config.json sets (as vLLM applies them).

    Only the keys vLLM reads are taken (temperature, top_p, top_k, min_p, repetition_penalty, max_new_tokens);
    `do_sample` is ignored, as vLLM ignores it. transformers 5 leaves unset keys at None, so a key counts
    only when the file sets it.

    Args:
        gen_config: a `transformers.GenerationConfig` (e.g. `model.generation_config`) or None.
        base: the values where the checkpoint says nothing (default: `SamplingParams()`).
    """
    base = base or SamplingParams()
    if gen_config is None:
        return base
    found = {key: getattr(gen_config, key, None) for key in CHECKPOINT_KEYS}
    return base.replace(**{key: type(getattr(base, key))(value) for key, value in found.items() if value is not None})


def row_seed(seed: int | None, *keys: int) -> int:
    """A 64-bit seed for one row from the request's seed and the row's keys (choice index, ...); a fresh
    random one when the request has no seed. splitmix64 steps, so (seed, 0) and (seed + 1, 0) are unrelated
    but (seed,) alone is the seed itself."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")
    value = seed & 0xFFFF_FFFF_FFFF_FFFF
    for key in keys:
        if key:
            value = (value + 0x9E3779B97F4A7C15 * key) & 0xFFFF_FFFF_FFFF_FFFF
            value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFF_FFFF_FFFF_FFFF
            value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFF_FFFF_FFFF_FFFF
            value ^= value >> 31
    return value


class Row(Protocol):
    """What the sampler reads from a sequence."""

    params: SamplingParams
    rng: random.Random | None  # None for greedy rows
    token_ids: list[int]  # prompt + answer so far
    prompt_len: int


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


class Sampler:
    """Batched next-token choice for rows with different settings."""

    def __init__(self, vocab_limit: int):
        self.vocab_limit = vocab_limit  # rows past the tokenizer (Qwen pads the output layer) never come out

    def sample(self, logits: torch.Tensor, rows: Sequence[Row]) -> tuple[list[int], list[TokenLogprob | None]]:
        """Next token per row, and its logprob where the row asked for one.

        Args:
            logits: [rows, vocab] in any float dtype; columns past `vocab_limit` are ignored.
            rows: one `Row` per logits row.
        """
        logits = logits[:, : self.vocab_limit]
        want_logprobs = [i for i, r in enumerate(rows) if r.params.logprobs]
        raw = logits[want_logprobs].float().log_softmax(-1) if want_logprobs else None  # before any penalty
        penalized = [i for i, r in enumerate(rows) if r.params.penalized]
        if penalized:
            logits = logits.float()  # a copy: the penalties write into it
            logits[penalized] = apply_penalties(logits[penalized], [rows[i] for i in penalized])
        tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        greedy = [i for i, r in enumerate(rows) if r.params.greedy]
        if greedy:  # max(dim).indices = the first maximum, like argmax, and much faster than argmax on bf16
            pick = logits if len(greedy) == len(rows) else logits[greedy]
            tokens[greedy] = pick.max(dim=-1).indices
        sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
        if sampled:
            tokens[sampled] = self._draw(logits[sampled].float(), [rows[i] for i in sampled])
        chosen = tokens.tolist()
        out: list[TokenLogprob | None] = [None] * len(rows)
        if raw is not None:
            picked = raw.gather(1, tokens[want_logprobs, None]).squeeze(1).tolist()
            k = max(rows[i].params.top_logprobs for i in want_logprobs)
            top_v, top_i = raw.topk(k, dim=-1) if k else (raw[:, :0], raw[:, :0].long())
            for j, i in enumerate(want_logprobs):
                n = rows[i].params.top_logprobs
                out[i] = TokenLogprob(chosen[i], picked[j], tuple(zip(top_i[j, :n].tolist(), top_v[j, :n].tolist())))
        return chosen, out

    def _draw(self, logits: torch.Tensor, rows: Sequence[Row]) -> torch.Tensor:
        """Sampled rows: temperature, top-k, top-p, min-p, then one inverse-CDF draw per row."""
        temperature = logits.new_tensor([r.params.temperature for r in rows])[:, None]
        logits = logits / temperature
        uniform = logits.new_tensor([r.rng.random() for r in rows])[:, None]
        filtered = [i for i, r in enumerate(rows) if r.params.top_k or r.params.top_p < 1]
        tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        plain = sorted(set(range(len(rows))) - set(filtered))
        if plain:  # the whole vocabulary (min-p at most): no sort
            values = _min_p(logits[plain], [rows[i] for i in plain])
            tokens[plain] = _inverse_cdf(values, uniform[plain])
        if filtered:
            values, ids = top_k_top_p(logits[filtered], [rows[i].params for i in filtered])
            values = _min_p(values, [rows[i] for i in filtered])
            tokens[filtered] = ids.gather(1, _inverse_cdf(values, uniform[filtered])[:, None]).squeeze(1)
        return tokens


def apply_penalties(logits: torch.Tensor, rows: Sequence[Row]) -> torch.Tensor:
    """Repetition penalty over prompt + answer (HF: logit / p if > 0 else logit * p), then OpenAI's presence and
    frequency penalties over the answer (logit - frequency * count - presence * [count > 0]). fp32 in and out."""
    rows_n, vocab = logits.shape
    device = logits.device
    if any(r.params.repetition_penalty != 1.0 for r in rows):
        ids = _padded([r.token_ids for r in rows], vocab, device)
        seen = torch.zeros(rows_n, vocab + 1, dtype=torch.bool, device=device).scatter_(1, ids, True)[:, :vocab]
        penalty = logits.new_tensor([r.params.repetition_penalty for r in rows])[:, None]
        logits = torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
    if any(r.params.presence_penalty or r.params.frequency_penalty for r in rows):
        ids = _padded([r.token_ids[r.prompt_len:] for r in rows], vocab, device)
        counts = torch.zeros(rows_n, vocab + 1, device=device).scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float))
        counts = counts[:, :vocab]
        frequency = logits.new_tensor([r.params.frequency_penalty for r in rows])[:, None]
        presence = logits.new_tensor([r.params.presence_penalty for r in rows])[:, None]
        logits = logits - frequency * counts - presence * (counts > 0)
    return logits


def top_k_top_p(logits: torch.Tensor, params: Sequence[SamplingParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, token ids) of each row's candidates, most likely first; dropped ones are -inf.

    Works on the best `max(k)` tokens when every row has a top-k, else on the best NUCLEUS_CANDIDATES when
    they hold each row's top_p mass (exact: the nucleus is a prefix of the sorted tokens), else a full sort.
    """
    vocab = logits.shape[-1]
    ks = [p.top_k if 0 < p.top_k < vocab else 0 for p in params]
    width = max(ks) if all(ks) else min(NUCLEUS_CANDIDATES, vocab)
    values, ids = logits.topk(max(width, 1), dim=-1)
    full_norm = None
    if not all(ks) and width < vocab:
        full_norm = logits.logsumexp(-1, keepdim=True)
        mass = (values - full_norm).exp().sum(-1)  # probability the candidates hold
        short = [p.top_p < 1 and not k and float(m) < p.top_p for p, k, m in zip(params, ks, mass.tolist())]
        if any(short):
            values, ids = logits.sort(dim=-1, descending=True)
    position = torch.arange(values.shape[-1], device=values.device)
    k = values.new_tensor([k or values.shape[-1] for k in ks])[:, None]
    values = values.masked_fill(position >= k, -math.inf)
    # top-p over the probabilities after top-k (HF's order); a row without top-k over the whole vocabulary,
    # of which its candidates may be only the head
    norm = values.logsumexp(-1, keepdim=True)
    if full_norm is not None:
        norm = torch.where(k < values.shape[-1], norm, torch.maximum(norm, full_norm))
    probs = (values - norm).exp()
    top_p = values.new_tensor([p.top_p for p in params])[:, None]
    drop = (probs.cumsum(-1) - probs) >= top_p  # the token that crosses top_p stays
    drop[:, 0] = False  # and the best one always: rounding in cumsum can exceed a tiny top_p
    return values.masked_fill(drop & (top_p < 1), -math.inf), ids


def _min_p(values: torch.Tensor, rows: Sequence[Row]) -> torch.Tensor:
    """Drop tokens with probability < min_p x the best one's: in logits, value < best + log(min_p)."""
    min_p = [r.params.min_p for r in rows]
    if not any(min_p):
        return values
    floor = values.new_tensor([math.log(p) if p > 0 else -math.inf for p in min_p])[:, None]
    return values.masked_fill(values < values.max(-1, keepdim=True).values + floor, -math.inf)


def _inverse_cdf(values: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Index drawn from softmax(values) per row, with one uniform number in [0, 1) per row."""
    cdf = values.softmax(-1).cumsum(-1)
    index = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True)  # right: never a zero-probability token
    return index.squeeze(1).clamp_(max=values.shape[-1] - 1)


def _padded(lists: list[list[int]], pad: int, device) -> torch.Tensor:
    width = max(1, max(len(x) for x in lists))
    return torch.tensor([x + [pad] * (width - len(x)) for x in lists], dtype=torch.long, device=device)
