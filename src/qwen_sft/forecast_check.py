"""Forecast vs measured in one process: `bench/gpu.sh` (or anyone) can check the forecast on its own machine.

On a GPU the figures are device memory allocated (the peak counter is reset between forecast and run) and
wall time, so one process gives an honest comparison. On CPU a process's resident peak cannot be reset, so
tests/test_forecast.py runs `check` and `train` in separate processes instead.
"""

from __future__ import annotations

import gc
import json

import torch

from qwen_sft.arguments import load_config
from qwen_sft.checks.report import CHECK_FILE
from qwen_sft.checks.run import check
from qwen_sft.train import train


def forecast_vs_measured(values: dict) -> dict:
    """Forecast the run `values` (train config keys) describes, then run it and measure.

    Returns:
        {"forecast": {"peak", "wall_s", "tokens_per_s"}, "measured": {same}, "error_percent": {"peak", "wall_s"}}.

    Raises:
        UserError: as `train` does.
    """
    report = check(load_config(None, {**values, "forecast": True, "dry_run": False}))
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = load_config(None, {**values, "forecast": False, "dry_run": False, "force": True})
    output_dir = train(cfg)
    measured = json.loads((output_dir / CHECK_FILE).read_text(encoding="utf-8"))["measured"]
    predicted = {"peak": report.forecast["memory"]["peak"], "wall_s": report.forecast["time"]["wall_s"],
                 "tokens_per_s": report.forecast["time"]["tokens_per_s"]}
    got = {"peak": measured["peak"], "wall_s": measured["wall_s"], "tokens_per_s": measured["tokens_per_s"]}
    return {"forecast": predicted, "measured": got,
            "error_percent": {k: round(100 * (predicted[k] - got[k]) / got[k], 1) for k in ("peak", "wall_s")}}
