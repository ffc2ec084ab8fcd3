"""kill -9 anywhere: between steps or while a checkpoint is being written; `resume: auto` still ends
with the same weights as an uninterrupted run, and never resumes from a partial checkpoint."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import small_data

pytestmark = pytest.mark.slow
CHECKPOINT_FILES = {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt",
                    "trainer_state.json", "rng_state.pth"}


def write_config(tmp_path, name):
    cfg = dict(model="tiny", data=small_data(tmp_path, 8), output_dir=str(tmp_path / name), max_length=64,
               per_device_train_batch_size=2, max_steps=8, save_steps=1, save_total_limit=2, learning_rate=3e-3,
               logging_steps=1, dtype="fp32", seed=11, lora={"dropout": 0.1})  # dropout: RNG must be restored too
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(config):
    return subprocess.Popen([sys.executable, "-m", "qwen_sft", "train", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def kill_when(process, condition, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.005)
    process.wait()
    return False


def _names(path: Path) -> set[str]:
    try:
        return {p.name for p in path.iterdir()}
    except OSError:  # not there (yet), or renamed away while we looked
        return set()


def assert_only_complete_checkpoints(out: Path):
    for checkpoint in out.glob("checkpoint-*"):
        assert {p.name for p in checkpoint.iterdir()} >= CHECKPOINT_FILES, f"partial {checkpoint}"


def test_kill_9_anywhere_then_resume_equals_uninterrupted(tmp_path):
    whole = start(write_config(tmp_path, "whole"))
    assert whole.wait(timeout=600) == 0, whole.stderr.read()

    config = write_config(tmp_path, "killed")
    out = tmp_path / "killed"
    staging = out / ".staging"
    def being_written(name):  # some of its files are there, not all: the kill lands mid-write
        return lambda: 0 < len(CHECKPOINT_FILES & _names(staging / name)) < len(CHECKPOINT_FILES)

    kill_points = [  # (what, condition)
        ("while checkpoint-2 is being written", being_written("checkpoint-2")),
        ("between steps, after checkpoint-4", lambda: (out / "checkpoint-4").exists()),
        ("while checkpoint-6 is being written", being_written("checkpoint-6")),
    ]
    for what, condition in kill_points:
        process = start(config)
        assert kill_when(process, condition), f"run ended before the kill point: {what}"
        assert_only_complete_checkpoints(out)
    final = start(config)
    stderr = final.communicate(timeout=600)[1]
    assert final.returncode == 0, stderr
    assert "resuming from" in stderr  # from a checkpoint checked complete right after the last kill

    expected = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    got = load_file(str(out / "adapter_model.safetensors"))
    assert expected.keys() == got.keys()
    worst = max((expected[k] - got[k]).abs().max().item() for k in expected)
    assert worst <= 1e-6, worst
    assert not torch.equal(expected[next(iter(expected))], torch.zeros_like(expected[next(iter(expected))]))
