"""What a run writes as it trains: `train_log.jsonl` (one JSON object per logging step) and `loss.png`."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from qwen_sft.utils.files import read_jsonl, write_jsonl

LOG_FILE, PLOT_FILE = "train_log.jsonl", "loss.png"
PLOT_EVERY_S, PLOT_S = 10.0, 0.1  # redrawing costs ~0.1 s: at most this often while training, always at the end
FIRST_PLOT_S = 0.6  # the first loss.png also imports matplotlib and builds the figure (measured: 0.5-0.65 s)


class TrainLog:
    """Appends log records and redraws the loss curve (throttled) for one output dir."""

    def __init__(self, output_dir: str | Path):
        self.path, self.plot_path = Path(output_dir) / LOG_FILE, Path(output_dir) / PLOT_FILE
        self._last_plot = 0.0

    def append(self, step: int, epoch: float | None, logs: dict) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in logs.items()}, "epoch": round(epoch or 0.0, 4)}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if ("loss" in logs or "eval_loss" in logs) and time.monotonic() - self._last_plot > PLOT_EVERY_S:
            self.plot()

    def plot(self) -> None:
        plot_loss(self.path, self.plot_path)
        self._last_plot = time.monotonic()

    def trim(self, step: int) -> int:
        """Drop records after `step` (a resumed run redoes them); return the trained tokens counted by then."""
        kept = [r for r in read_jsonl(self.path) if r["step"] <= step]
        if self.path.exists():
            write_jsonl(self.path, kept)  # renamed into place: a kill never leaves half a log
        return max((r.get("tokens", 0) for r in kept), default=0)


def plot_loss(log_path: Path, png_path: Path) -> None:
    """Training loss (raw and smoothed) and eval loss against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(log_path)
    train_points = [(r["step"], r["loss"]) for r in records if "loss" in r and math.isfinite(r["loss"])]
    eval_points = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train_points:
        return
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps, losses = zip(*train_points)
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, label="train loss")
    if len(losses) >= 10:  # smoothing a handful of points only hides them
        ax.plot(steps, ema(losses), color="tab:blue", label="train loss (smoothed)")
    if eval_points:
        ax.plot(*zip(*eval_points), "o-", color="tab:orange", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over trained tokens)")
    ax.set_title(f"{png_path.parent.name}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)  # a viewer never sees a half-written image


def ema(values, weight: float = 0.6) -> list[float]:
    """Exponential moving average, debiased as TensorBoard does: starting from 0 and dividing by the weight
    given so far, instead of from the first value, which makes the early, steep part of a curve lag."""
    smoothed, current = [], 0.0
    for i, v in enumerate(values, start=1):
        current = weight * current + (1 - weight) * v
        smoothed.append(current / (1 - weight ** i))
    return smoothed


def _plain(value):
    return value.item() if hasattr(value, "item") else value
