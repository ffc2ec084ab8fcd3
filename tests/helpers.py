"""What several test modules build: small data files, train configs, a ready adapter."""

import json
from pathlib import Path

from safetensors.torch import load_file

from qwen_sft.config.parse import load_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "advertise_gen" / "train.jsonl"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def small_data(tmp_path, n, name="train.jsonl"):
    """The first n sample records, answers cut to their first sentence: the output layer (151936 rows)
    dominates the cost of each trained token, so short examples keep these tests fast."""
    records = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()[:n]]
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({**r, "output": r["output"].split("。")[0] + "。"}, ensure_ascii=False) + "\n"
                            for r in records), encoding="utf-8")
    return str(path)


def config(tmp_path, **overrides):
    values = dict(model="tiny", output_dir=str(tmp_path / "out"), max_length=64,
                  per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=3e-3, max_steps=4,
                  logging_steps=1, save_steps=100, warmup_ratio=0.0, lr_scheduler_type="constant", dtype="fp32",
                  seed=7, **{"lora.dropout": 0.0})
    values.update(overrides)
    if "data" not in values:
        values["data"] = small_data(tmp_path, 8)
    return load_config(None, values)


def adapter_weights(output_dir):
    return load_file(str(Path(output_dir) / "adapter_model.safetensors"))


def logged(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "train_log.jsonl").read_text().splitlines()]



def make_adapter(path, tiny_path, template="qwen", use_dora=False, targets=("q_proj", "v_proj"), seed=0):
    """A LoRA / DoRA adapter on `tiny` with random non-zero B (a fresh one is a no-op), plus the
    run_config.yaml `train` writes beside it. Much faster than training one."""
    import torch
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, use_dora=use_dora, task_type="CAUSAL_LM", target_modules=list(targets))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save_pretrained(path)
    (Path(path) / "run_config.yaml").write_text(yaml.safe_dump({"config": {"model": "tiny", "template": template},
                                                                     "base_model": {"path": "tiny"}}))
    return Path(path)
