"""What this process uses and this machine offers: resident and peak memory, free memory, disk write speed.

The forecast (`preflight/measure.py`) measures with these, and `train` reports its measured peak with `peak_memory`.
On a GPU the memory figures are the device's (bytes allocated by PyTorch); on CPU the process's resident set.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

import torch

WRITE_PROBE_BYTES = 128 << 20


def current_rss() -> int:
    return _status_bytes("VmRSS") or 0


def peak_memory() -> int:
    """The process's peak: device memory allocated on a GPU, else resident memory (VmHWM, not ru_maxrss, which
    Linux carries over an exec)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(key: str) -> int | None:
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
    except (OSError, StopIteration, ValueError):
        return None


class PeakWatch:
    """The peak memory while the `with` block runs: on a GPU the allocator's own peak; on CPU the resident set,
    sampled every few ms, and VmHWM when the block set a new process peak (then exact)."""

    def __init__(self, interval: float = 0.003):
        self.interval, self.peak, self._running = interval, 0, False

    def __enter__(self) -> PeakWatch:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            return self
        self._before = peak_memory()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, current_rss())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        if torch.cuda.is_available():
            self.peak = torch.cuda.max_memory_allocated()
            return
        self._running = False
        self._thread.join()
        after = peak_memory()
        if after > self._before:  # this block set the process's peak: VmHWM is its exact value
            self.peak = max(self.peak, after)


def available_memory(device: str) -> int:
    """Device memory on a GPU; on CPU what the kernel counts as available (MemAvailable)."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[1]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


def write_speed(directory: Path, tensors: list[torch.Tensor]) -> float:
    """Bytes/s of a checkpoint write where checkpoints go: `tensors` (up to WRITE_PROBE_BYTES of them) serialised
    with torch.save and fsynced, as the Trainer writes optimizer state and weights (serialising costs ~3x the raw
    disk write on CPU, measured), so the rate holds for the real checkpoint's bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".write-speed-{os.getpid()}"
    sample, size = {}, 0
    for i, tensor in enumerate(tensors):
        if size and size + tensor.nbytes > WRITE_PROBE_BYTES:
            break
        sample[str(i)], size = tensor.detach().cpu(), size + tensor.nbytes
    if size < 1 << 20:  # too little to time: a raw buffer of the probe size instead
        sample, size = {"raw": torch.empty(WRITE_PROBE_BYTES, dtype=torch.uint8)}, WRITE_PROBE_BYTES
    try:
        started = time.perf_counter()
        with open(probe, "wb") as f:
            torch.save(sample, f)
            f.flush()
            os.fsync(f.fileno())
        return size / max(time.perf_counter() - started, 1e-6)
    except OSError:
        return 200e6  # unknown: a plain disk's order of magnitude
    finally:
        probe.unlink(missing_ok=True)
