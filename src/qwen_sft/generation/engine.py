"""The two ways in to a `Batch`: a synchronous API (predict, eval, chat) and a background worker thread with an
asyncio front door (serve). Both run the same batch stepping, sampler and detokeniser.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import torch

from qwen_sft.generation.batch import Batch, Delta, Event, Failed, Finished, Request
from qwen_sft.generation.sampler import SamplingParams, TokenLogprob

log = logging.getLogger(__name__)


@dataclass
class Completion:
    """One answer. `token_ids` excludes a closing stop token; `completion_tokens` counts it."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None  # when params.logprobs


class GenerationError(RuntimeError):
    """A forward pass failed (e.g. out of memory)."""


# ------------------------------------------------------------------------------------------ synchronous API

def generate(model, tokenizer, prompts_ids: list[list[int]], params: SamplingParams, stop_token_ids: list[int],
             *, max_batch: int | None = None, on_finish: Callable[[int], None] | None = None) -> list[Completion]:
    """Answer every prompt, `params.n` times each: [prompt 0 choice 0, prompt 0 choice 1, ..., prompt 1 ...].

    Rows join the batch as others finish (continuous batching, at most `max_batch` rows, default all).
    Sampled rows are seeded from (params.seed, prompt index, choice), so answers do not depend on the batching.

    Args:
        on_finish: called with the prompt index when all of its choices are done (progress bars).

    Raises:
        GenerationError: a forward pass failed.
    """
    params = params.check()
    results: list[list] = [[None] * params.n for _ in prompts_ids]
    batch = Batch(model, tokenizer, stop_token_ids, max_rows=max(max_batch or len(prompts_ids) * params.n, params.n))
    for i, ids in enumerate(prompts_ids):
        batch.submit(Request(list(ids), params, _collector(results[i], len(ids), params, i, on_finish), key=i))
    with torch.inference_mode():
        while batch.busy:
            batch.step()
    return [choice for choices in results for choice in choices]


def _collector(slots: list, prompt_tokens: int, params: SamplingParams, key: int, on_finish):
    """An `emit` that builds one request's `Completion`s in `slots`."""
    parts = [([], [], []) for _ in slots]  # (text pieces, token ids, logprobs) per choice

    def emit(event: Event) -> None:
        if isinstance(event, Delta):
            text, ids, logprobs = parts[event.index]
            text.append(event.text)
            ids.extend(event.token_ids)
            logprobs.extend(event.logprobs)
        elif isinstance(event, Finished):
            text, ids, logprobs = parts[event.index]
            slots[event.index] = Completion("".join(text), ids, event.reason, prompt_tokens, event.completion_tokens,
                                            logprobs if params.logprobs else None)
            if on_finish and all(s is not None for s in slots):
                on_finish(key)
        else:
            raise GenerationError(event.message)

    return emit


def stream(model, tokenizer, prompt_ids: list[int], params: SamplingParams, stop_token_ids: list[int]) -> Iterator[str]:
    """The answer to one prompt as text pieces, produced as they are generated (chat). n must be 1."""
    params = params.check()
    pieces: list[str] = []
    done: list[Event] = []

    def emit(event: Event) -> None:
        if isinstance(event, Delta):
            pieces.append(event.text)
        else:
            done.append(event)

    batch = Batch(model, tokenizer, stop_token_ids, max_rows=1)
    batch.submit(Request(list(prompt_ids), params.replace(n=1), emit))
    while batch.busy:
        with torch.inference_mode():
            batch.step()
        text = "".join(pieces)
        pieces.clear()
        if text:
            yield text
    if done and isinstance(done[0], Failed):
        raise GenerationError(done[0].message)


# ------------------------------------------------------------------------------------- worker thread (serve)

class QueueFull(Exception):
    """More requests are waiting than the server accepts."""


class AsyncEngine:
    """Owns the model on a worker thread; `generate` is the asyncio front door, `submit` works from any thread."""

    def __init__(self, model, tokenizer, stop_token_ids: list[int], *, max_batch: int = 32, max_queue: int = 256,
                 max_prefill_tokens: int = 8192):
        self.batch = Batch(model, tokenizer, stop_token_ids, max_rows=max_batch, max_prefill_tokens=max_prefill_tokens)
        self._queue: queue.Queue[Request] = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def steps(self) -> int:
        return self.batch.steps

    @property
    def live_rows(self) -> int:
        return self.batch.live

    @property
    def running(self) -> bool:
        return self._thread is not None

    def submit(self, request: Request) -> None:
        """Queue a request; the worker thread starts on first use (and again after `stop`).

        Raises:
            QueueFull: when `max_queue` requests are already waiting.
        """
        with self._lock:
            if self._thread is not None and self._stopping.is_set():  # stop() stopped waiting: let it finish
                self._thread.join()
                self._thread = None
            try:
                self._queue.put_nowait(request)
            except queue.Full:
                raise QueueFull(f"{self._queue.maxsize} requests are already waiting; retry later") from None
            if self._thread is None:
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="qwen-sft-engine", daemon=True)
                self._thread.start()

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[Event]:
        """Queue a request now; the iterator yields `Delta`s, then a `Finished` per choice, or one `Failed`.

        Closing the iterator early (a client that left) cancels the request: its rows leave at the next step.
        Call from a running event loop.

        Raises:
            QueueFull: when `max_queue` requests are already waiting (raised here, before any event).
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                request.cancelled = True

        request = Request(list(prompt_ids), params, emit)
        self.submit(request)
        return self._events(request, events)

    @staticmethod
    async def _events(request: Request, events: asyncio.Queue) -> AsyncIterator[Event]:
        open_choices = request.params.n
        try:
            while open_choices:
                event = await events.get()
                yield event
                if isinstance(event, Failed):
                    return
                open_choices -= isinstance(event, Finished)
        finally:
            request.cancelled = True  # a no-op once finished; frees the rows of a request left early

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker; waiting and running requests get `Failed`."""
        with self._lock:
            self._stopping.set()
            if self._thread is not None:
                self._thread.join(timeout)
                if not self._thread.is_alive():
                    self._thread = None

    def _run(self) -> None:
        batch = self.batch
        while not self._stopping.is_set():
            try:
                self._pull(block=not batch.busy)
                if batch.busy:
                    with torch.inference_mode():
                        batch.step()
            except Exception as err:  # a bug or out-of-memory: fail this batch, keep serving the next
                log.exception("generation failed")
                batch.fail_all(f"generation failed: {type(err).__name__}")
        for request in self._drain():
            batch.submit(request)
        batch.fail_all("server shutting down")  # a later submit() starts clean

    def _pull(self, block: bool) -> None:
        """Move queued requests into the batch while it has free rows (the rest wait in the queue: max_queue)."""
        if block:  # idle: wait briefly so stop() is noticed
            try:
                self.batch.submit(self._queue.get(timeout=0.1))
            except queue.Empty:
                return
        while self.batch.free_rows() > 0:
            try:
                self.batch.submit(self._queue.get_nowait())
            except queue.Empty:
                return

    def _drain(self) -> list[Request]:
        requests = []
        while True:
            try:
                requests.append(self._queue.get_nowait())
            except queue.Empty:
                return requests
