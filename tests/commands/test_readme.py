"""Every command the README shows runs as written, so the docs cannot drift from the code.

The commands of the README's ```bash blocks run in order in a scratch dir holding the repository's `data/` and
`examples/`. Only what a CPU test machine cannot do as written is changed: a hub model id becomes `tiny` (no
network), a config naming a hub model trains `tiny` for one step in the CPU's own dtype (`--dtype auto`),
`--nproc_per_node 8` becomes 2 processes (gloo);
`chat` reads `/exit`; `serve` is started, asked one question and stopped. `make` lines are the README's own
setup and are what CI runs.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
LAUNCHERS = ("qwen-sft", "torchrun", "accelerate")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    return [line.split("  #")[0].strip() for line in lines if line.split(" ")[0] in LAUNCHERS]


def test_the_readme_shows_the_main_commands():
    names = {c.split()[1] for c in readme_commands() if c.startswith("qwen-sft")}
    assert {"preview", "train", "predict", "eval", "chat", "merge", "serve", "init-tiny"} <= names
    assert any(c.startswith("torchrun") for c in readme_commands())
    assert any(c.startswith("accelerate launch") for c in readme_commands())


def for_this_machine(command: str) -> list[str]:
    """The command as this test runs it (see the module docstring)."""
    args = [re.sub(r"^Qwen/[\w.-]+$", "tiny", a) for a in shlex.split(command)]
    if args[0] == "qwen-sft":
        args = [sys.executable, "-m", "qwen_sft", *args[1:]]
    elif args[0] == "torchrun":
        args = [sys.executable, "-m", "torch.distributed.run", "--master_port", str(_free_port()), *args[1:]]
        args[args.index("--nproc_per_node") + 1] = "2"
    elif args[0] == "accelerate":
        args = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", "2",
                "--main_process_port", str(_free_port()), *args[2:]]
    if "train" in args:
        config = next((a for a in args if a.endswith(".yaml") and a.startswith("examples/") and
                       "accelerate" not in a), None)
        model = yaml.safe_load(Path(config).read_text())["model"] if config else "tiny"
        if model.startswith("Qwen/"):  # a real checkpoint's config: train `tiny` for one step instead, in the
            # dtype this CPU computes natively (a GPU config's bf16 is emulated, ~50x slower, on CPUs without it)
            args += ["--model", "tiny", "--max_steps", "1", "--max_length", "256", "--eval_data", "null",
                     "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--dtype", "auto"]
    return args


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_readme_command_runs_as_written(tmp_path):
    for name in ("data", "examples"):
        os.symlink(ROOT / name, tmp_path / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QWEN_SFT_LOG": "WARNING", "PYTHONIOENCODING": "utf-8"}
    for command in readme_commands():
        args = for_this_machine(command)
        if " serve " in f" {command} ":
            check_serve(args, env, tmp_path, command)
            continue
        done = subprocess.run(args, cwd=tmp_path, env=env, input="/exit\n", capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    assert (tmp_path / "runs" / "tiny-merged" / "model.safetensors").exists()
    assert (tmp_path / "runs" / "metrics.json").exists()


def check_serve(args: list[str], env: dict, cwd: Path, command: str) -> None:
    port = args[args.index("--port") + 1]
    server = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.monotonic() + 300, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert health == 200, f"{command}: the server never answered /health (exit code {server.poll()})"
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": "你好"}], "max_tokens": 4})
        assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        server.send_signal(signal.SIGINT)
        stderr = server.communicate(timeout=60)[1]
    assert server.returncode == 0, f"{command}\n{stderr[-3000:]}"
