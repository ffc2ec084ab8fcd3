"""Shared fixtures: the real tokenizer and the embedded `tiny` model, built once per test session."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests import spec_reference
# Build the tokenizer / tiny model once into the repo's (git-ignored) cache, shared by every test process.
os.environ.setdefault("QWEN_SFT_CACHE", str(ROOT / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer():
    from qwen_sft.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def family_tokenizer():
    """family -> a tokenizer of that Qwen family (its added tokens and published chat template), built once."""
    from qwen_sft.tokenizer import FAMILIES, build_tokenizer

    built = {}

    def get(family):
        if family not in built:
            assert family in FAMILIES, family
            built[family] = build_tokenizer(family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def tiny_path():
    from qwen_sft.model import resolve_model_path

    return resolve_model_path("tiny")


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
