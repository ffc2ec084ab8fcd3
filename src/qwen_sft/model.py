"""Models: the embedded `tiny` defaults, loading a checkpoint (+ adapter), and the dtype policy.

`tiny` is a random-init model of the Qwen1.5 architecture (Qwen2ForCausalLM: q/k/v bias, untied
embeddings, 151936-row vocabulary, rope_theta 1e6) with the real Qwen tokenizer. `tiny-qwen2.5` and
`tiny-qwen3` are the same idea for the later families (`init-tiny --family`): the Qwen2.5-7B shape scaled
down (grouped-query attention, 152064-row vocabulary) and the Qwen3-0.6B one (Qwen3ForCausalLM: q/k
RMSNorm, no attention bias, head_dim independent of hidden_size, tied embeddings), each with its family's
tokenizer (added tokens, official chat template) and generation_config. They are built once into the
cache dir (`$QWEN_SFT_CACHE`, default ~/.cache/qwen-sft) and are deterministic for a seed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from qwen_sft.errors import UserError
from qwen_sft.files import atomic_dir, cache_dir
from qwen_sft.hub import download_model, modelscope_id
from qwen_sft.run import check_adapter_base
from qwen_sft.tokenizer import ENDOFTEXT_ID, IM_END_ID, build_tokenizer

log = logging.getLogger(__name__)

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
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


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


def resolve_model_path(name: str | Path) -> str:
    """`tiny` / `tiny-qwen2.5` / `tiny-qwen3` → the built embedded default; a ModelScope id → its downloaded dir
    (`hub.py`); a local dir → checked for weights; anything else → hub id."""
    if modelscope_id(str(name)):
        name = download_model(str(name))
    family = TINY_NAMES.get(str(name))
    if family is not None:
        stem = "tiny" if family == "qwen1.5" else f"tiny-{family}"  # `tiny` keeps the cache dir it always had
        path = cache_dir() / f"{stem}-seed{TINY_SEED}"
        if not (path / "config.json").exists():
            init_tiny(path, family=family)
        return str(path)
    path = Path(name)
    if path.exists():
        check_model_dir(path)
        return str(path)
    if str(name).count("/") != 1:  # not a hub id either
        raise UserError(f"model {name!r}: no such directory (and not a hub id like Qwen/Qwen1.5-7B-Chat)")
    return str(name)


def check_model_dir(path: Path) -> None:
    """Raises UserError naming what is missing from a local checkpoint dir."""
    if not path.is_dir():
        raise UserError(f"model {path}: not a directory")
    if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        raise UserError(f"model {path}: this is a LoRA adapter; pass --model {base} --adapter {path}")
    missing = [f for f in ("config.json",) if not (path / f).exists()]
    if not any((path / f).exists() for f in WEIGHT_FILES):
        missing.append("model.safetensors (no weights)")
    if missing:
        raise UserError(f"model {path}: missing {', '.join(missing)}")


def resolve_dtype(name: str = "auto", allow_fp16: bool = False, device: str | None = None) -> torch.dtype:
    """The training/inference dtype. `auto` = bf16 where the device supports it, else fp32.

    `tf32` computes in fp32 with TF32 matmuls on Ampere+ GPUs (no effect on CPU).

    Raises:
        UserError: for fp16 without allow_fp16 (Qwen's loss goes NaN in fp16), or an unknown name.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "auto":
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    if name in ("fp32", "float32"):
        return torch.float32
    if name in ("tf32",):
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return torch.float32
    if name in ("bf16", "bfloat16"):
        return torch.bfloat16
    if name in ("fp16", "float16"):
        if not allow_fp16:
            raise UserError("dtype fp16 refused: Qwen's activations overflow fp16 and the loss goes NaN "
                            "(see the spec's loss curves); use bf16 or fp32 (training: allow_fp16: true forces it)")
        return torch.float16
    raise UserError(f"unknown dtype {name!r}; choose one of: auto, bf16, fp32, tf32, fp16")


def bf16_supported(device: str) -> bool:
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    if device == "cpu":  # avx512_bf16 / AMX make bf16 fast; without them it is emulated and slow
        return _cpu_has_bf16()
    return False


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def from_pretrained(loader, path: str, **kwargs):
    """`loader.from_pretrained(path)`, with a hub id that cannot be reached (or a broken checkpoint) reported as
    one line instead of transformers' traceback.

    Raises:
        UserError: naming the model and what went wrong.
    """
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as err:  # transformers/huggingface_hub report unreachable or missing repos as OSError
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        raise UserError(f"model {path}: cannot be loaded{offline}: {_first_line(err)}; check the path or hub id, "
                        "or download it first (huggingface-cli download ID)") from None


def _first_line(err: Exception) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer, path)


def load_model(path: str | Path, adapter: str | Path | None = None, dtype: str | torch.dtype = "auto",
               device: str | None = None):
    """Load a model for inference: (model, tokenizer), eval mode, adapter applied (not merged).

    The tokenizer comes from the adapter dir when it has one (training saves it there), else the model.

    Raises:
        UserError: for a missing model / adapter dir, or an adapter trained on a different base.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device=device)
    model = from_pretrained(AutoModelForCausalLM, path, dtype=torch_dtype)
    tokenizer_dir = path
    if adapter is not None:
        from peft import PeftModel

        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").exists():
            raise UserError(f"adapter {adapter}: no adapter_config.json (not a peft adapter dir)")
        check_adapter_base(adapter, model.config)
        model = PeftModel.from_pretrained(model, str(adapter))
        if (adapter / "tokenizer_config.json").exists():
            tokenizer_dir = str(adapter)
    model.to(device).eval()
    return model, load_tokenizer(tokenizer_dir)


def add_legacy_config_keys(config_file: Path) -> None:
    """Also write `rope_theta` and `torch_dtype`, the keys Qwen's own config.json files carry.

    transformers 5 saves them as `rope_parameters.rope_theta` and `dtype`; an older transformers (as in
    many vLLM installs) does not read those and would silently use rope_theta 10000 instead of 1e6.
    """
    config = json.loads(config_file.read_text(encoding="utf-8"))
    theta = (config.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None:
        config.setdefault("rope_theta", theta)
    if config.get("dtype"):
        config.setdefault("torch_dtype", config["dtype"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
