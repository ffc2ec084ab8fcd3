"""A checkpoint directory as transformers reads it: weight files present, and config.json readable by older readers."""

from __future__ import annotations

import json
from pathlib import Path

from qwen_sft.utils.errors import UserError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


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
