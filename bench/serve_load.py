"""Throughput of `qwen-sft serve` under load: 32 concurrent clients vs the same 32 requests one after another.

    QWEN_SFT_CACHE=.cache .venv/bin/python bench/serve_load.py [--clients 32] [--max-tokens 32] [--dtype auto]

Runs a live uvicorn server on 127.0.0.1 (random port) with the embedded `tiny` model, sends the same greedy
requests both ways and prints generated tokens/s for each and their ratio (the batching speed-up). Both runs
share the process and the machine, so a busy machine slows both; compare the ratio, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx

from qwen_sft.model import load_model
from qwen_sft.serve import create_app, running


def requests_for(clients: int, max_tokens: int) -> list[dict]:
    topics = ["a dragon", "the sea", "类型#裙*版型#宽松", "1+1=", "why the sky is blue", "a robot", "tea", "rain"]
    return [{"messages": [{"role": "user", "content": f"Request {i}: tell me about {topics[i % len(topics)]}. " * (1 + i % 4)}],
             "max_tokens": max_tokens, "temperature": 0} for i in range(clients)]


async def send(http: httpx.AsyncClient, body: dict) -> int:
    r = await http.post("/v1/chat/completions", json=body)
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]


async def one_after_another(url: str, bodies: list[dict]) -> tuple[int, float]:
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        start = time.perf_counter()
        tokens = [await send(http, body) for body in bodies]
        return sum(tokens), time.perf_counter() - start


async def all_at_once(url: str, bodies: list[dict]) -> tuple[int, float]:
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=httpx.Limits(max_connections=len(bodies))) as http:
        start = time.perf_counter()
        tokens = await asyncio.gather(*(send(http, body) for body in bodies))
        return sum(tokens), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where the CPU supports it) | bf16 | fp32")
    args = parser.parse_args()

    model, tokenizer = load_model("tiny", dtype=args.dtype)
    app = create_app(model, tokenizer, "qwen", served_model_name="tiny", max_batch=args.clients,
                     max_tokens_limit=args.max_tokens)
    bodies = requests_for(args.clients, args.max_tokens)
    with running(app) as url:
        asyncio.run(one_after_another(url, bodies[:2]))  # warm-up: first-call allocations, thread start
        steps = app.state.engine.steps
        seq_tokens, seq_s = asyncio.run(one_after_another(url, bodies))
        seq_steps, steps = app.state.engine.steps - steps, app.state.engine.steps
        par_tokens, par_s = asyncio.run(all_at_once(url, bodies))
        par_steps = app.state.engine.steps - steps
    app.state.engine.stop()
    result = {
        "clients": args.clients, "max_tokens": args.max_tokens, "dtype": str(model.dtype),
        "sequential": {"tokens": seq_tokens, "seconds": round(seq_s, 2), "tokens_per_s": round(seq_tokens / seq_s, 1),
                       "decode_steps": seq_steps},
        "concurrent": {"tokens": par_tokens, "seconds": round(par_s, 2), "tokens_per_s": round(par_tokens / par_s, 1),
                       "decode_steps": par_steps},
        "speedup": round((par_tokens / par_s) / (seq_tokens / seq_s), 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
