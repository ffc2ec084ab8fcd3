"""The commands a user meets first: init-tiny, preview, and the environment checks made before loading."""

import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from qwen_sft.cli import main
from qwen_sft.model.load import load_model
from qwen_sft.model.tiny import init_tiny
from qwen_sft.utils.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "multiturn" / "train.jsonl"


def test_init_tiny_is_deterministic_and_plain_transformers_loads_it(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    a, b = init_tiny(tmp_path / "a", seed=1), init_tiny(tmp_path / "b", seed=1)
    model = AutoModelForCausalLM.from_pretrained(a)
    other = AutoModelForCausalLM.from_pretrained(b)
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), other.state_dict().values()))
    config = model.config
    assert (config.architectures, config.vocab_size, config.tie_word_embeddings, config.rope_parameters["rope_theta"]) == (
        ["Qwen2ForCausalLM"], 151936, False, 1_000_000.0)
    assert model.model.layers[0].self_attn.q_proj.bias is not None  # Qwen1.5's q/k/v bias
    assert GenerationConfig.from_pretrained(a).eos_token_id == [151645, 151643]
    tokenizer = AutoTokenizer.from_pretrained(a)
    assert tokenizer("<|im_start|>user\n你好<|im_end|>").input_ids == [151644, 872, 198, 108386, 151645]
    assert json.loads((a / "tokenizer_config.json").read_text())["tokenizer_class"] == "Qwen2Tokenizer"


def test_preview_marks_trained_tokens(capsys):
    assert main(["preview", "--data", str(SAMPLE), "--loss", "last", "--n", "1", "--no-color"]) == 0
    out = capsys.readouterr().out
    first = json.loads(SAMPLE.read_text(encoding="utf-8").splitlines()[0])["messages"]
    assert f"[[{first[-1]['content']}<|im_end|>]]" in out  # only the last answer is marked
    assert out.count("[[") == 1 and "input_ids: [151644" in out and "1 of 24 examples shown" in out


def test_preview_json_lines(capsys):
    assert main(["preview", "--data", str(SAMPLE), "--json-lines", "--n", "2", "--loss", "assistant"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and all(len(r["input_ids"]) == len(r["labels"]) for r in rows)
    assert all(-100 in r["labels"] and 151645 in r["labels"] for r in rows)


def test_unknown_command_and_bad_data_are_one_line(capsys):
    assert main(["trian"]) == 2
    assert main(["preview", "--data", str(ROOT / "tests" / "fixtures" / "bad" / "wrong_type.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("qwen-sft preview: error:") and "wrong_type.jsonl:2: field 'instruction'" in err


def test_unwritable_and_full_output_dirs_are_refused_before_loading(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    data = str(ROOT / "data" / "advertise_gen" / "dev.jsonl")
    assert main(["train", "--data", data, "--output_dir", str(blocker / "out")]) == 2
    assert "not writable" in capsys.readouterr().err
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, 10 << 30, 1 << 20))
    assert main(["train", "--data", data, "--output_dir", str(tmp_path / "out")]) == 2
    assert "only 1 MiB free" in capsys.readouterr().err


def test_adapter_for_another_base_is_refused(tmp_path, tiny_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    other = Qwen2Config(vocab_size=151936, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4)
    peft_model = get_peft_model(AutoModelForCausalLM.from_config(other), LoraConfig(r=4, target_modules=["q_proj"]))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    shape = {"model_type": "qwen2", "hidden_size": 128, "num_hidden_layers": 2}
    (adapter / "run_config.yaml").write_text(json.dumps({"config": {}, "base_model": {"path": "other", **shape}}))
    with pytest.raises(UserError, match="trained on a different base model .*hidden_size=128"):
        load_model(tiny_path, adapter=adapter)
