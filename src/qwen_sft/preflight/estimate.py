"""The forecast of a run, made, shown and judged: `check`'s (a micro-run on a model loaded for it alone) and
`train`'s (its own first steps), and, at the end of `train`, the forecast beside what was measured.

The formulas are forecast.py's, the measurements measure.py's; here they meet a `Report`: the forecast lines,
the memory verdict (`forecast.memory`: FAIL when the predicted peak does not fit), check.json.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path

import torch

from qwen_sft.config.dtype import resolve_dtype
from qwen_sft.config.schema import Config
from qwen_sft.data.collate import make_collator
from qwen_sft.model.attention import attention_implementation
from qwen_sft.model.training import load_for_training
from qwen_sft.preflight.forecast import forecast
from qwen_sft.preflight.measure import micro_batches, micro_run, model_measurements, step_measurements
from qwen_sft.preflight.report import FAIL, PASS, WARN, Finding, Report, forecast_lines
from qwen_sft.preflight.step_timer import StepTimer
from qwen_sft.utils.errors import UserError
from qwen_sft.utils.files import read_jsonl
from qwen_sft.utils.machine import current_rss, peak_memory

log = logging.getLogger(__name__)


def forecast_for_check(cfg: Config, model_path: str, pad_id: int, examples: list, eval_examples: list | None,
                       resume_step: int) -> dict:
    """`qwen-sft check`'s forecast: the training model loaded as `train` loads it, measured, a few steps run on the
    user's data, then freed."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = resolve_dtype(cfg.model.dtype, allow_fp16=cfg.model.allow_fp16)
    base_bytes, started = current_rss(), time.perf_counter()
    model = load_for_training(model_path, cfg, dtype).to(device)
    measured = model_measurements(model, cfg, dtype, model_path, Path(cfg.train.output_dir),
                                  time.perf_counter() - started)
    attention = attention_implementation(cfg.train.attention, cfg.data.packing, dtype, device)
    collator = make_collator(cfg.data.packing, pad_id, attention)
    measured.update(micro_run(model, cfg, dtype, micro_batches(examples, cfg), collator))
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return forecast(measured, cfg, examples, eval_examples, resume_step, base_bytes)


def forecast_training(report: Report, cfg: Config, model, model_path: str, load_s: float, base_bytes: int,
                      examples: list, eval_examples: list | None, resume_step: int) -> StepTimer:
    """`train`'s forecast: the model as it was loaded for training, measured now; the time from the run's own first
    steps, which the returned `StepTimer` (a Trainer callback) times. When they are done: the forecast lines, the
    memory verdict and check.json.

    Raises (from the callback, a single-process run only):
        UserError: the predicted peak does not fit in memory (unless `force: true`).
    """
    dtype = resolve_dtype(cfg.model.dtype, allow_fp16=cfg.model.allow_fp16)
    measured = model_measurements(model, cfg, dtype, model_path, Path(cfg.train.output_dir), load_s)

    def done(records: list, peak: int) -> None:
        measured.update(step_measurements(records, peak, cfg, measured["shape"]))
        report.forecast = forecast(measured, cfg, examples, eval_examples, resume_step, base_bytes)
        verdict = report.add(memory_finding(report.forecast["memory"]))
        print("\n".join([*forecast_lines(report.forecast), verdict.line()]), flush=True)
        report.write(cfg.train.output_dir)
        if verdict.status == FAIL and not cfg.train.force and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            raise UserError(f"forecast: {verdict.summary}; {verdict.fix} (or set force: true to train anyway)")

    return StepTimer(done)


def memory_finding(memory: dict) -> Finding:
    gib, peak, available = 2 ** 30, memory["peak"], memory["available"]
    text = f"predicted peak {peak / gib:.2f} GiB of {available / gib:.1f} GiB available ({memory['kind']})"
    fix = ("lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the batch), max_length or "
           "chunk_size, or set gradient_checkpointing: true")
    if available and peak > 1.1 * available:  # beyond the forecast's error: it will not fit
        return Finding("forecast.memory", FAIL, text + ": out of memory", fix=fix)
    if available and peak > 0.85 * available:
        return Finding("forecast.memory", WARN, text + ": tight", fix=fix)
    return Finding("forecast.memory", PASS, text)




def finish_check(report: Report, output_dir: str | Path, main: bool) -> None:
    """After `train`: the measured peak memory, wall time and tokens/s beside the forecast (log + check.json)."""
    if not main:
        return
    records = read_jsonl(Path(output_dir) / "train_log.jsonl")
    runtime = next((r["train_runtime"] for r in reversed(records) if "train_runtime" in r), None)
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]  # the first includes warming up
    report.measured = {"peak": peak_memory(), "wall_s": time.perf_counter() - report.clock, "loop_s": runtime,
                       "tokens_per_s": sum(rates) / len(rates) if rates else None}
    forecast = report.forecast
    if forecast:
        gib, m = 2 ** 30, report.measured
        predicted = (forecast["memory"]["peak"], forecast["time"]["wall_s"], forecast["time"]["tokens_per_s"])
        log.info("forecast vs measured: peak memory %.2f vs %.2f GiB (%+.0f%%), wall %.0f vs %.0f s (%+.0f%%), "
                 "%.0f vs %.0f trained tokens/s", predicted[0] / gib, m["peak"] / gib, _error(predicted[0], m["peak"]),
                 predicted[1], m["wall_s"], _error(predicted[1], m["wall_s"]), predicted[2], m["tokens_per_s"] or 0)
        report.measured["error"] = {"peak": _error(predicted[0], m["peak"]), "wall": _error(predicted[1], m["wall_s"])}
    report.write(output_dir)


def _error(predicted: float, measured: float) -> float:
    return round(100.0 * (predicted - measured) / measured, 1) if measured else 0.0
