"""QLoRA: `quantization: 4bit | 8bit` loads the frozen base through bitsandbytes (whose CPU backend runs NF4 here),
LoRA trains on top, and merge refuses a quantised base."""

import json
import logging
import shutil
import sys

import pytest
import torch
import yaml

from qwen_sft.cli import main
from qwen_sft.config.parse import load_config
from qwen_sft.export.merge import merge_adapter
from qwen_sft.model.training import check_quantization, load_for_training, quantization_config
from qwen_sft.utils.errors import UserError

from helpers import adapter_weights, config, logged


def test_4bit_is_qlora_nf4_with_double_quantization():
    q = quantization_config("4bit", torch.bfloat16)
    assert q.load_in_4bit and not q.load_in_8bit
    assert q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("8bit", torch.bfloat16).load_in_8bit


def test_quantized_runs_that_cannot_work_are_one_line_errors(tmp_path, monkeypatch, capsys):
    with pytest.raises(UserError, match="cannot be used with finetuning: full"):
        check_quantization(load_config(None, {"data": "x.jsonl", "quantization": "4bit", "finetuning": "full"}))
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(UserError, match=r"needs bitsandbytes: pip install 'qwen-sft\[qlora\]'"):
        check_quantization(load_config(None, {"data": "x.jsonl", "quantization": "4bit"}))
    code = main(["train", "--data", "x.jsonl", "--quantization", "8bit", "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "needs bitsandbytes" in err
    with pytest.raises(UserError, match="'3bit' is not one of none, 4bit, 8bit"):
        load_config(None, {"data": "x.jsonl", "quantization": "3bit"})


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_base_is_prepared_for_lora(tmp_path, tiny_path, bits):
    bnb = pytest.importorskip("bitsandbytes")
    cfg = config(tmp_path, quantization=bits)
    model = load_for_training(tiny_path, cfg, torch.float32)
    layer = model.base_model.model.model.layers[0]
    base = layer.self_attn.q_proj.base_layer
    if bits == "4bit":
        assert isinstance(base, bnb.nn.Linear4bit) and base.weight.quant_state.quant_type == "nf4"
    else:
        assert isinstance(base, bnb.nn.Linear8bitLt)
    assert layer.input_layernorm.weight.dtype == torch.float32  # peft's k-bit preparation
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_qlora_trains_on_cpu_and_merges_into_the_unquantized_base(tmp_path, tiny_path, caplog):
    pytest.importorskip("bitsandbytes")
    out = train_qlora(tmp_path)
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert len(losses) == 3 and all(loss == loss for loss in losses) and losses[-1] < losses[0]
    assert any(w.abs().max() > 0 for k, w in adapter_weights(out).items() if "lora_B" in k)
    assert yaml.safe_load((out / "run_config.yaml").read_text())["config"]["quantization"] == "4bit"
    caplog.set_level(logging.INFO, logger="qwen_sft.export.merge")
    merged = merge_adapter(out, tmp_path / "merged", dtype="fp32")
    assert "trained on a quantised copy" in caplog.text
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())


def train_qlora(tmp_path):
    from qwen_sft.train.recipe import train

    return train(config(tmp_path, quantization="4bit", max_steps=3, learning_rate=1e-2))


def test_merge_refuses_a_quantized_base(tmp_path, tiny_path):
    from helpers import make_adapter

    quantized = tmp_path / "tiny-bnb-4bit"
    shutil.copytree(tiny_path, quantized)
    config_file = quantized / "config.json"
    cfg = json.loads(config_file.read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    config_file.write_text(json.dumps(cfg))
    adapter = make_adapter(tmp_path / "adapter", tiny_path)
    with pytest.raises(UserError, match=r"quantised checkpoint \(bitsandbytes\).*Merge into the bf16 base instead"):
        merge_adapter(adapter, tmp_path / "merged", model=str(quantized))
