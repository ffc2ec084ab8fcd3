"""`accelerate launch` with examples/accelerate/fsdp.yaml (FSDP2) on 2 gloo CPU processes: the same losses as one
process at the same effective batch, a plain adapter at the end, and a run killed after a (sharded) checkpoint
resumes to the same weights as an uninterrupted one.

accelerate runs an FSDP config as plain DDP on CPU, so the processes start through tests/cpu_fsdp.py, which only
restores the plugin accelerate dropped; everything else (sharding, the chunked loss on a sharded output layer,
FSDP checkpoints, the final gather) is the code a GPU run executes.
"""

import json
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
ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path, name, per_device_batch):
    cfg = dict(model="tiny", data=small_data(tmp_path, 8), output_dir=str(tmp_path / name), max_length=64,
               per_device_train_batch_size=per_device_batch, gradient_accumulation_steps=2, max_steps=4,
               learning_rate=3e-3, lr_scheduler_type="constant", warmup_ratio=0.0, logging_steps=1, save_steps=2,
               dtype="fp32", seed=3, train_sampling_strategy="sequential", lora={"dropout": 0.0})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fsdp_command(config, port):
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "examples" / "accelerate" / "fsdp.yaml"), "--num_processes", "2", "--main_process_port",
            str(port), str(ROOT / "tests" / "train" / "cpu_fsdp.py"), "train", str(config)]


def run(command, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=cwd, timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def losses(output_dir):
    log = [json.loads(line) for line in (Path(output_dir) / "train_log.jsonl").read_text().splitlines()]
    return [r for r in log if "loss" in r]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fsdp")
    stderr = run(fsdp_command(write_config(tmp_path, "fsdp", per_device_batch=1), 29541), tmp_path)
    return tmp_path, stderr


def test_fsdp_on_two_processes_matches_one(fsdp_run):
    tmp_path, stderr = fsdp_run
    assert "runs it as plain DDP" not in stderr  # FSDP really ran
    single_config = write_config(tmp_path, "single", per_device_batch=2)  # 1 process x 2 = 2 processes x 1
    run([sys.executable, "-m", "qwen_sft", "train", str(single_config)], tmp_path)
    single, fsdp = losses(tmp_path / "single"), losses(tmp_path / "fsdp")
    assert [r["step"] for r in fsdp] == [r["step"] for r in single] == [1, 2, 3, 4]
    assert [r["loss"] for r in fsdp] == pytest.approx([r["loss"] for r in single], rel=1e-4)
    assert [r["tokens"] for r in fsdp] == [r["tokens"] for r in single]
    # checkpoints are FSDP's sharded ones; the result is one plain peft adapter, as close to the 1-process one as
    # 4 Adam steps let float sums in another order be
    assert (tmp_path / "fsdp" / "checkpoint-2" / "pytorch_model_fsdp_0").is_dir()
    a, b = load_file(str(tmp_path / "single" / "adapter_model.safetensors")), \
        load_file(str(tmp_path / "fsdp" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_fsdp_killed_after_a_checkpoint_resumes_to_the_same_weights(fsdp_run):
    tmp_path, _ = fsdp_run
    config = write_config(tmp_path, "killed", per_device_batch=1)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(fsdp_command(config, 29543), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint-2").exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert launcher.poll() is None, "the run ended before checkpoint-2 was published"
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both workers, at once
    launcher.wait()
    assert not (out / "adapter_model.safetensors").exists()

    stderr = run(fsdp_command(config, 29545), tmp_path)
    assert "resuming from" in stderr
    whole, resumed = losses(tmp_path / "fsdp"), losses(out)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in whole], rel=1e-5)
    expected = load_file(str(tmp_path / "fsdp" / "adapter_model.safetensors"))
    got = load_file(str(out / "adapter_model.safetensors"))
    assert expected.keys() == got.keys()
    worst = max((expected[k] - got[k]).abs().max().item() for k in expected)
    assert worst <= 1e-6, worst
