"""`train`'s forecast is timed on its own first steps: no micro-run, no second model load (preflight/measure.py).

`StepTimer` is a Trainer callback that, for one warm-up and `measure.TIMED_STEPS` optimizer steps, times the
forward and backward passes (step begin → before the optimizer) and the optimizer's step, and takes from the
trainer the shapes of the micro-batches it ran (`batch`) and the time it spent fetching them (`fetched`). The
device is synchronised at these points during those steps only; afterwards the callback does nothing. When the
steps are done it hands the `StepRecord`s and the peak memory over them to `on_done`.
"""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback

from qwen_sft.preflight.measure import TIMED_STEPS, StepRecord
from qwen_sft.utils.machine import PeakWatch


class StepTimer(TrainerCallback):
    def __init__(self, on_done, steps: int = TIMED_STEPS + 1):
        self.on_done, self.steps = on_done, steps
        self.records: list[StepRecord] = []
        self.active = False
        self._fetch_s = 0.0  # of the micro-batches fetched for the step about to start
        self._watch = PeakWatch()
        self._begin = self._optimizer = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.active = True
        self._watch.__enter__()

    def fetched(self, seconds: float) -> None:
        """The trainer fetched (collated) the next step's micro-batches in `seconds`."""
        if self.active:
            self._fetch_s = seconds

    def batch(self, shape: dict) -> None:
        """The trainer runs a training micro-batch of this shape (`measure.batch_shape`)."""
        if self.active:
            if not self.records or self.records[-1].optimizer_s:
                self.records.append(StepRecord(collate_s=self._fetch_s))
            self.records[-1].batches.append(shape)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.active:
            self._begin = _now()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.active and self.records:
            self._optimizer = _now()
            self.records[-1].compute_s = self._optimizer - self._begin

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.active and self.records:
            self.records[-1].optimizer_s = max(_now() - self._optimizer, 1e-9)

    def on_step_end(self, args, state, control, **kwargs):
        if self.active and len(self.records) >= self.steps:
            self._finish()

    def on_train_end(self, args, state, control, **kwargs):
        if self.active and len(self.records) >= 2:  # a run shorter than the timed steps: what it gave
            self._finish()
        self.active = False

    def _finish(self) -> None:
        self.active = False
        self._watch.__exit__(None, None, None)
        self.on_done(self.records, self._watch.peak)


def _now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()
