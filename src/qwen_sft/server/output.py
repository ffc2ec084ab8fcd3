"""Engine events → response bodies: the whole answer (non-streaming, cancelled when the client leaves) or
OpenAI `chat.completion.chunk` server-sent events; logprobs in OpenAI's shape."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from dataclasses import dataclass, field

from qwen_sft.generation import Delta, Failed, Finished, TokenLogprob
from qwen_sft.server.errors import ApiError


@dataclass
class Answer:
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    done: Finished | None = None


class ClientGone(Exception):
    """The client disconnected before its non-streaming answer was complete."""


async def collect(events, n: int, receive) -> list[Answer]:
    """Every choice of a non-streaming request. The client's disconnect (seen on `receive`) cancels it: its
    rows leave the batch at the next step instead of decoding to max_tokens for nobody.

    Raises:
        ApiError: generation failed.
        ClientGone: the client left first.
    """
    answers = [Answer() for _ in range(n)]

    async def consume():
        async with aclosing(events):  # closing the iterator marks the request cancelled
            async for event in events:
                if isinstance(event, Delta):
                    answers[event.index].text.append(event.text)
                    answers[event.index].logprobs.extend(event.logprobs)
                elif isinstance(event, Failed):
                    raise ApiError(503, event.message, code="generation_failed", type="server_error")
                else:
                    answers[event.index].done = event

    work, gone = asyncio.ensure_future(consume()), asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, gone):
            task.cancel()
    if not work.done() or work.cancelled():
        await asyncio.gather(work, return_exceptions=True)  # let aclosing run: the request is cancelled
        raise ClientGone()
    work.result()  # re-raises ApiError
    if any(a.done is None for a in answers):
        raise ApiError(503, "generation ended without a result", type="server_error")
    return answers


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


async def sse(events, head: dict, n: int, include_usage: bool, logprobs: LogprobFormatter | None):
    """OpenAI `chat.completion.chunk` events; closing this generator (client gone) cancels the request."""
    def chunk(index: int, delta: dict, finish=None, lp=None) -> str:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": lp}
        return f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [choice]}, ensure_ascii=False)}\n\n"

    for index in range(n):
        yield chunk(index, {"role": "assistant", "content": ""})
    prompt_tokens, completion_tokens = 0, 0
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Delta):
                if event.text or (logprobs and event.logprobs):
                    lp = {"content": logprobs.content(event.logprobs)} if logprobs else None
                    yield chunk(event.index, {"content": event.text}, lp=lp)
            elif isinstance(event, Finished):
                prompt_tokens, completion_tokens = event.prompt_tokens, completion_tokens + event.completion_tokens
                yield chunk(event.index, {}, event.reason)
            else:
                body = {"error": {"message": event.message, "type": "server_error", "param": None, "code": None}}
                yield f"data: {json.dumps(body)}\n\n"
                include_usage = False
    if include_usage:
        body = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
        yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"


class LogprobFormatter:
    """OpenAI's `{"token", "logprob", "bytes", "top_logprobs"}` entries. A byte-level BPE token (Qwen) can be
    part of a character: `bytes` are its raw bytes, `token` their lenient decoding."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.byte_of = {ch: b for b, ch in _bytes_to_unicode().items()}
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def content(self, logprobs) -> list[dict]:
        return [{**self._token(lp.token_id), "logprob": lp.logprob,
                 "top_logprobs": [{**self._token(i), "logprob": v} for i, v in lp.top]} for lp in logprobs]

    def _token(self, token_id: int) -> dict:
        if token_id not in self._cache:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            if all(ch in self.byte_of for ch in piece):
                raw = bytes(self.byte_of[ch] for ch in piece)
            else:  # a special token or a non-byte-level vocabulary
                raw = self.tokenizer.decode([token_id]).encode("utf-8")
            self._cache[token_id] = (raw.decode("utf-8", errors="replace"), list(raw))
        text, raw = self._cache[token_id]
        return {"token": text, "bytes": raw}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table, which byte-level BPE vocabularies (Qwen's) are written in."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table
