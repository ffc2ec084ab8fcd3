"""qwen-sft vs TRL's SFTTrainer on one GPU (run through bench/gpu.sh, which checks the environment first).

    python bench/gpu_bench.py                 # Qwen1.5-0.5B and -7B shapes, random init, bf16, LoRA, 2048-token rows
    python bench/gpu_bench.py --smoke         # CPU, tiny shapes: checks that everything runs (tests)

Each (model, trainer) pair runs in a fresh subprocess with a timeout: the model is built from its config
(no weights: random init, directly on the GPU in bf16), LoRA r=8 alpha=16 dropout 0.05 on all linear
layers, packing on (padding-free rows of up to --seq-len tokens, batch 1 row), the same random token data
for both. Attention: TRL "sdpa" (a block-diagonal mask built from position_ids restarts); qwen-sft what its
`attention: auto` picks, on CUDA varlen (attention.py: per-example flash kernel, no mask). After --warmup
optimizer steps (kernel autotuning, Triton JIT), --steps steps are timed (synchronised), then --profile-steps
more are profiled (top ops by GPU time to gpu_profile_<model>_<trainer>.txt beside the table), then
--sync-steps more run under torch.cuda.set_sync_debug_mode("warn"): the warnings it raises are the host-device
syncs per optimizer step (GPU only; the benchmark's own bookkeeping is not counted). MFU = model FLOPs per
second (bench/flops.py: frozen weights 4*in*out per token, LoRA 6*in*out, causal attention per packed example)
/ a bf16 matmul peak measured in this run, and / the 989 TFLOP/s H100/H200 dense bf16 datasheet figure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flops import LORA_TARGETS, useful_flops  # bench/ is on sys.path: scripts here are run as `python bench/NAME.py`

ROOT = Path(__file__).resolve().parents[1]

DATASHEET_TFLOPS = 989.0  # H100/H200 SXM dense bf16
QWEN = dict(max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6, hidden_act="silu",
            use_sliding_window=False, bos_token_id=0, eos_token_id=1, pad_token_id=0)
MODELS = {  # Qwen1.5 shapes (config.json of Qwen/Qwen1.5-0.5B and Qwen/Qwen1.5-7B)
    "Qwen1.5-0.5B": dict(vocab_size=151936, hidden_size=1024, intermediate_size=2816, num_hidden_layers=24,
                         num_attention_heads=16, num_key_value_heads=16, tie_word_embeddings=True),
    "Qwen1.5-7B": dict(vocab_size=151936, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
}
SMOKE_MODELS = {
    "tiny-tied": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
    "tiny-untied": dict(vocab_size=1000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
}
TRAINERS = ("qwen-sft", "TRL")
COLUMNS = ["model", "trainer", "tokens/s", "ms/step", "MFU (measured peak)", f"MFU ({DATASHEET_TFLOPS:.0f} TF)",
           "peak GPU mem GB", "final loss", "tokens/s vs TRL", "syncs/step"]


def log(msg: str) -> None:
    print(f"[gpu_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ peak
def matmul_peak_tflops(device: str, size: int, repeats: int) -> float:
    """Best bf16 matmul TFLOP/s of a size^3 product on `device` (synchronised)."""
    import torch

    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * size ** 3 / best / 1e12


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ worker
def make_examples(n: int, seq_len: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Random token ids, lengths uniform in [seq_len/16, seq_len/2]: several examples per packed row."""
    rng = random.Random(seed)
    return [[rng.randrange(2, vocab) for _ in range(rng.randint(max(seq_len // 16, 2), seq_len // 2))]
            for _ in range(n)]


def build_model(spec: dict):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**QWEN, **spec["shape"], attn_implementation="sdpa", use_cache=False)
    dtype = torch.bfloat16
    with torch.device(spec["device"]):  # parameters are created (and initialised) on the GPU, in bf16
        model = Qwen2ForCausalLM._from_config(config, dtype=dtype)
    return model


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")


def step_timer(spec: dict, stats: dict):
    """A callback that synchronises and records the time at every optimizer step's end; after the timed steps it
    profiles `profile_steps` steps, then counts the host-device syncs of `sync_steps` more."""
    from transformers import TrainerCallback

    first, last = spec["warmup"] + spec["steps"], spec["warmup"] + spec["steps"] + spec.get("profile_steps", 0)
    counted = last + spec.get("sync_steps", 0)
    cuda = spec["device"] == "cuda"

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == counted and "sync_counter" in stats:  # before our own synchronize below
                stats["syncs_per_step"] = stats.pop("sync_counter").stop() / spec["sync_steps"]
            sync(spec["device"])
            stats["step_end"].append(time.perf_counter())
            if state.global_step == first and last > first:  # after the timed steps: profile a few more
                stats["profiler"] = start_profiler(spec["device"])
            elif state.global_step == last and stats.get("profiler") is not None:
                write_profile(stats.pop("profiler"), spec)
            if state.global_step == last and counted > last and cuda:  # then count the syncs of a few more
                stats["sync_counter"] = SyncCounter().start()

    return StepTimer()


class SyncCounter:
    """Counts host-device syncs: torch.cuda.set_sync_debug_mode("warn") raises a warning at each synchronising CUDA
    call (.item(), a bool of a CUDA tensor, nonzero, a device-to-host copy...), recorded here instead of printed."""

    def start(self) -> SyncCounter:
        import warnings

        import torch

        self._catcher = warnings.catch_warnings(record=True)
        self._records = self._catcher.__enter__()
        warnings.simplefilter("always")  # every sync, not the first per call site
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def stop(self) -> int:
        import torch

        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)
        return sum("synchroniz" in str(w.message) for w in self._records)


@contextlib.contextmanager
def syncs_not_counted():
    """The benchmark's own bookkeeping reads device values: those syncs are not the trainer's."""
    import torch

    mode = torch.cuda.get_sync_debug_mode() if torch.cuda.is_available() else 0
    if mode:
        torch.cuda.set_sync_debug_mode("default")
    try:
        yield
    finally:
        if mode:
            torch.cuda.set_sync_debug_mode(mode)


def start_profiler(device: str):
    """A running torch.profiler (CPU + CUDA), or None if it cannot start (the benchmark goes on without it)."""
    try:
        import torch.profiler

        activities = [torch.profiler.ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        profiler = torch.profiler.profile(activities=activities)
        profiler.start()
        return profiler
    except Exception as err:
        log(f"profiler did not start: {err}")
        return None


def write_profile(profiler, spec: dict) -> None:
    """The top ops of the profiled steps, by self device time (GPU) or self CPU time, to spec["profile_file"]."""
    try:
        profiler.stop()
        key = "self_cuda_time_total" if spec["device"] == "cuda" else "self_cpu_time_total"
        table = profiler.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60)
        Path(spec["profile_file"]).write_text(f"{spec['profile_steps']} steps after the timed ones\n{table}\n")
    except Exception as err:
        log(f"profile not written: {err}")


def count_steps(stats: dict) -> None:
    """Patch Trainer.training_step to record each micro-batch's tokens, trained tokens and example lengths."""
    from transformers import Trainer

    original = Trainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        with syncs_not_counted():
            labels, positions = inputs["labels"], inputs.get("position_ids")
            if positions is not None:  # packed: example lengths from the position_ids restarts
                starts = (positions[0] == 0).nonzero().flatten().tolist() + [positions.shape[1]]
                lengths = [b - a for a, b in zip(starts, starts[1:])]
            else:
                lengths = [labels.shape[1]] * labels.shape[0]
            stats["steps"].append({"tokens": labels.numel(), "trained": int((labels[:, 1:] != -100).sum()),
                                   "lengths": lengths})
        return original(self, model, inputs, *args, **kwargs)

    Trainer.training_step = training_step


def run_qwen_sft(spec: dict, model, examples, out: Path, callback):
    from peft import get_peft_model
    from transformers import TrainingArguments

    from qwen_sft.config.schema import TrainArgs
    from qwen_sft.data.collate import VARLEN, PackedCollator, pack_examples
    from qwen_sft.model.attention import attention_implementation
    from qwen_sft.model.training import use_chunked_loss
    from qwen_sft.train.trainer import SFTTrainer

    if importlib.util.find_spec("matplotlib") is None:  # qwen-sft redraws loss.png at each logging step, after the
        import qwen_sft.runs.train_log  # timed steps, but it needs matplotlib

        qwen_sft.runs.train_log.plot_loss = lambda *args, **kwargs: None
    # what qwen_sft.model.training.load_for_training does: the attention `auto` picks (varlen on CUDA), chunked loss,
    # then fp32 LoRA adapters
    attention = attention_implementation(TrainArgs().attention, True, model.dtype, spec["device"])
    if attention:
        model.set_attn_implementation(attention)
    use_chunked_loss(model, TrainArgs().chunk_size)
    model = get_peft_model(model, lora_config(), autocast_adapter_dtype=True)
    bins = pack_examples([{"input_ids": ids, "labels": ids} for ids in examples], spec["seq_len"])
    args = TrainingArguments(
        output_dir=str(out), use_cpu=spec["device"] == "cpu", per_device_train_batch_size=1,
        max_steps=total_steps(spec), learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0.03,
        logging_steps=spec["warmup"] + spec["steps"], save_strategy="no", report_to="none", seed=0, data_seed=0,
        remove_unused_columns=False, disable_tqdm=True, dataloader_pin_memory=spec["device"] == "cuda",
        logging_nan_inf_filter=False)  # as qwen_sft.train_args: the filter syncs with the device every step
    collator = PackedCollator(pad_id=0, varlen=attention == VARLEN)
    trainer = SFTTrainer(model=model, args=args, train_dataset=bins, data_collator=collator, callbacks=[callback])
    trainer.train()
    return [r["loss"] for r in trainer.state.log_history if "loss" in r]


def run_trl(spec: dict, model, examples, out: Path, callback):
    from datasets import Dataset
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    from trl import SFTConfig, SFTTrainer

    # the data is token ids already; TRL only needs a tokenizer for its pad token
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, "<unk>")),
                                        pad_token="<pad>", eos_token="<unk>")
    args = SFTConfig(
        output_dir=str(out), use_cpu=spec["device"] == "cpu", per_device_train_batch_size=1,
        max_steps=total_steps(spec), learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0.03,
        logging_steps=spec["warmup"] + spec["steps"], save_strategy="no", report_to="none", seed=0, data_seed=0,
        disable_tqdm=True, dataloader_pin_memory=spec["device"] == "cuda",
        packing=True, max_length=spec["seq_len"],  # BFD packing, padding-free rows
        gradient_checkpointing=False, bf16=True)  # TRL's defaults are checkpointing on, bf16 autocast on
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"input_ids": e} for e in examples]),
                         peft_config=lora_config(), processing_class=tokenizer, callbacks=[callback])
    trainer.train()
    return [r["loss"] for r in trainer.state.log_history if "loss" in r]


