"""Throughput of `qwen-sft serve` under load: N concurrent clients vs the same N requests one after another.

    QWEN_SFT_CACHE=.cache .venv/bin/python bench/serve_load.py [--clients 32,128] [--max-tokens 32] [--dtype auto]

Runs a live uvicorn server on 127.0.0.1 (random port) with the embedded `tiny` model and, per client count,
alternates rounds of: the requests one after another; all at once (non-streaming); all at once streaming,
timing each request's first content chunk (time to first token). Prints generated tokens/s each way and
their ratio (the batching speed-up) per round, then medians, TTFT p50/p99 and the process's peak RSS
(VmHWM, so far). Both sides share the machine, so compare ratios, not absolute figures. `--src DIR` imports
qwen_sft from another checkout (before/after comparisons).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path


def requests_for(clients: int, max_tokens: int) -> list[dict]:
    topics = ["a dragon", "the sea", "类型#裙*版型#宽松", "1+1=", "why the sky is blue", "a robot", "tea", "rain"]
    questions = [f"Request {i}: tell me about {topics[i % len(topics)]}. " * (1 + i % 4) for i in range(clients)]
    return [{"messages": [{"role": "user", "content": q}], "max_tokens": max_tokens, "temperature": 0}
            for q in questions]


async def send(http, body: dict) -> int:
    r = await http.post("/v1/chat/completions", json=body)
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]


async def send_streaming(http, body: dict) -> tuple[int, float]:
    """(completion tokens, seconds to the first chunk with content)."""
    start, first, tokens = time.perf_counter(), None, 0
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                first = time.perf_counter() - start
    return tokens, first if first is not None else time.perf_counter() - start


async def one_after_another(url: str, bodies: list[dict]) -> tuple[int, float]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        start = time.perf_counter()
        tokens = [await send(http, body) for body in bodies]
        return sum(tokens), time.perf_counter() - start


async def all_at_once(url: str, bodies: list[dict], streaming: bool = False) -> tuple[int, float, list[float]]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=None, limits=httpx.Limits(max_connections=len(bodies))) as http:
        start = time.perf_counter()
        if streaming:
            results = await asyncio.gather(*(send_streaming(http, body) for body in bodies))
            return sum(t for t, _ in results), time.perf_counter() - start, [f for _, f in results]
        tokens = await asyncio.gather(*(send(http, body) for body in bodies))
        return sum(tokens), time.perf_counter() - start, []


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench(create_app, running, model, tokenizer, clients: int, args) -> dict:
    app = create_app(model, tokenizer, "qwen", served_model_name="tiny", max_batch=clients,
                     max_tokens_limit=args.max_tokens, max_queue=max(256, clients))
    bodies = requests_for(clients, args.max_tokens)
    rounds, ttft = [], []
    with running(app) as url:
        asyncio.run(all_at_once(url, bodies))  # warm-up: first-call allocations, kernels for each shape
        for _ in range(args.rounds):  # alternate, so a burst of load from elsewhere hits both sides alike
            seq_tokens, seq_s = asyncio.run(one_after_another(url, bodies))
            par_tokens, par_s, _ = asyncio.run(all_at_once(url, bodies))
            stream_tokens, stream_s, firsts = asyncio.run(all_at_once(url, bodies, streaming=True))
            ttft += firsts
            rounds.append({"clients": clients, "sequential_tokens_per_s": round(seq_tokens / seq_s, 1),
                           "concurrent_tokens_per_s": round(par_tokens / par_s, 1),
                           "streaming_tokens_per_s": round(stream_tokens / stream_s, 1),
                           "seconds": [round(seq_s, 2), round(par_s, 2), round(stream_s, 2)],
                           "speedup": round((par_tokens / par_s) / (seq_tokens / seq_s), 2),
                           "ttft_p50_s": round(percentile(firsts, 0.5), 3),
                           "ttft_p99_s": round(percentile(firsts, 0.99), 3)})
            print(json.dumps(rounds[-1]), flush=True)
    app.state.engine.stop()
    median = lambda key: statistics.median(r[key] for r in rounds)
    return {"clients": clients, "max_tokens": args.max_tokens, "rounds": len(rounds),
            "median_sequential_tokens_per_s": median("sequential_tokens_per_s"),
            "median_concurrent_tokens_per_s": median("concurrent_tokens_per_s"),
            "median_streaming_tokens_per_s": median("streaming_tokens_per_s"),
            "median_speedup": median("speedup"), "ttft_p50_s": round(percentile(ttft, 0.5), 3),
            "ttft_p99_s": round(percentile(ttft, 0.99), 3), "peak_rss_mb_so_far": round(peak_rss_mb())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="32,128", help="comma-separated client counts")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where the CPU supports it) | bf16 | fp32")
    parser.add_argument("--rounds", type=int, default=3, help="sequential + concurrent rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = torch's default); on a shared machine 1 avoids OpenMP threads "
                             "waiting on a descheduled peer, which swings timings ~10x")
    parser.add_argument("--src", default=None, help="import qwen_sft from this src dir (another checkout)")
    args = parser.parse_args()
    if args.src:
        sys.path.insert(0, args.src)
    import torch

    import qwen_sft
    try:
        from qwen_sft.server import create_app, running
    except ImportError:  # a checkout from before the server package
        from qwen_sft.serve import create_app, running
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from qwen_sft.model.load import load_model, load_tokenizer, resolve_model_path

        model, tokenizer = load_model("tiny", dtype=args.dtype), load_tokenizer(resolve_model_path("tiny"))
    except ImportError:  # a checkout from before the stage packages
        from qwen_sft.model import load_model

        model, tokenizer = load_model("tiny", dtype=args.dtype)
    results = [bench(create_app, running, model, tokenizer, int(c), args) for c in args.clients.split(",")]
    for result in results:
        print(json.dumps({**result, "dtype": str(model.dtype), "threads": torch.get_num_threads(),
                          "qwen_sft": str(Path(qwen_sft.__file__).parent)}))


if __name__ == "__main__":
    main()
