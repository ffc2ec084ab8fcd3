"""Models: the embedded `tiny` default, loading a checkpoint (+ adapter), and the dtype policy.

`tiny` is a random-init model of the Qwen1.5 architecture (Qwen2ForCausalLM: q/k/v bias, untied
embeddings, 151936-row vocabulary, rope_theta 1e6) with the real Qwen tokenizer. It is built once into
the cache dir (`$QWEN_SFT_CACHE`, default ~/.cache/qwen-sft) and is deterministic for a seed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from qwen_sft.errors import UserError
from qwen_sft.files import atomic_dir, cache_dir
from qwen_sft.hub import download_model, modelscope_id
from qwen_sft.run import check_adapter_base, resolve_base, trained_template
from qwen_sft.template import Template, get_template
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
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def init_tiny(output_dir: str | Path, *, seed: int = TINY_SEED) -> Path:
    """Write the embedded default model (weights, config, tokenizer, generation config) to `output_dir`.

    Args:
        output_dir: where to write it.
        seed: random-init seed (the built-in `tiny` uses 0).

    Written to a temporary sibling and renamed, so a crash never leaves a half-built model behind.
    """
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**TINY_CONFIG)).to(torch.bfloat16)  # bf16 on disk, like Qwen's
    model.generation_config = GenerationConfig(
        bos_token_id=ENDOFTEXT_ID, eos_token_id=[IM_END_ID, ENDOFTEXT_ID], pad_token_id=ENDOFTEXT_ID,
        do_sample=False, max_new_tokens=512)
    with atomic_dir(output_dir) as tmp:  # a crash never leaves a half-built model behind
        model.save_pretrained(tmp)
        add_legacy_config_keys(tmp / "config.json")
        build_tokenizer().save_pretrained(tmp)
    return output_dir


def resolve_model_path(name: str | Path) -> str:
    """`tiny` → the built embedded default; a ModelScope id → its downloaded dir (`hub.py`); a local dir → checked
    for weights; anything else → hub id."""
    if modelscope_id(str(name)):
        name = download_model(str(name))
    if str(name) == TINY:
        path = cache_dir() / f"tiny-seed{TINY_SEED}"
        if not (path / "config.json").exists():
            init_tiny(path)
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


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


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
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
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


def resolve_inference(args) -> tuple[str, Template]:
    """(base model, Template) for a command's model section (`config.ModelArgs`): the base defaults to the
    adapter's, the template to the one training recorded (adapter, then model dir).

    Raises:
        UserError: an unknown template, an adapter that names no base.
    """
    base = resolve_base(args.model, args.adapter)
    name = args.template if args.template != "auto" else trained_template(base, args.adapter) or "qwen"
    return base, get_template(name)


def load_for_inference(args, device: str | None = None):
    """(model, tokenizer, Template) for a command's model section; see `resolve_inference`.

    Raises:
        UserError: an unknown template, a model or adapter that cannot be loaded.
    """
    base, template = resolve_inference(args)  # a bad template name fails before the model loads
    model, tokenizer = load_model(base, adapter=args.adapter, dtype=args.dtype, device=device)
    log.info("model %s%s, template %s", base, f" + adapter {args.adapter}" if args.adapter else "", template.name)
    return model, tokenizer, template


def load_inference_tokenizer(args):
    """(tokenizer, Template) as `load_for_inference` would give them, without loading any weights."""
    base, template = resolve_inference(args)
    adapter = Path(args.adapter) if args.adapter else None
    has_own = adapter is not None and (adapter / "tokenizer_config.json").exists()
    return load_tokenizer(str(adapter) if has_own else resolve_model_path(base)), template