def total_steps(spec: dict) -> int:
    return spec["warmup"] + spec["steps"] + spec["profile_steps"] + spec["sync_steps"]


def worker(spec_path: str) -> None:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    if spec["warmup"] < 1:
        raise SystemExit("--warmup must be >= 1 (the timed window starts at the end of a step)")
    stats = {"steps": [], "step_end": []}
    count_steps(stats)
    start = time.perf_counter()
    model = build_model(spec)
    init_s = time.perf_counter() - start
    examples = make_examples(spec["examples"], spec["seq_len"], spec["shape"]["vocab_size"])
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        run = run_qwen_sft if spec["trainer"] == "qwen-sft" else run_trl
        losses = run(spec, model, examples, Path(tmp), step_timer(spec, stats))
    warmup, steps = spec["warmup"], spec["steps"]
    timed = stats["steps"][warmup:warmup + steps]
    seconds = stats["step_end"][warmup + steps - 1] - stats["step_end"][warmup - 1]
    cuda = spec["device"] == "cuda"
    result = {"seconds": seconds, "steps": len(timed), "tokens": sum(s["tokens"] for s in timed),
              "trained": sum(s["trained"] for s in timed), "lengths": [n for s in timed for n in s["lengths"]],
              "losses": losses, "init_s": init_s, "syncs_per_step": stats.get("syncs_per_step"),
              "peak_mem_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None}
    Path(spec["result"]).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------ driver
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, few steps (checks it runs)")
    parser.add_argument("--models", default=None, help="comma-separated, from: " + ", ".join(MODELS))
    parser.add_argument("--seq-len", type=int, default=None, help="packed row length (default 2048; smoke 128)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5; smoke 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20; smoke 2)")
    parser.add_argument("--profile-steps", type=int, default=None, help="profile this many steps after the timed "
                        "ones; top ops to gpu_profile_<model>_<trainer>.txt beside the table (default 2; smoke 1)")
    parser.add_argument("--sync-steps", type=int, default=None, help="count host-device syncs over this many steps "
                        "after the profiled ones (GPU only; default 2; smoke 1)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per contender (default 110; smoke 90)")
    parser.add_argument("--table", type=Path, default=None, help="markdown table file (default $OUT/gpu_table.md "
                        "when $OUT is set, else bench/gpu_table.md)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return 0
    smoke = args.smoke
    seq_len = args.seq_len or (128 if smoke else 2048)
    warmup = args.warmup if args.warmup is not None else (1 if smoke else 5)
    steps = args.steps or (2 if smoke else 20)
    timeout = args.timeout or (90 if smoke else 110)
    profile_steps = args.profile_steps if args.profile_steps is not None else (1 if smoke else 2)
    sync_steps = args.sync_steps if args.sync_steps is not None else (1 if smoke else 2)
    models = SMOKE_MODELS if smoke else MODELS
    if args.models:
        models = {name: models[name] for name in args.models.split(",")}
    table_path = args.table or (Path(os.environ["OUT"]) / "gpu_table.md" if os.environ.get("OUT")
                                else ROOT / "bench" / "gpu_table.md")

    import torch

    device = "cpu" if smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        log("CUDA is not available (use --smoke on a CPU machine)")
        return 2
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (smoke)"
    log(f"device {gpu}, torch {torch.__version__}, seq {seq_len}, warmup {warmup} + {steps} timed steps")
    peak = matmul_peak_tflops(device, 8192 if device == "cuda" else 256, 5 if device == "cuda" else 2)
    log(f"bf16 matmul peak (measured): {peak:.1f} TFLOP/s")
    # mean example length 9/32 seq: enough rows for every step
    examples = (warmup + steps + profile_steps + sync_steps + 2) * seq_len // (seq_len * 9 // 32) + 8
    header = (f"GPU benchmark: {gpu}, torch {torch.__version__}; random-init Qwen1.5 shapes, bf16, LoRA r=8 "
              f"(all linear layers), packed rows of {seq_len} tokens, batch 1 row, {warmup} warmup + "
              f"{steps} timed steps. bf16 matmul peak measured here: {peak:.1f} TFLOP/s. Attention: TRL sdpa (mask "
              f"from position_ids), qwen-sft `attention: auto` (varlen on CUDA). syncs/step: host-device syncs per "
              f"optimizer step, counted under torch.cuda.set_sync_debug_mode('warn') ({sync_steps} steps; GPU only).")
    table_path.parent.mkdir(parents=True, exist_ok=True)
    rows, failures, text = [], [], header
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        for model_name, shape in models.items():
            for trainer in TRAINERS:
                spec = {"trainer": trainer, "shape": shape, "device": device, "seq_len": seq_len, "warmup": warmup,
                        "steps": steps, "examples": examples, "result": f"{tmp}/{model_name}-{trainer}.json",
                        "profile_steps": profile_steps, "sync_steps": sync_steps,
                        "profile_file": str(table_path.parent / f"gpu_profile_{model_name}_{trainer}.txt")}
                spec_path = Path(tmp) / f"{model_name}-{trainer}.spec.json"
                spec_path.write_text(json.dumps(spec))
                log(f"{model_name} / {trainer} ...")
                start = time.perf_counter()
                try:
                    proc = subprocess.run([sys.executable, __file__, "--worker", str(spec_path)], timeout=timeout,
                                          capture_output=True, text=True)
                    error = None if proc.returncode == 0 else (proc.stderr or proc.stdout)[-2000:]
                except subprocess.TimeoutExpired:
                    error = f"timed out after {timeout:.0f} s"
                if error:
                    log(f"{model_name} / {trainer} FAILED ({time.perf_counter() - start:.0f} s):\n{error}")
                    failures.append(f"{model_name} / {trainer}")
                    rows.append({"model": model_name, "trainer": trainer, "failed": error.strip().splitlines()[-1]})
                else:
                    result = json.loads(Path(spec["result"]).read_text())
                    result.update(model=model_name, trainer=trainer, shape=shape)
                    rows.append(result)
                    log(f"{model_name} / {trainer}: {result['tokens'] / result['seconds']:.0f} tokens/s "
                        f"({time.perf_counter() - start:.0f} s in all)")
                text = header + "\n\n" + table(rows, peak, device) + "\n"
                table_path.write_text(text, encoding="utf-8")  # after every contender: a cut-off run keeps its rows
    print("\n" + text + f"\ntable written to {table_path}")
    if failures:
        log("FAILED: " + ", ".join(failures))
        return 1
    return 0


def table(rows: list[dict], peak: float, device: str) -> str:
    from transformers import Qwen2Config

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    trl = {r["model"]: r["tokens"] / r["seconds"] for r in rows if r["trainer"] == "TRL" and "failed" not in r}
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['model']} | {r['trainer']} | FAILED: {r['failed'][:80]} |" + " |" * (len(COLUMNS) - 3))
            continue
        config = Qwen2Config(**QWEN, **r["shape"])
        flops = useful_flops(config, r["tokens"], r["trained"], r["lengths"]) / r["seconds"] / 1e12
        tps = r["tokens"] / r["seconds"]
        cells = [r["model"], r["trainer"], f"{tps:.0f}", f"{1000 * r['seconds'] / r['steps']:.1f}",
                 f"{100 * flops / peak:.1f}%", f"{100 * flops / DATASHEET_TFLOPS:.1f}%" if device == "cuda" else "-",
                 f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] is not None else "-",
                 f"{r['losses'][-1]:.3f}" if r["losses"] else "-",
                 f"{tps / trl[r['model']]:.2f}x" if r["model"] in trl else "-",
                 f"{r['syncs_per_step']:g}" if r.get("syncs_per_step") is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
