"""Throughput of `qwen-sft serve` under load: 32 concurrent clients vs the same 32 requests one after another.

    QWEN_SFT_CACHE=.cache .venv/bin/python bench/serve_load.py [--clients 32] [--max-tokens 32] [--dtype auto]

Runs a live uvicorn server on 127.0.0.1 (random port) with the embedded `tiny` model, sends the same greedy
requests both ways, alternating, and prints generated tokens/s for each and their ratio (the batching
speed-up) per round, then the median. Both sides share the machine, so compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import torch

from qwen_sft.model import load_model
from qwen_sft.serve import create_app, running


def requests_for(clients: int, max_tokens: int) -> list[dict]:
    topics = ["a dragon", "the sea", "类型#裙*版型#宽松", "1+1=", "why the sky is blue", "a robot", "tea", "rain"]
    questions = [f"Request {i}: tell me about {topics[i % len(topics)]}. " * (1 + i % 4) for i in range(clients)]
    return [{"messages": [{"role": "user", "content": q}], "max_tokens": max_tokens, "temperature": 0}
            for q in questions]


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
    parser.add_argument("--rounds", type=int, default=3, help="sequential + concurrent pairs; the median is reported")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = torch's default); on a shared machine 1 avoids OpenMP threads "
                             "waiting on a descheduled peer, which swings timings ~10x")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_model("tiny", dtype=args.dtype)
    app = create_app(model, tokenizer, "qwen", served_model_name="tiny", max_batch=args.clients,
                     max_tokens_limit=args.max_tokens)
    bodies = requests_for(args.clients, args.max_tokens)
    rounds = []
    with running(app) as url:
        asyncio.run(all_at_once(url, bodies))  # warm-up: first-call allocations, kernels for each shape
        for _ in range(args.rounds):  # alternate, so a burst of load from elsewhere hits both sides alike
            seq_tokens, seq_s = asyncio.run(one_after_another(url, bodies))
            par_tokens, par_s = asyncio.run(all_at_once(url, bodies))
            rounds.append({"sequential_tokens_per_s": round(seq_tokens / seq_s, 1),
                           "concurrent_tokens_per_s": round(par_tokens / par_s, 1),
                           "tokens": [seq_tokens, par_tokens], "seconds": [round(seq_s, 2), round(par_s, 2)],
                           "speedup": round((par_tokens / par_s) / (seq_tokens / seq_s), 2)})
            print(json.dumps(rounds[-1]), flush=True)
    app.state.engine.stop()
    speedups = sorted(r["speedup"] for r in rounds)
    print(json.dumps({"clients": args.clients, "max_tokens": args.max_tokens, "dtype": str(model.dtype),
                      "threads": torch.get_num_threads(),
                      "rounds": len(rounds), "median_speedup": speedups[len(speedups) // 2]}))


if __name__ == "__main__":
    main()
