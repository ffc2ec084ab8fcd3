"""Throughput of batched `predict` vs one prompt at a time, on the same prompts (not a test).

    python bench/predict_speed.py                      # tiny model, data/advertise_gen/dev.jsonl, batch 16
    python bench/predict_speed.py --model DIR --device cuda --dtype bf16

Both modes go through `generate.generate_ids` (greedy, KV cache) on fixed batches of length-sorted prompts;
only the batch size differs. Where `generate_ids` takes `max_batch` (the generation engine), a third mode,
"continuous", hands it every prompt at once with at most --batch-size rows (a finished row's place goes to the
next prompt at once): what `predict` runs. A random-init model rarely emits <|im_end|>, so most rows run to
max_new_tokens: fine for a throughput figure. `--src DIR` imports qwen_sft from another checkout.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

if "--src" in sys.argv:  # before the first qwen_sft import
    sys.path.insert(0, sys.argv[sys.argv.index("--src") + 1])

import torch

from qwen_sft.data.records import load_samples
from qwen_sft.generation.predict import generate_ids, prompt_messages
from qwen_sft.generation.sampler import SamplingParams
from qwen_sft.model.load import load_model, load_tokenizer, resolve_model_path
from qwen_sft.template.encode import encode_prompt
from qwen_sft.template.registry import get_template

ROOT = Path(__file__).resolve().parents[1]


def run(model, tokenizer, prompts, sampling, batch_size):
    """(generated tokens, stopped rows, seconds, outputs); batches of length-sorted prompts, like predict."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs = [None] * len(prompts)
    sync()
    start = time.perf_counter()
    for first in range(0, len(order), batch_size):
        batch = order[first:first + batch_size]
        for i, result in zip(batch, generate_ids(model, tokenizer, [prompts[i] for i in batch], sampling)):
            outputs[i] = result
    sync()
    seconds = time.perf_counter() - start
    tokens = sum(len(ids) + (reason == "stop") for ids, reason in outputs)  # the stop token was generated too
    return tokens, sum(reason == "stop" for _, reason in outputs), seconds, outputs


def run_continuous(model, tokenizer, prompts, sampling, batch_size):
    """Every prompt handed over at once, at most `batch_size` rows decoded together."""
    sync()
    start = time.perf_counter()
    outputs = generate_ids(model, tokenizer, prompts, sampling, max_batch=batch_size)
    sync()
    seconds = time.perf_counter() - start
    tokens = sum(len(ids) + (reason == "stop") for ids, reason in outputs)
    return tokens, sum(reason == "stop" for _, reason in outputs), seconds, outputs


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--data", default=str(ROOT / "data" / "advertise_gen" / "dev.jsonl"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--n", type=int, default=0, help="use the first n prompts (0 = all)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--src", default=None, help="import qwen_sft from this src dir (another checkout)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model, dtype=args.dtype, device=args.device)
    tokenizer = load_tokenizer(resolve_model_path(args.model))
    template = get_template("qwen")
    samples = load_samples(args.data, require_answer=False)
    samples = samples[:args.n] if args.n else samples
    prompts = [encode_prompt(prompt_messages(s.messages), tokenizer, template) for s in samples]
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens)
    generate_ids(model, tokenizer, prompts[:2], SamplingParams(max_new_tokens=4))  # warm-up: kernels, allocator

    rows = []
    for label, batch_size in (("one at a time", 1), ("batched", args.batch_size)):
        tokens, stopped, seconds, outputs = run(model, tokenizer, prompts, sampling, batch_size)
        rows.append((label, batch_size, tokens, stopped, seconds, outputs))
    if "max_batch" in inspect.signature(generate_ids).parameters:
        rows.append(("continuous", args.batch_size, *run_continuous(model, tokenizer, prompts, sampling,
                                                                    args.batch_size)))
    device = next(model.parameters()).device
    print(f"model {args.model} ({model.dtype}, {device}, {torch.get_num_threads()} threads), {len(prompts)} prompts, "
          f"greedy, max_new_tokens {args.max_new_tokens}")
    print(f"{'mode':<15}{'batch':>6}{'tokens':>8}{'stopped':>9}{'seconds':>9}{'tokens/s':>10}")
    for label, batch_size, tokens, stopped, seconds, _ in rows:
        print(f"{label:<15}{batch_size:>6}{tokens:>8}{stopped:>9}{seconds:>9.2f}{tokens / seconds:>10.1f}")
    (_, _, t1, _, s1, single) = rows[0]
    for label, _, tb, _, sb, batched in rows[1:]:
        same = sum(a == b for a, b in zip(single, batched))
        print(f"{label}: speed-up {(tb / sb) / (t1 / s1):.2f}x; identical outputs in {same}/{len(prompts)} rows "
              "(bf16 batched matmuls may round differently from single-row ones)")


if __name__ == "__main__":
    main()
