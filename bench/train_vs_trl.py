"""qwen-sft vs TRL's SFTTrainer: same model, data, LoRA, seed and masking; throughput, memory, loss (not a test).

    python bench/train_vs_trl.py                           # fp32 + bf16, 128 examples, ~12 min on 2 CPU cores
    python bench/train_vs_trl.py --dtypes fp32 --examples 64
    python bench/train_vs_trl.py --smoke                   # 8 examples, max length 64, fp32: checks it runs (tests)

Every contender runs in its own fresh subprocess (honest peak RSS: VmHWM), on the embedded `tiny` model
(Qwen2 architecture, 151936-row vocabulary), LoRA r=8 alpha=16 dropout 0.05 on all linear layers, batch 4,
max length 512, 1 epoch, seed 42, every token trained (qwen-sft `loss: all` == TRL's language-modeling default).
qwen-sft runs through its public API (`load_config` + `train`), exactly what `qwen-sft train` runs; TRL gets the
same token ids (tokenised once by qwen-sft's template), its defaults except what identical settings need
(`gradient_checkpointing=False`, `bf16` only in bf16 runs). Throughput = trained tokens (labels != -100 after
the shift, counted from the actual batches) / the Trainer's own `train_runtime`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flops import flops_per_token, useful_flops  # bench/ is on sys.path: scripts here are run as `python bench/NAME.py`

ROOT = Path(__file__).resolve().parents[1]

SOURCE = ROOT / "data" / "advertise_gen" / "train.jsonl"
DEFAULT_TABLE = ROOT / "bench" / "train_vs_trl_table.md"
SEED = 42
# name -> (trainer, mode); every one is run at each requested dtype
CONTENDERS = {
    "qwen-sft padded": ("qwen_sft", "padded"),
    "qwen-sft packed": ("qwen_sft", "packed"),
    "TRL padded": ("trl", "padded"),
    "TRL padding-free": ("trl", "padding_free"),
    "TRL padded std-loss": ("trl", "standard_loss"),
}
COLUMNS = ["contender", "dtype", "steps", "trained tok", "pad %", "tokens/s", "train s", "wall s", "peak RSS MB",
           "final loss", "MFU", "vs TRL best tok/s", "vs TRL leanest RSS", "other load"]


# ------------------------------------------------------------------------------------------------ data
def make_dataset(path: Path, n: int, seed: int = 0, min_chars: int = 60, max_chars: int = 300) -> Path:
    """AdvertiseGen-like alpaca records whose answers are 60-300 characters long (uniform), deterministic.

    Answers are the sample set's own ad texts, extended with sentences of other ads (or cut at a sentence end)
    to a random target length, so prompts and answers look like the real corpus but vary in length.
    """
    records = [json.loads(line) for line in SOURCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = [s + "。" for r in records for s in r["output"].split("。") if len(s) > 4]
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        record = dict(records[i % len(records)])
        target = rng.randint(min_chars, max_chars)
        text = record["output"]
        while len(text) < target:
            text += rng.choice(sentences)
        cut = text.rfind("。", 0, target + 1)
        text = text[:cut + 1] if cut + 1 >= min_chars else text[:target]
        lines.append(json.dumps({**record, "output": text}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tokenized(data: Path, max_length: int) -> list[list[int]]:
    """Token ids exactly as qwen-sft builds them (template `qwen`, loss `all`, truncated to max_length)."""
    from qwen_sft.data.records import load_samples
    from qwen_sft.model.load import load_tokenizer, resolve_model_path
    from qwen_sft.template.encode import encode_example
    from qwen_sft.template.registry import get_template

    tokenizer, template = load_tokenizer(resolve_model_path("tiny")), get_template("qwen")
    return [encode_example(s.messages, tokenizer, template, loss="all", max_length=max_length).input_ids
            for s in load_samples(str(data))]


# ------------------------------------------------------------------------------------------------ matmul peak
def matmul_peak(dtype_name: str, rows: int = 1024, hidden: int = 256, vocab: int = 151936, repeats: int = 5) -> dict:
    """Best-of-`repeats` GFLOP/s of the output layer's two products, logits = h @ W.T and grad_h = g @ W,
    for `rows` rows: each the fastest of one whole-vocabulary matmul (two weight layouts) and the same
    product done as 256-row x 4000-column tiles (what qwen-sft's loss does; faster in cache). Plus a square
    2048^3 product for reference."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(vocab, hidden, generator=gen).to(dtype)
    wt = w.t().contiguous()
    h = torch.randn(rows, hidden, generator=gen).to(dtype)
    g = torch.randn(rows, vocab, generator=gen).to(dtype)
    logits, grad_h = torch.empty(rows, vocab, dtype=dtype), torch.empty(rows, hidden, dtype=dtype)
    a, b = torch.randn(2048, 2048, generator=gen).to(dtype), torch.randn(2048, 2048, generator=gen).to(dtype)
    tile_rows, tile = min(rows, 256), 4000
    tiles = [(s, min(s + tile, vocab)) for s in range(0, vocab, tile)]
    flat = torch.empty(rows * vocab, dtype=dtype)

    def tiled_forward():
        for r in range(0, rows, tile_rows):
            n = min(tile_rows, rows - r)
            for s, e in tiles:
                torch.mm(h[r:r + n], w[s:e].t(), out=flat[n * s:n * e].view(n, e - s))

    def tiled_backward():
        for r in range(0, rows, tile_rows):
            n = min(tile_rows, rows - r)
            for s, e in tiles:
                torch.mm(flat[n * s:n * e].view(n, e - s), w[s:e])

    def best(fn, flops):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    out_flops = 2 * rows * hidden * vocab
    forward = max(best(lambda: torch.mm(h, w.t(), out=logits), out_flops),
                  best(lambda: torch.mm(h, wt, out=logits), out_flops), best(tiled_forward, out_flops))
    backward = max(best(lambda: torch.mm(g, w, out=grad_h), out_flops),
                   best(lambda: torch.mm(g, wt.t(), out=grad_h), out_flops), best(tiled_backward, out_flops))
    both = 2 / (1 / forward + 1 / backward)  # one forward + one input-gradient product, as training does
    return {"forward": forward, "input_grad": backward, "output_layer": both,
            "square_2048": best(lambda: torch.mm(a, b), 2 * 2048 ** 3)}


# ------------------------------------------------------------------------------------------------ workers
def instrument(spec: dict) -> dict:
    """Patch Trainer.training_step to count what every micro-batch holds (positions, trained, non-pad tokens)
    and, with spec["profile"] = [warmup, steps], to profile `steps` whole iterations after `warmup` ones."""
    from transformers import Trainer

    stats = {"positions": 0, "trained": 0, "non_pad": 0, "rows": 0, "steps": 0, "step_seconds": 0.0}
    original = Trainer.training_step
    warmup, steps = spec.get("profile") or (None, None)
    profiler = {}

    def training_step(self, model, inputs, *args, **kwargs):
        if warmup is not None and stats["steps"] == warmup:
            import torch.profiler

            profiler["p"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
            profiler["p"].start()
            profiler["t"] = time.perf_counter()
        elif warmup is not None and stats["steps"] == warmup + steps:
            profiler["p"].stop()
            stats["profile"] = categorize(profiler["p"].events(), self.model.config if not hasattr(
                self.model, "get_base_model") else self.model.get_base_model().config)
            stats["profile"]["wall"] = time.perf_counter() - profiler["t"]
            stats["profile_steps"] = steps
        labels = inputs["labels"]
        stats["positions"] += labels.numel()
        stats["trained"] += int((labels[:, 1:] != -100).sum())
        mask = inputs.get("attention_mask")
        stats["non_pad"] += int(mask.sum()) if mask is not None else labels.numel()
        stats["rows"] += labels.shape[0]
        profiled = warmup is not None and warmup <= stats["steps"] < warmup + steps
        stats["steps"] += 1
        start = time.perf_counter()
        try:
            return original(self, model, inputs, *args, **kwargs)
        finally:  # forward + loss + backward; the rest of train_runtime is optimizer, data and logging
            stats["step_seconds"] += time.perf_counter() - start
            if profiled:
                stats["in_step_profiled"] = stats.get("in_step_profiled", 0.0) + time.perf_counter() - start

    Trainer.training_step = training_step
    return stats


CATEGORIES = ["output layer", "attention", "MLP", "LoRA", "other ops", "optimizer", "data", "python/framework"]


def categorize(events, config, lora_r: int = 8) -> dict:
    """Self CPU seconds of the profiled ops, by where they belong (shape-based; see bench/README.md)."""
    vocab, inter = config.vocab_size, config.intermediate_size
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for ev in events:
        if ev.self_cpu_time_total <= 0:
            continue
        parents, node = [], ev
        while node is not None:
            parents.append(node.name)
            node = node.cpu_parent
        shapes = [s for s in (ev.input_shapes or []) if s]
        dims = {d for s in shapes for d in s}
        name = ev.name
        if any(p.startswith("Optimizer.") for p in parents):
            cat = "optimizer"
        elif any(p.startswith("enumerate(DataLoader)") for p in parents):
            cat = "data"
        elif "embedding" in name:
            cat = "other ops"
        elif vocab in dims or any("LinearCrossEntropy" in p or "ChunkedLogProb" in p for p in parents):
            cat = "output layer"
        elif "attention" in name or any(len(s) == 4 and s[-1] == s[-2] and s[-1] > 1 for s in shapes):
            cat = "attention"
        elif "dropout" in name or "bernoulli" in name or (lora_r in dims and name in MATMULS):
            cat = "LoRA"
        elif inter in dims:
            cat = "MLP"
        elif name in MATMULS:
            cat = "attention"  # the remaining H x H products: q/k/v/o projections
        else:
            cat = "other ops"
        totals[cat] += ev.self_cpu_time_total / 1e6
    return totals


MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"}


def run_qwen_sft(spec: dict, out: Path) -> dict:
    from qwen_sft.config.parse import load_config
    from qwen_sft.train.recipe import train

    overrides = {"model": "tiny", "data": spec["data"], "output_dir": str(out), "overwrite": True, "resume": "never",
                 "dtype": spec["dtype"], "max_length": spec["max_length"], "packing": spec["mode"] == "packed",
                 "per_device_train_batch_size": spec["batch_size"], "num_train_epochs": 1, "seed": SEED,
                 "logging_steps": 10, "save_steps": 10 ** 6, "lora.r": 8, "lora.alpha": 16, "loss": "all",
                 "forecast": False}  # the comparison is training alone: no pre-flight micro-run in its RSS / wall
    if spec.get("chunk_size"):
        overrides["chunk_size"] = spec["chunk_size"]
    train(load_config(None, overrides))
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {"losses": [r["loss"] for r in records if "loss" in r],
            "train_runtime": next(r["train_runtime"] for r in records if "train_runtime" in r)}


def run_trl(spec: dict, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import Trainer
    from trl import SFTConfig, SFTTrainer

    from qwen_sft.config.schema import LORA_TARGETS_ALL
    from qwen_sft.model.load import load_tokenizer, resolve_model_path

    mode, bf16 = spec["mode"], spec["dtype"] == "bf16"
    model_path = resolve_model_path("tiny")
    dataset = Dataset.from_list([{"input_ids": ids} for ids in spec["token_ids"]])
    args = SFTConfig(
        output_dir=str(out), use_cpu=True, per_device_train_batch_size=spec["batch_size"], num_train_epochs=1,
        learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=10, logging_first_step=True, save_strategy="no", report_to="none", seed=SEED, data_seed=SEED,
        gradient_checkpointing=False,  # TRL's default is True; qwen-sft's is False: identical settings
        bf16=bf16,  # TRL's default is bf16 autocast; the fp32 runs are plain fp32 on both sides
        max_length=None if mode == "padding_free" else spec["max_length"],  # ids are already cut to max_length
        padding_free=mode == "padding_free", dataloader_pin_memory=False,
        model_init_kwargs={"dtype": torch.bfloat16 if bf16 else torch.float32},
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=list(LORA_TARGETS_ALL),
                      task_type="CAUSAL_LM")
    trainer_class = SFTTrainer
    if mode == "standard_loss":
        class StandardLossSFTTrainer(SFTTrainer):  # transformers' own loss over full logits
            compute_loss = Trainer.compute_loss
        trainer_class = StandardLossSFTTrainer
    trainer = trainer_class(model=model_path, args=args, train_dataset=dataset, peft_config=lora,
                            processing_class=load_tokenizer(model_path))
    result = trainer.train()
    return {"losses": [r["loss"] for r in trainer.state.log_history if "loss" in r],
            "train_runtime": result.metrics["train_runtime"]}


def worker(spec_path: str) -> None:
    """One contender in this (fresh) process; writes its measurements as JSON next to the spec."""
    start = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text())
    stats = instrument(spec)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        run = run_qwen_sft if spec["trainer"] == "qwen_sft" else run_trl
        result = run(spec, Path(tmp) / "out")
    result.update(stats, wall=time.perf_counter() - start, peak_rss_mb=peak_rss_mb())
    Path(spec["result"]).write_text(json.dumps(result))


def wait_for_idle(max_wait: float, sample: float = 3.0, threshold: float = 0.25) -> float:
    """Wait (up to max_wait s) until other processes use < threshold cores; return the last sample's load."""
    deadline = time.perf_counter() + max_wait
    while True:
        busy = cpu_busy_seconds()
        time.sleep(sample)
        load = (cpu_busy_seconds() - busy) / sample
        if load < threshold or time.perf_counter() >= deadline:
            return load


def peak_rss_mb() -> float:
    """This process's peak resident set size. VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so a
    worker's ru_maxrss starts at its parent's size at the fork (here, the driver's, after its matmul buffers)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError):  # no procfs: ru_maxrss is an upper bound
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_contender(name: str, dtype: str, common: dict, workdir: Path, timeout: float) -> dict:
    trainer, mode = CONTENDERS[name]
    if common.get("wait_idle"):
        wait_for_idle(common["wait_idle"])
    spec = {**common, "trainer": trainer, "mode": mode, "dtype": dtype,
            "result": str(workdir / f"{trainer}-{mode}-{dtype}.json")}
    spec_path = workdir / f"{trainer}-{mode}-{dtype}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "QWEN_SFT_CACHE": os.environ.get("QWEN_SFT_CACHE", str(ROOT / ".cache")),
           "PYTHONPATH": os.pathsep.join([common.get("src") or str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    print(f"  {name} ({dtype}) ...", end=" ", flush=True)
    busy_before, children_before = cpu_busy_seconds(), children_cpu_seconds()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", str(spec_path)], env=env, timeout=timeout,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print("FAILED")
        raise SystemExit(f"{name} ({dtype}) failed:\n{proc.stderr[-3000:]}")
    elapsed = time.perf_counter() - start
    # CPU time other processes used meanwhile, in cores: > ~0.2 means the numbers are contended
    other = (cpu_busy_seconds() - busy_before) - (children_cpu_seconds() - children_before)
    result = json.loads(Path(spec["result"]).read_text())
    result["other_load"] = max(other, 0.0) / elapsed
    print(f"{result['trained'] / result['train_runtime']:.0f} trained tokens/s, {result['peak_rss_mb']:.0f} MB")
    return {"name": name, "dtype": dtype, **result}


def cpu_busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (/proc/stat; 0 where it does not exist)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------------ table
def table(rows: list[dict], peaks: dict, config, lengths: list[int]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        same = [r for r in rows if r["dtype"] == row["dtype"] and r["name"].startswith("TRL")]
        best = max((r["tokens_s"] for r in same), default=None)
        leanest = min((r["peak_rss_mb"] for r in same), default=None)
        useful = useful_flops(config, row["non_pad"], row["trained"], lengths)
        mfu = useful / row["train_runtime"] / 1e9 / peaks[row["dtype"]]["output_layer"]
        cells = [row["name"], row["dtype"], row["steps"], row["trained"],
                 f"{100 * (1 - row['non_pad'] / row['positions']):.0f}", f"{row['tokens_s']:.0f}",
                 f"{row['train_runtime']:.1f}", f"{row['wall']:.1f}", f"{row['peak_rss_mb']:.0f}",
                 f"{row['losses'][-1]:.4f}", f"{100 * mfu:.0f}%",
                 f"{row['tokens_s'] / best:.2f}x" if best else "-",
                 f"{row['peak_rss_mb'] / leanest:.2f}x" if leanest else "-", f"{row['other_load']:.2f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def profile_table(rows: list[dict]) -> str:
    """Where each contender's time goes. The profiler slows the tiny ops of a step (qwen-sft's vocabulary tiles
    most), so the categories are shares of the profiled op time, applied to the unprofiled forward+backward
    time; the optimizer/data/logging time comes from the unprofiled steps too (train_runtime - forward+backward)."""
    ops = [c for c in CATEGORIES if c not in ("optimizer", "data", "python/framework")]
    lines = ["| contender | dtype | ms/step | fwd+bwd ms | " + " | ".join(ops) + " | optimizer+data+logging |",
             "|" + "---|" * (len(ops) + 5)]
    for row in rows:
        prof = row.get("profile")
        if not prof:
            continue
        steps = row["steps"] - row["profile_steps"]  # the unprofiled ones
        profiled_wall = prof["wall"]
        unprofiled_in_step = row["step_seconds"] - row["in_step_profiled"]
        in_step = unprofiled_in_step / steps
        outside = (row["train_runtime"] - profiled_wall - unprofiled_in_step) / steps
        total_ops, step = sum(prof.get(c, 0.0) for c in ops), in_step + outside
        shares = [in_step * prof.get(c, 0.0) / total_ops for c in ops]
        cells = [f"{1000 * t:.0f} ({100 * t / step:.0f}%)" for t in shares]
        lines.append(f"| {row['name']} | {row['dtype']} | {1000 * step:.0f} | {1000 * in_step:.0f} | "
                     + " | ".join(cells) + f" | {1000 * outside:.0f} ({100 * outside / step:.0f}%) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dtypes", help="comma-separated: fp32, bf16 (default both; --smoke: fp32)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated names from: "
                        + ", ".join(CONTENDERS))
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="markdown table written here")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per contender")
    parser.add_argument("--chunk-size", type=int, help="qwen-sft's chunk_size (default: its config default)")
    parser.add_argument("--src", help="import qwen_sft from this directory instead of ./src (e.g. `git archive` "
                        "of an older commit): before/after comparisons")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="S", help="before each contender, wait up "
                        "to S seconds for the other processes on this machine to go quiet (shared machines)")
    parser.add_argument("--smoke", action="store_true", help="8 examples, max length 64 (a quick does-it-run check)")
    parser.add_argument("--profile", metavar="WARMUP,STEPS", help="also profile STEPS iterations after WARMUP "
                        "ones (slows those steps: use for the breakdown, not for the throughput table)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if args.smoke:
        args.examples, args.max_length = 8, 64
    args.dtypes = args.dtypes or ("fp32" if args.smoke else "fp32,bf16")
    os.environ.setdefault("QWEN_SFT_CACHE", str(ROOT / ".cache"))
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    from transformers import AutoConfig

    from qwen_sft.config.schema import TrainArgs
    from qwen_sft.model.load import resolve_model_path

    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; choose from {list(CONTENDERS)}")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    config = AutoConfig.from_pretrained(resolve_model_path("tiny"))  # builds `tiny` once, before any worker
    with tempfile.TemporaryDirectory(prefix="train-vs-trl-") as tmp:
        workdir = Path(tmp)
        data = make_dataset(workdir / "advertise_gen_varied.jsonl", args.examples)
        token_ids = tokenized(data, args.max_length)
        lengths = [len(ids) for ids in token_ids]
        print(f"{len(lengths)} examples, {sum(lengths)} tokens (min {min(lengths)}, "
              f"mean {sum(lengths) / len(lengths):.0f},"
              f" max {max(lengths)}); {torch.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}")
        common = {"data": str(data), "token_ids": token_ids, "max_length": args.max_length,
                  "batch_size": args.batch_size, "wait_idle": args.wait_idle, "chunk_size": args.chunk_size,
                  "src": str(Path(args.src).resolve()) if args.src else None,
                  "profile": [int(x) for x in args.profile.split(",")] if args.profile else None}
        peaks, rows = {}, []
        for dtype in dtypes:
            if args.wait_idle:
                wait_for_idle(args.wait_idle)
            peaks[dtype] = matmul_peak(dtype, rows=256 if args.smoke else 1024)
            print(f"{dtype} matmul peak, GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks[dtype].items()))
            for name in names:
                row = run_contender(name, dtype, common, workdir, args.timeout)
                row["tokens_s"] = row["trained"] / row["train_runtime"]
                rows.append(row)
    flops = flops_per_token(config, 8)
    text = table(rows, peaks, config, lengths)
    per_token = sum(flops.values())
    header = (f"{len(lengths)} examples ({sum(lengths)} tokens), batch {args.batch_size}, "
              f"max length {args.max_length}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}, qwen-sft chunk_size "
              f"{args.chunk_size or TrainArgs().chunk_size}. Model FLOPs per token: "
              f"{per_token / 1e6:.1f} M ({100 * flops['output_layer'] / per_token:.0f}% output layer). Matmul peak "
              "(GFLOP/s, output-layer shape fwd+input-grad / square 2048): "
              + ", ".join(f"{d} {p['output_layer']:.0f} / {p['square_2048']:.0f}" for d, p in peaks.items()))
    if args.profile:
        text += ("\n\nWhere the time goes (ms per optimizer step; see profile_table):\n\n"
                 + profile_table(rows))
    print("\n" + header + "\n\n" + text)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(header + "\n\n" + text + "\n", encoding="utf-8")
    print(f"\ntable written to {args.table}")


if __name__ == "__main__":
    main()
