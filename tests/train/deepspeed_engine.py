"""`python tests/deepspeed_engine.py 2|3`: build a DeepSpeed engine from examples/accelerate/deepspeed_zero{2,3}.yaml as
accelerate + transformers would (the YAML's deepspeed_config → accelerate's DeepSpeedPlugin → the Trainer's "auto"
values filled in), on the tiny model with our loss and LoRA, on CPU (DeepSpeed's CPU accelerator, gloo, 1 process),
and print the summed loss of its first step next to the plain model's. Run by tests/test_deepspeed.py."""

import json
import os
import sys
from pathlib import Path

os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
os.environ.setdefault("MASTER_PORT", "29591")

import deepspeed
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DeepSpeedPlugin
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, TrainingArguments
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

from qwen_sft.model.load import resolve_model_path
from qwen_sft.model.training import use_chunked_loss

ROOT = Path(__file__).resolve().parents[2]


def engine_config(stage: str) -> HfTrainerDeepSpeedConfig:
    """Keep the returned object alive: while it lives, transformers loads models the ZeRO-3 way (as under Trainer)."""
    yaml_config = load_config_from_file(str(ROOT / "examples" / "accelerate" / f"deepspeed_zero{stage}.yaml"))
    plugin = DeepSpeedPlugin(**yaml_config.deepspeed_config)
    args = TrainingArguments(output_dir="unused", use_cpu=True, per_device_train_batch_size=2,
                             gradient_accumulation_steps=1, learning_rate=1e-3, max_grad_norm=1.0, report_to="none")
    config = HfTrainerDeepSpeedConfig(plugin.deepspeed_config)
    config.trainer_config_process(args)  # "auto" → the Trainer's values, as Trainer does
    config.config.update(optimizer={"type": "AdamW", "params": {"lr": 1e-3}}, zero_allow_untested_optimizer=True)
    return config


def tiny_lora():
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny"), dtype=torch.float32)
    use_chunked_loss(model, 64)
    torch.manual_seed(0)
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))


def main(stage: str) -> None:
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(1))
    plain = tiny_lora()
    with torch.no_grad():
        reference = float(plain(input_ids=ids, labels=ids).loss)  # the chunked loss, no DeepSpeed
        plain.base_model.model.lm_head.weight.ds_id = 0  # what ZeRO-3 marks its parameters with
        fallback = float(plain(input_ids=ids, labels=ids).loss)  # the standard loss use_chunked_loss falls back to
    del plain
    hf_config = engine_config(stage)
    config = hf_config.config
    deepspeed.init_distributed("gloo")
    if stage == "3":  # parameters partitioned as they are created (zero3_init_flag)
        with deepspeed.zero.Init(config_dict_or_path=config):
            model = tiny_lora()
    else:
        model = tiny_lora()
    engine, *_ = deepspeed.initialize(model=model, config=config,
                                      model_parameters=[p for p in model.parameters() if p.requires_grad])
    losses = []
    for _ in range(2):
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    print(json.dumps({"stage": engine.zero_optimization_stage(), "config": config, "reference": reference,
                      "fallback": fallback, "losses": losses}))


if __name__ == "__main__":
    main(sys.argv[1])
