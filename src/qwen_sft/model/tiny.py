"""The embedded default models: `tiny`, `tiny-qwen2.5`, `tiny-qwen3`, random-init with the real Qwen tokenizer.

`tiny` is a random-init model of the Qwen1.5 architecture (Qwen2ForCausalLM: q/k/v bias, untied embeddings,
151936-row vocabulary, rope_theta 1e6) with the real Qwen tokenizer. `tiny-qwen2.5` and `tiny-qwen3` are the same
idea for the later families (`init-tiny --family`): the Qwen2.5-7B shape scaled down (grouped-query attention,
152064-row vocabulary) and the Qwen3-0.6B one (Qwen3ForCausalLM: q/k RMSNorm, no attention bias, head_dim independent
of hidden_size, tied embeddings), each with its family's tokenizer (added tokens, official chat template) and
generation_config. They are built once into the cache dir (`$QWEN_SFT_CACHE`, default ~/.cache/qwen-sft) and are
deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qwen_sft.model.checkpoint import add_legacy_config_keys
from qwen_sft.template.tokenizer import ENDOFTEXT_ID, IM_END_ID, build_tokenizer
from qwen_sft.utils.errors import UserError
from qwen_sft.utils.files import atomic_dir, cache_dir

TINY = "tiny"
TINY_SEED = 0
# Qwen1.5-0.5B's shape, scaled down; everything that makes it "Qwen" is kept
TINY_CONFIG = dict(
    vocab_size=151936, hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=False, hidden_act="silu", initializer_range=0.02, use_sliding_window=False,
    bos_token_id=ENDOFTEXT_ID, eos_token_id=IM_END_ID, pad_token_id=ENDOFTEXT_ID,
)
# family -> (architecture, config, generation_config beyond eos/pad/bos) of its tiny model
TINY_FAMILIES = {
    "qwen1.5": ("Qwen2ForCausalLM", TINY_CONFIG, dict(do_sample=False, max_new_tokens=512)),
    # Qwen2.5-7B-Instruct: 28 query heads share 4 key/value heads, 152064 output rows; here 8 share 2
    "qwen2.5": ("Qwen2ForCausalLM", {**TINY_CONFIG, "vocab_size": 152064, "num_attention_heads": 8,
                                     "num_key_value_heads": 2},
                dict(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)),
    # Qwen3-0.6B: 16 query heads x head_dim 128 (2048) on hidden 1024, 8 kv heads, tied; here 8 x 64 on 256
    "qwen3": ("Qwen3ForCausalLM", {**TINY_CONFIG, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64,
                                   "attention_bias": False, "tie_word_embeddings": True,
                                   "max_position_embeddings": 40960},
              dict(do_sample=True, temperature=0.6, top_p=0.95, top_k=20)),
}
TINY_NAMES = {TINY: "qwen1.5", "tiny-qwen1.5": "qwen1.5", "tiny-qwen2.5": "qwen2.5", "tiny-qwen3": "qwen3"}


def init_tiny(output_dir: str | Path, *, seed: int = TINY_SEED, family: str = "qwen1.5") -> Path:
    """Write an embedded default model (weights, config, tokenizer, generation config) to `output_dir`.

    Args:
        output_dir: where to write it.
        seed: random-init seed (the built-in `tiny` models use 0).
        family: qwen1.5 (`tiny`) | qwen2.5 (`tiny-qwen2.5`) | qwen3 (`tiny-qwen3`).

    Written to a temporary sibling and renamed, so a crash never leaves a half-built model behind.

    Raises:
        UserError: an unknown family.
    """
    import transformers

    if family not in TINY_FAMILIES:
        raise UserError(f"--family {family!r}: choose one of: {', '.join(TINY_FAMILIES)}")
    architecture, config, generation = TINY_FAMILIES[family]
    config_class = getattr(transformers, architecture.replace("ForCausalLM", "Config"))
    torch.manual_seed(seed)
    # bf16 on disk, like Qwen's
    model = getattr(transformers, architecture)(config_class(**config)).to(torch.bfloat16)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=ENDOFTEXT_ID, eos_token_id=[IM_END_ID, ENDOFTEXT_ID], pad_token_id=ENDOFTEXT_ID, **generation)
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp)
        add_legacy_config_keys(tmp / "config.json")
        build_tokenizer(family).save_pretrained(tmp, save_jinja_files=False)  # template in tokenizer_config
    return output_dir


def tiny_path(name: str) -> str | None:
    """The built directory of embedded model `name` (`tiny`, `tiny-qwen2.5`, ...), built on first use; None when
    `name` is not one."""
    family = TINY_NAMES.get(name)
    if family is None:
        return None
    stem = "tiny" if family == "qwen1.5" else f"tiny-{family}"  # `tiny` keeps the cache dir it always had
    path = cache_dir() / f"{stem}-seed{TINY_SEED}"
    if not (path / "config.json").exists():
        init_tiny(path, family=family)
    return str(path)
