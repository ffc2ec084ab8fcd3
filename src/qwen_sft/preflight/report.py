"""A check's result, the one-screen table `qwen-sft check` prints, and check.json.

Each check gives one `Finding`: PASS, WARN (worth a look; training goes on) or FAIL (the run would train a model
that misbehaves, or could not run: `train` stops unless `force: true`), with the number of examples concerned,
the first offending file:line and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
SEVERITY = {PASS: 0, WARN: 1, FAIL: 2}
CHECK_FILE = "check.json"


@dataclass
class Finding:
    name: str  # "group.check", e.g. prompt.terminator
    status: str  # PASS | WARN | FAIL
    summary: str  # what was found, one line
    count: int | None = None  # examples (or sampled examples) concerned
    total: int | None = None  # ... out of
    where: str | None = None  # the first offending file:line
    fix: str | None = None  # what to change (WARN / FAIL)

    def line(self, width: int = 24) -> str:
        concerned = f"{self.count}/{self.total}" if self.count is not None and self.total is not None else \
            str(self.count) if self.count is not None else "-"
        text = f"{self.status}  {self.name:<{width}} {concerned:>11}  {self.summary}"
        if self.where:
            text += f" (first: {self.where})"
        if self.fix and self.status != PASS:
            text += f" -> fix: {self.fix}"
        return text


@dataclass
class Report:
    """Every finding of one check run, plus the forecast and (after `train`) what was measured."""

    header: str
    findings: list[Finding] = field(default_factory=list)
    forecast: dict | None = None
    measured: dict | None = None
    clock: float = 0.0  # perf_counter() when training proper started (the forecast's time window)

    def add(self, finding: Finding) -> Finding:
        self.findings.append(finding)
        return finding

    @property
    def status(self) -> str:
        return max((f.status for f in self.findings), key=SEVERITY.get, default=PASS)

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.status == FAIL]

    def table(self) -> str:
        width = max((len(f.name) for f in self.findings), default=10)
        lines = [self.header, *(f.line(width) for f in self.findings)]
        if self.forecast:
            lines += forecast_lines(self.forecast)
        counts = {s: sum(f.status == s for f in self.findings) for s in SEVERITY}
        lines.append(f"result: {self.status} ({counts[PASS]} PASS, {counts[WARN]} WARN, {counts[FAIL]} FAIL)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"status": self.status, "header": self.header, "checks": [asdict(f) for f in self.findings],
                "forecast": self.forecast, "measured": self.measured}

    def write(self, directory: str | Path) -> Path:
        """check.json in `directory`, written under a temporary name and renamed."""
        path = Path(directory) / CHECK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def forecast_lines(forecast: dict) -> list[str]:
    """The forecast as two lines: where the memory goes, and how long the run takes."""
    gib = 2 ** 30
    memory, parts, step = forecast["memory"], forecast["memory"]["parts"], forecast["memory"]["step"]
    time_ = forecast["time"]
    memory_line = (
        f"forecast  memory ({memory['kind']}): peak {memory['peak'] / gib:.2f} GiB = base {parts['base'] / gib:.2f} "
        f"+ weights {parts['weights'] / gib:.2f} + optimizer {parts['optimizer'] / gib:.2f} + step "
        f"{parts['step'] / gib:.2f} (activations {step['activations'] / gib:.2f} + loss {step['loss'] / gib:.2f}, or "
        f"gradients {step['gradients'] / gib:.2f}) x allocator {memory['allocator_factor']}; activations "
        f"{memory['activations'] / gib:.2f} GiB without / {memory['activations_checkpointed'] / gib:.2f} with "
        "gradient checkpointing")
    time_line = (
        f"forecast  time ({forecast['device']}, {time_['micro_steps']}-step micro-run): {time_['tokens_per_s']:.0f} "
        f"trained tokens/s, {time_['steps']} steps, {time_['wall_s'] / 60:.1f} min wall "
        f"(model load {time_['parts']['load']:.0f} s, loop {time_['parts']['loop']:.0f} s)")
    return [memory_line, time_line]
