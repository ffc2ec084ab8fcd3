"""`qwen-sft merge`: merged logits equal adapter logits; the output is a plain HF model with our stop tokens."""

import json

import pytest
import torch
from safetensors import safe_open

from qwen_sft.cli import main
from qwen_sft.export.merge import chat_template_jinja, merge_adapter
from qwen_sft.template.encode import render
from qwen_sft.template.registry import get_template
from qwen_sft.utils.errors import UserError

from helpers import make_adapter

INPUT = torch.tensor([[151644, 872, 198, 108386, 151645, 198, 151644, 77091, 198]])  # <|im_start|>user\n你好...


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_path):
    root = tmp_path_factory.mktemp("adapters")
    every = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    return {kind: make_adapter(root / kind, tiny_path, "qwen1.5-sft-legacy", use_dora=kind == "dora", targets=every,
                               seed=1) for kind in ("lora", "dora")}


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_merged_logits_equal_adapter_logits(tmp_path, tiny_path, adapters, kind):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = merge_adapter(adapters[kind], tmp_path / "merged", dtype="fp32")
    base = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    with torch.no_grad():
        with_adapter = PeftModel.from_pretrained(base, str(adapters[kind])).eval()
        expected = with_adapter(INPUT).logits
        with with_adapter.disable_adapter():
            assert (expected - with_adapter(INPUT).logits).abs().max() > 1e-2  # the adapter changes the output
        plain = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers: no peft involved
        merged = plain(INPUT).logits
    assert plain.dtype == torch.float32 and not hasattr(plain, "peft_config")
    assert (merged - expected).abs().max() < 1e-4


def test_merge_command_writes_a_plain_qwen2_model(tmp_path, adapters):
    out = tmp_path / "merged"
    assert main(["merge", "--adapter", str(adapters["lora"]), "--output", str(out)]) == 0  # base from run_config
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors", "run_config.yaml"}
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["vocab_size"] == 151936
    assert config["rope_theta"] == 1e6 and config["torch_dtype"] == "bfloat16"  # keys older readers (vLLM) need
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [151645, 151643] and generation["pad_token_id"] == 151643
    with safe_open(str(out / "model.safetensors"), "pt") as f:  # the base's dtype (tiny is stored in bf16)
        assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"BF16"}  # noqa: SIM118 - safe_open has no __iter__
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)  # chat template of the adapter's training template
    messages = [{"role": "user", "content": "你好"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == render(
        messages, get_template("qwen1.5-sft-legacy"), add_generation_prompt=True)
    assert main(["merge", "--adapter", str(adapters["lora"]), "--output", str(out)]) == 2  # not empty: refused


@pytest.mark.parametrize("name", ["qwen", "qwen1.5-sft-legacy"])
def test_chat_template_renders_like_render(tokenizer, name):
    template = get_template(name)
    conversation = [{"role": "user", "content": 'say "hi"\\n'}, {"role": "assistant", "content": "嗨"},
                    {"role": "user", "content": "again"}]
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = chat_template_jinja(template)
        for messages in (conversation, [{"role": "system", "content": "Be brief."}, *conversation]):
            assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == render(
                messages, template, add_generation_prompt=True)
            assert tokenizer.apply_chat_template(messages[:-1], tokenize=False) == render(messages[:-1], template)
    finally:
        tokenizer.chat_template = original


def test_merge_user_errors(tmp_path, adapters):
    with pytest.raises(UserError, match="no adapter_config.json"):
        merge_adapter(tmp_path, tmp_path / "out")
    with pytest.raises(UserError, match="is the adapter dir"):
        merge_adapter(adapters["lora"], adapters["lora"])
