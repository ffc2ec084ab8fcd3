"""`qwen-sft demo` end to end, cut short: every stage runs and says what it did (the full run is measured in the
README)."""

import json

import pytest

from qwen_sft.cli import main

pytestmark = pytest.mark.slow


def test_demo_runs_every_stage_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output_dir", str(out), "--max_steps", "3", "--eval_examples", "2",
                 "--max_new_tokens", "8"]) == 0
    printed = capsys.readouterr().out
    for stage in ("[1/4]", "[2/4] full fine-tuning for 3 steps", "[3/4]", "[4/4]", "rouge-1", "guessing uniformly",
                  "answers ended by themselves", "demo wall time"):
        assert stage in printed, stage
    for name in ("model.safetensors", "loss.png", "train_log.jsonl", "predictions.jsonl", "metrics.json",
                 "run_config.yaml"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_examples"] == 2
