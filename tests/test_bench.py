"""The benchmarks still run: bench/gpu.sh --smoke (CPU, tiny shapes) and bench/train_vs_trl.py --smoke."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def table_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return split[0], split[2:]  # header, rows (after the |---| line)


def test_gpu_sh_smoke_writes_its_table(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    header, rows = table_rows(tmp_path / "gpu_table.md")
    assert header[:3] == ["model", "trainer", "tokens/s"] and "peak GPU mem GB" in header
    assert any(h.startswith("MFU") for h in header)
    assert [(r[0], r[1]) for r in rows] == [(m, t) for m in ("tiny-tied", "tiny-untied") for t in ("qwen-sft", "TRL")]
    for row in rows:
        assert float(row[2]) > 0 and "FAILED" not in " ".join(row), row
    assert (tmp_path / "gpu_bench.log").exists()
    header, rows = table_rows(tmp_path / "forecast_table.md")  # the forecast vs a real run of tiny
    assert header[:3] == ["model", "run", "peak forecast / measured"] and rows[0][0] == "tiny"
    assert all("/" in cell for cell in (rows[0][2], rows[0][4]))


def test_gpu_sh_says_what_is_missing(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "PYTHONPATH": str(tmp_path)}
    (tmp_path / "trl.py").write_text("raise ImportError('no trl here')\n")  # shadows the real trl
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3
    assert "MISSING: trl" in proc.stderr


def test_train_vs_trl_smoke(tmp_path):
    table = tmp_path / "table.md"
    env = {**os.environ, "QWEN_SFT_CACHE": os.environ.get("QWEN_SFT_CACHE", str(ROOT / ".cache"))}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_vs_trl.py"), "--smoke", "--table", str(table)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    header, rows = table_rows(table)
    for column in ("contender", "tokens/s", "peak RSS MB", "final loss", "MFU", "vs TRL best tok/s",
                   "vs TRL leanest RSS"):
        assert column in header
    by_name = {r[0]: dict(zip(header, r)) for r in rows}
    assert set(by_name) == {"qwen-sft padded", "qwen-sft packed", "TRL padded", "TRL padding-free",
                            "TRL padded std-loss"}
    # same data, same masking: every contender trains exactly the same tokens
    assert len({r["trained tok"] for r in by_name.values()}) == 1
    # same model, LoRA init, seed and batches: the padded runs agree on the loss
    assert abs(float(by_name["qwen-sft padded"]["final loss"]) - float(by_name["TRL padded"]["final loss"])) < 1e-3
    assert re.search(r"Matmul peak", table.read_text())
