"""Shared fixtures: the real tokenizer and the embedded `tiny` model, built once per test session."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests import helpers and spec_reference
# Build the tokenizer / tiny model once into the repo's (git-ignored) cache, shared by every test process.
os.environ.setdefault("QWEN_SFT_CACHE", str(ROOT / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer():
    from qwen_sft.template.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def family_tokenizer():
    """family -> a tokenizer of that Qwen family (its added tokens and published chat template), built once."""
    from qwen_sft.template.tokenizer import FAMILIES, build_tokenizer

    built = {}

    def get(family):
        if family not in built:
            assert family in FAMILIES, family
            built[family] = build_tokenizer(family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def tiny_path():
    from qwen_sft.model.load import resolve_model_path

    return resolve_model_path("tiny")
