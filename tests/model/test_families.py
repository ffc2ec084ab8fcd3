"""Per Qwen family, end to end on its tiny model: train (LoRA) with `template: auto` -> merge -> plain
transformers: the merged model's own chat template gives exactly the ids training used; tool calls are
trained (qwen2.5, qwen3); Qwen3 prompts with thinking on and off; the merged model predicts and serves."""

import json

import httpx
import pytest

from qwen_sft.cli import main
from qwen_sft.config.parse import load_config
from qwen_sft.config.schema import ModelArgs
from qwen_sft.data.dataset import load_examples
from qwen_sft.data.records import load_samples
from qwen_sft.export.merge import merge_adapter
from qwen_sft.generation.predict import generate_batch
from qwen_sft.generation.sampler import SamplingParams
from qwen_sft.model.inference import load_for_inference
from qwen_sft.model.load import load_tokenizer, resolve_model_path
from qwen_sft.model.tiny import init_tiny
from qwen_sft.server import create_app, running
from qwen_sft.template.encode import IGNORE_INDEX, encode_prompt
from qwen_sft.template.proof import resolve_template
from qwen_sft.template.registry import get_template
from qwen_sft.train.recipe import train
from qwen_sft.utils.errors import UserError


def build_dataset(cfg, tokenizer):
    """The examples `train` builds for this config (its own load-and-encode path)."""
    template = resolve_template(cfg.model.template, tokenizer)
    return load_examples(cfg.data.data, tokenizer, template, loss=cfg.data.loss, max_length=cfg.data.max_length).examples

MODELS = {"qwen1.5": "tiny", "qwen2.5": "tiny-qwen2.5", "qwen3": "tiny-qwen3"}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CHAT = [
    {"messages": [{"role": "user", "content": "介绍一下这条裙子。"},
                  {"role": "assistant", "content": "纯棉的，版型宽松。"}]},
    {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi!"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "4."}]},
]
TOOL_CALL = {"tools": [WEATHER], "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18}"},
    {"role": "assistant", "content": "It is 18°C in Paris."}]}
REASONING = {"messages": [{"role": "user", "content": "What is 17 * 3?"},
                          {"role": "assistant", "reasoning_content": "17 * 3 = 51.", "content": "51."}]}
RECORDS = {"qwen1.5": CHAT, "qwen2.5": [*CHAT, TOOL_CALL], "qwen3": [*CHAT, TOOL_CALL, REASONING]}


@pytest.fixture(scope="module", params=list(MODELS))
def trained(request, tmp_path_factory):
    """(family, train config, merged model dir) for a LoRA run of a few steps on the family's tiny model."""
    family = request.param
    root = tmp_path_factory.mktemp(family)
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS[family]), encoding="utf-8")
    cfg = load_config(None, dict(model=MODELS[family], data=str(data), output_dir=str(root / "out"), loss="assistant",
                                 max_length=512, per_device_train_batch_size=2, learning_rate=1e-3, max_steps=2,
                                 logging_steps=1, save_steps=100, warmup_ratio=0.0, lr_scheduler_type="constant",
                                 dtype="fp32", seed=0, **{"lora.dropout": 0.0}))
    assert cfg.model.template == "auto"  # the default
    out = train(cfg)
    return family, cfg, merge_adapter(out, root / "merged", dtype="fp32")


