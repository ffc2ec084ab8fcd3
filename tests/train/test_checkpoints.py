"""Checkpoints describe themselves, the best one survives staging and rotation, resumption tolerates
pass-through changes, and untrainable examples are skipped and reported like any bad record."""

import json
from pathlib import Path

import pytest

from qwen_sft.config.schema import ModelArgs
from qwen_sft.model.inference import load_inference_tokenizer
from qwen_sft.runs.run_config import read_run_info
from qwen_sft.train.recipe import train
from qwen_sft.utils.errors import UserError

from helpers import config, logged, small_data


def test_every_checkpoint_describes_itself(tmp_path):
    out = train(config(tmp_path, template="qwen1.5-sft-legacy", max_steps=2, save_steps=1, save_total_limit=None))
    for checkpoint in (out / "checkpoint-1", out / "checkpoint-2"):
        info = read_run_info(checkpoint)
        assert info["config"]["template"] == "qwen1.5-sft-legacy" and info["base_model"]["path"] == "tiny"
        assert info["base_model"]["hidden_size"] == 256
        base, _, template = load_inference_tokenizer(ModelArgs(adapter=str(checkpoint)))  # as predict/serve do
        assert (base, template.name) == ("tiny", "qwen1.5-sft-legacy")


def test_merge_of_a_checkpoint_writes_its_template(tmp_path):
    from transformers import AutoTokenizer

    from qwen_sft.export.merge import merge_adapter
    from qwen_sft.template.encode import render
    from qwen_sft.template.registry import get_template

    out = train(config(tmp_path, template="qwen1.5-sft-legacy", max_steps=1, save_steps=1))
    merged = merge_adapter(out / "checkpoint-1", tmp_path / "merged")
    messages = [{"role": "user", "content": "你好"}]
    text = AutoTokenizer.from_pretrained(merged).apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == render(messages, get_template("qwen1.5-sft-legacy"), add_generation_prompt=True)


def test_load_best_model_at_end_finds_the_published_checkpoint(tmp_path):
    data = small_data(tmp_path, 8)
    out = train(config(tmp_path, data=data, eval_data=data, max_steps=4, save_steps=2, eval_steps=2,
                       save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="eval_loss"))
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    assert best.parent == out and best.is_dir(), best  # not the .staging path it was written under
    assert any("eval_loss" in r for r in logged(out))


def test_resume_accepts_changed_passthrough_keys(tmp_path):
    train(config(tmp_path, max_steps=2, save_steps=1))
    out = train(config(tmp_path, max_steps=3, save_steps=1, report_to="none", dataloader_num_workers=0))
    assert [r["step"] for r in logged(out) if "loss" in r] == [1, 2, 3]


def test_an_untrainable_example_is_skipped_with_skip_bad(tmp_path, caplog):
    records = [{"instruction": "问" * 200, "output": "答"}, *[{"instruction": "hi", "output": "ok"}] * 3]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(UserError, match=r"long.jsonl:1: nothing left to train .*skip_bad"):
        train(config(tmp_path, data=str(data), loss="assistant", max_length=40, max_steps=1))
    out = train(config(tmp_path, data=str(data), loss="assistant", max_length=40, max_steps=1, skip_bad=True,
                       overwrite=True))
    assert "left out 1 example(s)" in caplog.text and "long.jsonl:1" in caplog.text
    assert (out / "adapter_model.safetensors").exists()
