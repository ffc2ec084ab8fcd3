"""The batch: requests in, events out. `Batch.step()` = drop cancelled rows → admit and prefill waiting
requests together → one decoding step for every live row → finish rows that stopped.

One thread owns a `Batch` (the serve worker, or the caller of the synchronous API). Only `Request.cancelled`
may be set from elsewhere; a cancelled request's rows free their slots at the next step.

A request with n > 1 is prefilled once; its prompt's keys/values are copied into n - 1 more slots (its own
data) and each choice samples from the same first logits with its own random stream.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from qwen_sft.generation.detokenize import IncrementalDetokenizer
from qwen_sft.generation.runner import ModelRunner
from qwen_sft.generation.sampler import Sampler, SamplingParams, TokenLogprob, row_seed


@dataclass(frozen=True)
class Delta:
    text: str  # may be "" when the step's token is held back (half a character, start of a stop string)
    index: int = 0  # choice
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int  # sampled tokens, a closing stop token included (it was generated)
    index: int = 0


@dataclass(frozen=True)
class Failed:
    message: str


Event = Delta | Finished | Failed


@dataclass(eq=False)
class Request:
    """One prompt to answer `params.n` times. `emit` is called from the batch's thread, once per event."""

    prompt_ids: list[int]
    params: SamplingParams
    emit: Callable[[Event], None]
    key: int = 0  # mixed into the per-row seeds (predict: the prompt's index, so each prompt samples its own)
    cancelled: bool = False  # the only field other threads may set


@dataclass(eq=False)
class Sequence:
    """One row of the batch: one choice of one request."""

    request: Request
    index: int
    slot: int
    token_ids: list[int]  # prompt + answer
    detokenizer: IncrementalDetokenizer
    rng: random.Random | None
    generated: int = 0  # sampled tokens, a closing stop token included

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @property
    def prompt_len(self) -> int:
        return len(self.request.prompt_ids)


