"""Generation: batched = one at a time, answer-only predictions, stop / length, no padded-vocab ids, chat via a pipe."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwen_sft.cli import main
from qwen_sft.config.schema import ModelArgs
from qwen_sft.generation.predict import generate_batch, generate_ids
from qwen_sft.generation.sampler import SamplingParams
from qwen_sft.model.inference import load_for_inference, load_inference_tokenizer
from qwen_sft.model.load import load_model, load_tokenizer
from qwen_sft.template.encode import encode_prompt
from qwen_sft.template.registry import get_template
from qwen_sft.template.tokenizer import IM_END_ID
from qwen_sft.utils.errors import UserError

from helpers import make_adapter

ROOT = Path(__file__).resolve().parents[2]
QWEN = get_template("qwen")
QUESTIONS = ["你好", "类型#裙*版型#显瘦*颜色#黑色*裙型#直筒裙", "How do I wash a wool sweater without shrinking it?", "x"]


def prompt(tokenizer, text, template=QWEN):
    return encode_prompt([{"role": "user", "content": text}], tokenizer, template)


@pytest.fixture(scope="module")
def fp32(tiny_path):
    # fp32: batched and single runs compare exactly; same device as CLI
    return load_model(tiny_path, dtype="fp32"), load_tokenizer(tiny_path)


def test_batched_equals_one_at_a_time(fp32):
    model, tokenizer = fp32
    prompts = [prompt(tokenizer, q) for q in QUESTIONS]  # different lengths: rows get different left padding
    sampling = SamplingParams(max_new_tokens=8)
    batched = generate_batch(model, tokenizer, prompts, sampling)
    single = [generate_batch(model, tokenizer, [p], sampling)[0] for p in prompts]
    assert batched == single


def test_predict_writes_answers_only_in_input_order(tmp_path, tiny_path, fp32):
    records = [{"instruction": "类型#裤*颜色#白色", "input": "", "output": ""},
               {"instruction": "A much longer instruction so that sorting by length reorders the batch", "output": "ok"},
               {"instruction": "hi", "output": "", "id": 7}]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", "--data", str(data), "--output", str(out), "--model", tiny_path, "--max-new-tokens", "4",
                 "--batch-size", "2", "--dtype", "fp32"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    model, tokenizer = fp32
    for record, row in zip(records, rows, strict=True):
        assert {k: row[k] for k in record} == record  # the input record is kept, in input order
        expected = generate_batch(model, tokenizer, [prompt(tokenizer, record["instruction"])], SamplingParams(max_new_tokens=4))
        assert (row["prediction"], row["finish_reason"]) == expected[0]
        assert record["instruction"] not in row["prediction"] and "<|im_start|>" not in row["prediction"]


def bigram_model(model, tokenizer, chain):
    """A copy of `model` whose next token depends only on the current one, with `chain` = {token: next}.

    Zeroing each layer's output projections (o_proj, down_proj) makes every block add nothing to the
    residual stream, so the hidden state is the token's own embedding: embedding row t is set to a unit
    direction e_k and lm_head row chain[t] to 10 * e_k, giving chain[t] a logit of ~160 against ~±1 for
    the rest. This stands in for a trained model: training one to stop takes minutes on these CPUs.
    """
    model = copy.deepcopy(model)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        for k, (token, following) in enumerate(chain.items()):
            model.model.embed_tokens.weight[token] = 0.0
            model.model.embed_tokens.weight[token, k] = 1.0
            model.lm_head.weight[following, k] = 10.0
    return model


def test_stops_at_im_end_and_reports_length_when_cut(fp32):
    base, tokenizer = fp32
    hello, world, again = (tokenizer.encode(word)[0] for word in ("Hello", " world", " again"))
    # qwen's generation prompt ends in "assistant\n" (198): answer "Hello world" then <|im_end|>; the legacy
    # one ends in "assistant" (77091): " again" forever
    model = bigram_model(base, tokenizer, {198: hello, hello: world, world: IM_END_ID, 77091: again, again: again})
    question = prompt(tokenizer, "ping")
    assert generate_batch(model, tokenizer, [question], SamplingParams(max_new_tokens=8)) == [("Hello world", "stop")]
    assert generate_ids(model, tokenizer, [question], SamplingParams(max_new_tokens=3)) == [([hello, world], "stop")]
    assert generate_batch(model, tokenizer, [question], SamplingParams(max_new_tokens=2)) == [("Hello world", "length")]
    # in a batch the row that stopped is padded while the other runs on; each gets its own reason
    legacy = prompt(tokenizer, "a longer question, so the rows are padded", get_template("qwen1.5-sft-legacy"))
    assert generate_batch(model, tokenizer, [question, legacy], SamplingParams(max_new_tokens=5)) == [
        ("Hello world", "stop"), (" again" * 5, "length")]


def test_padded_vocabulary_rows_are_never_generated(fp32):
    base, tokenizer = fp32
    assert len(tokenizer) == 151646 and base.lm_head.weight.shape[0] == 151936
    model = copy.deepcopy(base)
    head = torch.nn.Linear(256, 151936, bias=True)  # Qwen's lm_head has no bias; one makes those logits huge
    with torch.no_grad():
        head.weight.copy_(base.lm_head.weight)
        head.bias.zero_()
        head.bias[151646:] = 1e4
    model.lm_head = head.to(base.device)
    question = prompt(tokenizer, "你好")
    assert model(torch.tensor([question], device=base.device)).logits[0, -1].argmax() >= 151646  # unguarded, it would pick one
    torch.manual_seed(0)
    for sampling in (SamplingParams(max_new_tokens=6), SamplingParams(max_new_tokens=6, temperature=1.0),
                     SamplingParams(max_new_tokens=6, temperature=1.5, top_k=5, top_p=0.9)):
        for ids, _ in generate_ids(model, tokenizer, [question, prompt(tokenizer, "hello")], sampling):
            assert ids and max(ids) < 151646, (sampling, ids)


def test_adapter_sets_base_and_template(tmp_path, tiny_path):
    from peft import PeftModel

    adapter = make_adapter(tmp_path / "adapter", tiny_path, "qwen1.5-sft-legacy")
    assert load_inference_tokenizer(ModelArgs(adapter=str(adapter)))[2].name == "qwen1.5-sft-legacy"
    assert load_inference_tokenizer(ModelArgs(adapter=str(adapter), template="qwen2"))[2].name == "qwen2"  # wins
    base, _, template = load_inference_tokenizer(ModelArgs())
    assert (base, template.name) == ("tiny", "qwen1.5")  # auto: proven from tiny's own chat template
    model, tokenizer, template = load_for_inference(ModelArgs(adapter=str(adapter), dtype="fp32"))  # base: run_config
    assert isinstance(model, PeftModel) and template.name == "qwen1.5-sft-legacy"
    (text, reason), = generate_batch(model, tokenizer, [prompt(tokenizer, "hi", template)], SamplingParams(max_new_tokens=3))
    assert reason == "length" and isinstance(text, str)


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="temperature: must be >= 0"):
        SamplingParams(temperature=-1).check()
    assert main(["predict", "--output", str(tmp_path / "p.jsonl")]) == 2  # data: required
    assert main(["predict", "--data", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "p.jsonl")]) == 2


def test_chat_through_a_pipe(tmp_path):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "QWEN_SFT_LOG": "WARNING"}
    done = subprocess.run([sys.executable, "-m", "qwen_sft", "chat", "--model", "tiny", "--max-new-tokens", "8"],
                          input="你好\n/system Be brief\n/reset\nhello\n/exit\n", capture_output=True, text=True,
                          encoding="utf-8", env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    answers = [line for line in done.stdout.splitlines() if line.startswith("assistant: ")]
    assert len(answers) == 2, done.stdout  # one per user turn; commands answer on stderr
    assert "system prompt: 'Be brief'" in done.stderr and "history cleared" in done.stderr


def test_a_model_trained_to_stop_stops(tmp_path):
    """Fine-tune `tiny` on ping → pong (loss on the answer + <|im_end|> only) until its loss is near 0, then
    generate greedily.

    Full fine-tuning, because LoRA cannot get there on a random model: the final RMSNorm fixes the hidden
    state's length and the random output layer caps a logit near 5, so its loss floor is ~7 (a LoRA run that
    answered "pong" did so by luck, and another CPU's rounding answered ""). The assertion is on what holds on any
    CPU: the loss ends far below 0.02 (~0.05 after 30 of the 60 steps here), where every token of the answer has
    probability > 0.9, so greedy decoding must say "pong" and stop."""
    from qwen_sft.config.parse import load_config
    from qwen_sft.train.recipe import train

    data = tmp_path / "ping.jsonl"
    data.write_text(json.dumps({"instruction": "ping", "output": "pong"}) + "\n", encoding="utf-8")
    out = train(load_config(None, dict(
        model="tiny", data=str(data), output_dir=str(tmp_path / "out"), loss="last", finetuning="full",
        learning_rate=1e-3, max_steps=60, per_device_train_batch_size=1, lr_scheduler_type="constant",
        warmup_ratio=0.0, logging_steps=10, save_strategy="no", dtype="fp32", seed=0)))
    loss = [r["loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in r][-1]
    assert loss < 0.02, f"ping -> pong did not train below 0.02 in 60 steps: {loss}"
    model, tokenizer, chat_template = load_for_inference(ModelArgs(model=str(out), dtype="fp32"))
    prompt = encode_prompt([{"role": "user", "content": "ping"}], tokenizer, chat_template)
    assert generate_batch(model, tokenizer, [prompt], SamplingParams(max_new_tokens=8)) == [("pong", "stop")]
    assert generate_batch(model, tokenizer, [prompt], SamplingParams(max_new_tokens=1))[0][1] == "length"