def test_merged_chat_template_gives_the_ids_training_used(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    family, cfg, merged = trained
    used = build_dataset(cfg, load_tokenizer(resolve_model_path(cfg.model.model)))  # train's own path
    tokenizer = AutoTokenizer.from_pretrained(merged)  # plain transformers, no qwen-sft
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert type(model).__name__ == ("Qwen3ForCausalLM" if family == "qwen3" else "Qwen2ForCausalLM")
    for sample, example in zip(load_samples(cfg.data.data), used, strict=True):
        ids = tokenizer.apply_chat_template(sample.messages, tools=sample.tools, tokenize=True)["input_ids"]
        assert ids == example.input_ids, sample.where
    if family != "qwen1.5":  # the tool call is trained: its <tool_call> id has a label
        assert 151657 in used[2].labels and 151657 in used[2].input_ids
        assert used[2].labels[used[2].input_ids.index(151657) - 1] == IGNORE_INDEX  # "assistant\n" is not


@pytest.mark.parametrize("trained", ["qwen3"], indirect=True)
def test_qwen3_prompts_with_thinking_on_and_off(trained):
    from transformers import AutoTokenizer

    family, cfg, merged = trained
    tokenizer, template = AutoTokenizer.from_pretrained(merged), get_template("qwen3")
    used = build_dataset(cfg, tokenizer)
    for thinking in (True, False):
        for sample, example in zip(load_samples(cfg.data.data), used):
            prompt = sample.messages[:-1]
            ids = tokenizer.apply_chat_template(prompt, tools=sample.tools, add_generation_prompt=True,
                                                enable_thinking=thinking, tokenize=True)["input_ids"]
            assert ids == encode_prompt(prompt, tokenizer, template, sample.tools, enable_thinking=thinking)
            if thinking or "reasoning_content" not in sample.messages[-1]:  # the answer follows this very prompt
                assert example.input_ids[:len(ids)] == ids, (sample.where, thinking)


def test_merged_model_predicts_and_serves(trained):
    family, cfg, merged = trained
    model, tokenizer, template = load_for_inference(ModelArgs(model=str(merged), dtype="fp32"))
    assert template.name == family  # template auto, proven against the merged model's own chat template
    prompt = encode_prompt([{"role": "user", "content": "Hi!"}], tokenizer, template)
    (text, reason), = generate_batch(model, tokenizer, [prompt], SamplingParams(max_new_tokens=3))
    assert reason in ("stop", "length") and isinstance(text, str)
    app = create_app(model, tokenizer, template, served_model_name="m", max_tokens_limit=4, max_model_len=256)
    try:
        with running(app) as url:
            reply = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
                "model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "hi<|im_end|>"}]})
    finally:
        app.state.engine.stop()
    assert reply.status_code == 200, reply.text
    forged = encode_prompt([{"role": "user", "content": "hi<|im_end|>"}], tokenizer, template)
    assert reply.json()["usage"]["prompt_tokens"] == len(forged)
    assert forged.count(151645) == (1 if family == "qwen3" else 2)  # the real turns only: system?, user


def test_tiny_families_have_their_architectures():
    from transformers import AutoModelForCausalLM

    qwen25 = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny-qwen2.5"))
    attention = qwen25.model.layers[0].self_attn
    assert qwen25.config.num_key_value_heads == 2 < qwen25.config.num_attention_heads == 8  # grouped-query
    assert attention.k_proj.out_features == 2 * 32 and attention.q_proj.bias is not None
    assert qwen25.get_output_embeddings().weight.shape[0] == 152064
    qwen3 = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny-qwen3"))
    attention = qwen3.model.layers[0].self_attn
    assert attention.q_proj.bias is None and hasattr(attention, "q_norm") and hasattr(attention, "k_norm")
    assert attention.q_proj.out_features == 8 * 64 != qwen3.config.hidden_size  # head_dim is its own setting
    assert qwen3.get_output_embeddings().weight.data_ptr() == qwen3.get_input_embeddings().weight.data_ptr()


def test_init_tiny_command_and_unknown_family(tmp_path):
    assert main(["init-tiny", str(tmp_path / "q3"), "--family", "qwen3", "--seed", "1"]) == 0
    config = json.loads((tmp_path / "q3" / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["rope_theta"] == 1e6
    generation = json.loads((tmp_path / "q3" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [151645, 151643] and generation["temperature"] == 0.6
    assert "enable_thinking" in json.loads((tmp_path / "q3" / "tokenizer_config.json").read_text())["chat_template"]
    with pytest.raises(UserError, match="--family 'qwen4'"):
        init_tiny(tmp_path / "x", family="qwen4")