class Batch:
    """Continuous batching over a `SlotCache`; see the module docstring."""

    def __init__(self, model, tokenizer, stop_token_ids, *, max_rows: int = 32, max_prefill_tokens: int = 8192):
        """
        Args:
            model: a causal LM in eval mode (peft-wrapped or not).
            tokenizer: its tokenizer; `len(tokenizer)` bounds the token ids that may come out.
            stop_token_ids: ids that end an answer (not part of its text).
            max_rows: most sequences decoded together.
            max_prefill_tokens: most (rows x padded prompt length) prefilled in one forward; a longer prompt
                is prefilled alone.
        """
        self.tokenizer = tokenizer
        self.stop_token_ids = frozenset(stop_token_ids)
        self.runner = ModelRunner(model, len(tokenizer))
        self.sampler = Sampler(self.runner.vocab_limit)
        self.cache = self.runner.new_cache(max_rows)
        self.max_rows, self.max_prefill_tokens = max_rows, max_prefill_tokens
        self.rows: list[Sequence | None] = []  # by slot; None = a hole
        self.waiting: deque[Request] = deque()
        self.steps = 0  # decoding forwards, for tests and logs
        self.prefills = 0  # prefill forwards

    @property
    def live(self) -> int:
        return sum(row is not None for row in self.rows)

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or self.live > 0

    def free_rows(self) -> int:
        return self.max_rows - self.live - sum(r.params.n for r in self.waiting)

    def submit(self, request: Request) -> None:
        self.waiting.append(request)

    def step(self) -> None:
        """Admit and prefill what fits, then one decoding step; releases the cache when nothing is left."""
        self._drop_cancelled()
        self._admit()
        if self.live:
            self._decode()
        if not self.busy:
            self.rows = []
            self.cache.clear()

    def fail_all(self, message: str) -> None:
        """Every waiting and running request gets `Failed` (a forward raised); the batch starts clean."""
        requests = {id(r): r for r in self.waiting}
        requests.update({id(s.request): s.request for s in self.rows if s is not None})
        for request in requests.values():
            request.emit(Failed(message))
        self.waiting.clear()
        self.rows = []
        self.cache.clear()

    # ---- admit + prefill ----
    def _admit(self) -> None:
        admitted: list[Request] = []
        free, width = self.max_rows - self.live, 0
        while self.waiting:
            request = self.waiting[0]
            if request.cancelled:
                self.waiting.popleft()
                continue
            wider = max(width, len(request.prompt_ids))
            if request.params.n > free or (admitted and wider * (len(admitted) + 1) > self.max_prefill_tokens):
                break
            admitted.append(self.waiting.popleft())
            free, width = free - request.params.n, wider
        if not admitted:
            return
        groups = [[self._new_row(r, i) for i in range(r.params.n)] for r in admitted]
        self.cache.reserve(max(row.slot for group in groups for row in group) + 1, width)  # n > 1: siblings too
        hidden = self.runner.prefill(self.cache, [r.prompt_ids for r in admitted], [g[0].slot for g in groups])
        self.prefills += 1
        for group in groups:
            for sibling in group[1:]:
                self.cache.move(group[0].slot, sibling.slot, sibling.prompt_len)
        index = torch.tensor([i for i, group in enumerate(groups) for _ in group], device=hidden.device)
        rows = [row for group in groups for row in group]
        self._advance(rows, hidden if len(rows) == len(groups) else hidden[index])

    def _new_row(self, request: Request, index: int) -> Sequence:
        slot = self.cache.allocate()
        rng = None if request.params.greedy else random.Random(row_seed(request.params.seed, request.key, index))
        row = Sequence(request, index, slot, list(request.prompt_ids),
                       IncrementalDetokenizer(self.tokenizer, request.params.stop), rng)
        if slot >= len(self.rows):
            self.rows += [None] * (slot + 1 - len(self.rows))
        self.rows[slot] = row
        return row

    # ---- decode ----
    def _decode(self) -> None:
        self._pack()
        rows = self.rows
        live = [i for i, row in enumerate(rows) if row is not None]
        tokens = [row.token_ids[-1] if row else 0 for row in rows]
        positions = [len(row.token_ids) - 1 if row else 0 for row in rows]
        hidden = self.runner.decode(self.cache, tokens, positions, live)
        self.steps += 1
        self._advance([rows[i] for i in live], hidden)

    def _pack(self) -> None:
        """Trim trailing holes; when under half the slot range is live, move the last rows into the first holes
        (a copy of those rows only, so decoding stops paying for the holes)."""
        while self.rows and self.rows[-1] is None:
            self.rows.pop()
        live = self.live
        if live * 2 >= len(self.rows) or len(self.rows) <= 4:
            return
        for hole in [i for i, row in enumerate(self.rows[:live]) if row is None]:
            source = max(i for i, row in enumerate(self.rows) if row is not None)
            row = self.rows[source]
            self.cache.move(source, hole, len(row.token_ids) - 1)  # the last token's keys are written next step
            self.cache.release_slot(source)
            self.cache.free.remove(hole)
            self.rows[hole], self.rows[source], row.slot = row, None, hole
        del self.rows[live:]

    # ---- sample + finish ----
    def _advance(self, rows: list[Sequence], hidden: torch.Tensor) -> None:
        """Choose each row's next token from its hidden state, emit text, finish rows that are done."""
        if all(r.params.greedy and not r.params.penalized and not r.params.logprobs for r in rows):
            tokens, logprobs = self.runner.greedy(hidden), [None] * len(rows)  # no [rows, vocab] logits at all
        else:
            tokens, logprobs = self.sampler.sample(self.runner.logits(hidden), rows)
        self._record(rows, tokens, logprobs)

    def _record(self, rows: list[Sequence], tokens: list[int], logprobs: list) -> None:
        for row, token, logprob in zip(rows, tokens, logprobs):
            row.generated += 1
            reason = None
            if token in self.stop_token_ids:
                reason, text, ids = "stop", row.detokenizer.finish(), ()
            else:
                row.token_ids.append(token)
                text, ids = row.detokenizer.push(token), (token,)
                if row.detokenizer.stopped:
                    reason = "stop"
                elif row.generated >= row.params.max_new_tokens:
                    reason, text = "length", text + row.detokenizer.finish()
            emit = row.request.emit
            if text or ids or logprob:
                emit(Delta(text, row.index, ids, (logprob,) if logprob else ()))
            if reason:
                emit(Finished(reason, row.prompt_len, row.generated, row.index))
                self._remove(row)

    def _drop_cancelled(self) -> None:
        for row in self.rows:
            if row is not None and row.request.cancelled:
                self._remove(row)

    def _remove(self, row: Sequence) -> None:
        self.rows[row.slot] = None
        self.cache.release_slot(row.slot)
