"""`torchrun` with 2 gloo processes on CPU reaches the same losses as 1 process with the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from helpers import small_data

pytestmark = pytest.mark.slow


def run(tmp_path, name, launcher, per_device_batch):
    cfg = dict(model="tiny", data=small_data(tmp_path, 8), output_dir=str(tmp_path / name), max_length=64,
               per_device_train_batch_size=per_device_batch, gradient_accumulation_steps=2, max_steps=3,
               learning_rate=3e-3, lr_scheduler_type="constant", warmup_ratio=0.0, logging_steps=1, save_steps=100,
               dtype="fp32", seed=3, train_sampling_strategy="sequential", lora={"dropout": 0.0})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*launcher, "-m", "qwen_sft", "train", str(path)], check=True, env=env, cwd=tmp_path,
                   timeout=600, stdout=subprocess.DEVNULL)
    log = [json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
    return [r for r in log if "loss" in r]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_match_one(tmp_path):
    single = run(tmp_path, "single", [sys.executable], per_device_batch=2)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    double = run(tmp_path, "ddp", torchrun, per_device_batch=1)  # 2 processes x 1 = the same 2 per micro-step
    assert [r["step"] for r in double] == [r["step"] for r in single] == [1, 2, 3]
    assert [r["loss"] for r in double] == pytest.approx([r["loss"] for r in single], rel=1e-4)
    assert [r["tokens"] for r in double] == [r["tokens"] for r in single]
