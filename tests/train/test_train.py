"""`qwen-sft train` end to end on the embedded tiny model: loss falls, outputs, errors, resume, tiny corpora."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qwen_sft.cli import main
from qwen_sft.train import trainer as trainer_module
from qwen_sft.train.recipe import train
from qwen_sft.utils.errors import UserError

from helpers import adapter_weights, config, logged, small_data


def test_lora_training_lowers_loss_and_writes_standard_outputs(tmp_path, tiny_path):
    out = train(config(tmp_path, max_steps=10, dtype="bf16", **{"lora.dropout": 0.1}))
    log = [r for r in logged(out) if "loss" in r]
    assert [r["step"] for r in log] == list(range(1, 11))
    assert log[-1]["loss"] < log[0]["loss"] - 0.5, [r["loss"] for r in log]
    assert {"step", "epoch", "loss", "learning_rate", "grad_norm", "tokens", "tokens_per_s"} <= set(log[-1])
    assert log[-1]["tokens"] > log[0]["tokens"] > 0
    assert (out / "loss.png").stat().st_size > 1000
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "run_config.yaml"):
        assert (out / name).exists(), name
    # plain peft loads it; LoRA B started at zero, so trained weights must have moved away from it
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_path), str(out))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 4 * 7 and all(p.abs().sum() > 0 for p in lora_b)
    assert all(p.dtype == torch.float32 for n, p in adapter_weights(out).items())


def test_full_finetuning_changes_the_weights(tmp_path, tiny_path):
    from transformers import AutoModelForCausalLM

    out = train(config(tmp_path, finetuning="full", max_steps=2, learning_rate=1e-3))
    before = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).state_dict()
    after = load_file(str(out / "model.safetensors"))
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])


def test_tiny_corpus_with_huge_accumulation_trains(tmp_path, caplog):
    # the spec's "unscale_() has already been called" crash: 3 examples, micro-batch 4, accumulation 32
    cfg = config(tmp_path, data=small_data(tmp_path, 3), per_device_train_batch_size=4,
                 gradient_accumulation_steps=32, max_steps=-1, num_train_epochs=2)
    out = train(cfg)
    steps = [r["step"] for r in logged(out) if "loss" in r]
    assert steps[-1] == 2  # one optimizer step per epoch: all 3 examples, once
    assert "effective batch asked for is 128" in caplog.text and "only 3 examples" in caplog.text


def test_accumulation_is_a_token_mean_not_a_mean_of_means(tmp_path):
    # batch 4 x 1 and batch 1 x 4 see the same 4 examples per step: same loss, same update. Plain SGD,
    # so a weight difference is a gradient difference (Adam would blow rounding noise in ~0 gradients up)
    a = train(config(tmp_path / "a", max_steps=2, per_device_train_batch_size=4, train_sampling_strategy="sequential",
                     optim="sgd", learning_rate=0.5))
    b = train(config(tmp_path / "b", max_steps=2, per_device_train_batch_size=1, gradient_accumulation_steps=4,
                     train_sampling_strategy="sequential", optim="sgd", learning_rate=0.5))
    la, lb = [r["loss"] for r in logged(a) if "loss" in r], [r["loss"] for r in logged(b) if "loss" in r]
    assert la == pytest.approx(lb, rel=1e-4)
    wa, wb = adapter_weights(a), adapter_weights(b)
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)
    assert any(wa[k].abs().max() > 1e-3 for k in wa if "lora_B" in k)  # the update is not vacuous


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    whole = train(config(tmp_path / "whole", max_steps=6, save_steps=2, **{"lora.dropout": 0.1}))
    cfg = config(tmp_path / "split", max_steps=6, save_steps=2, **{"lora.dropout": 0.1})
    original = trainer_module.SFTTrainer.training_step

    def crash_after_step_3(self, *args, **kwargs):
        if self.state.global_step == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.SFTTrainer, "training_step", crash_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert sorted(p.name for p in Path(cfg.train.output_dir).glob("checkpoint-*")) == ["checkpoint-2"]
    monkeypatch.setattr(trainer_module.SFTTrainer, "training_step", original)
    split = train(cfg)  # resume: auto
    wa, wb = adapter_weights(whole), adapter_weights(split)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    la = [r["loss"] for r in logged(whole) if "loss" in r]
    lb = [r["loss"] for r in logged(split) if "loss" in r]
    assert la == pytest.approx(lb, rel=1e-5) and len(lb) == 6


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # step 1 runs at lr 0 (warmup); step 2 jumps to 1e30 and poisons the weights; step 3's loss is not finite
    cfg = config(tmp_path, learning_rate=1e30, lr_scheduler_type="constant_with_warmup", warmup_steps=1,
                 save_steps=1, max_steps=6)
    with pytest.raises(UserError, match=r"loss is (nan|inf) at step 3.*last good checkpoint is .*checkpoint-1"):
        train(cfg)
    out = Path(cfg.train.output_dir)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    weights = load_file(str(out / "checkpoint-1" / "adapter_model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    # resumable: same run with a sane learning rate continues from step 1 to the end
    done = train(config(tmp_path, learning_rate=1e-3, lr_scheduler_type="constant_with_warmup", warmup_steps=1,
                        save_steps=1, max_steps=3))
    steps = [r["step"] for r in logged(done) if "loss" in r]
    assert steps == [1, 2, 3]


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err.strip()


def test_config_errors_are_one_line_with_suggestions(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\ndata: x.jsonl\nlearing_rate: 1e-4\nlora:\n  r: eight\n")
    code, err = run_cli(["train", str(cfg)], capsys)
    assert code == 2 and "\n" not in err
    assert "unknown key 'learing_rate' (did you mean 'learning_rate'?)" in err
    assert "lora.r: expected int, got 'eight'" in err


def test_fp16_is_refused_unless_forced(tmp_path, capsys):
    code, err = run_cli(["train", "--data", "x.jsonl", "--dtype", "fp16"], capsys)
    assert code == 2 and "fp16 refused" in err and "NaN" in err and "allow_fp16" in err


def test_missing_data_and_model_are_reported_before_loading(tmp_path, capsys):
    code, err = run_cli(["train", "--data", str(tmp_path / "nope.jsonl"), "--output_dir", str(tmp_path / "o")], capsys)
    assert code == 2 and "nope.jsonl: no such file" in err
    (tmp_path / "empty_model").mkdir()
    code, err = run_cli(["train", "--data", "x.jsonl", "--model", str(tmp_path / "empty_model")], capsys)
    assert code == 2 and "missing config.json" in err


def test_output_dir_holding_a_different_run_is_refused(tmp_path):
    train(config(tmp_path, max_steps=1))
    with pytest.raises(UserError, match="holds a different run .*max_length"):
        train(config(tmp_path, max_steps=1, max_length=48))
    train(config(tmp_path, max_steps=1, max_length=48, overwrite=True))


@pytest.mark.parametrize("options", [{"packing": True}, {"finetuning": "dora"}, {"gradient_checkpointing": True},
                                     {"eval_data": "same", "eval_steps": 3}], ids=lambda o: next(iter(o)))
def test_training_options_end_to_end(tmp_path, options):
    options = {k: small_data(tmp_path, 4, "eval.jsonl") if v == "same" else v for k, v in options.items()}
    out = train(config(tmp_path, max_steps=6, **options))
    log = logged(out)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.3, losses
    if "eval_data" in options:
        assert [r["step"] for r in log if "eval_loss" in r] == [3, 6]
    assert (out / "adapter_model.safetensors").exists() and (out / "loss.png").exists()


# The first two logged losses of a fixed fp32 run: step 1 is a forward pass of the embedded model, step 2 follows
# one Adam step. Both are fp32 sums of the same values in any order, so they hold to ~1e-6 on any CPU; a change in
# the model, data, template, masking or loss shows up here.
PINNED_LOSSES = [12.05622386932373, 11.597979545593262]


def test_first_losses_are_pinned(tmp_path):
    out = train(config(tmp_path, max_steps=2, **{"lora.dropout": 0.0}))
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert losses == pytest.approx(PINNED_LOSSES, rel=1e-5), losses
