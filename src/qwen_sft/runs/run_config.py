"""Run metadata: what a training run was, in one file written beside its adapter/model and into every checkpoint.

`run_config.yaml`:
    config:      the resolved flat config (template resolved from `auto`; reusable as a train config)
    base_model:  the base model as given (`path`) and the shape an adapter depends on
    version:     the qwen-sft version that wrote it

Every command that takes `--adapter` (predict, chat, eval, merge, serve) reads it to find the base model and
the template, so `--adapter out/checkpoint-200` behaves exactly like `--adapter out`.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

from qwen_sft.config.schema import Config, to_dict
from qwen_sft.utils.errors import UserError

RUN_FILE = "run_config.yaml"
SHAPE_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "vocab_size")  # head_dim: Qwen3's is not hidden / heads


def write_run_info(directory: str | Path, cfg: Config, model_config) -> None:
    """Write run_config.yaml into `directory` (an output dir or a checkpoint)."""
    info = {"config": to_dict(cfg), "base_model": {"path": cfg.model.model or "tiny", **base_model_shape(model_config)},
            "version": _version()}
    Path(directory, RUN_FILE).write_text(yaml.safe_dump(info, allow_unicode=True, sort_keys=False), encoding="utf-8")


def read_run_info(directory: str | Path | None) -> dict:
    """The run_config.yaml in `directory` ({} when there is none)."""
    file = Path(directory) / RUN_FILE if directory else None
    if file is None or not file.is_file():
        return {}
    info = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    return info if "config" in info else {"config": info}  # a bare config: written by hand


def base_model_shape(config) -> dict:
    """The config fields an adapter depends on."""
    return {k: getattr(config, k, None) for k in SHAPE_KEYS}


def resolve_base(model: str | None, adapter: str | None) -> str:
    """The base model: as given, else the one the adapter was trained on, else `tiny`.

    Raises:
        UserError: an adapter that names no base model.
    """
    if model:
        return model
    if adapter is None:
        return "tiny"
    info = read_run_info(adapter)
    base = info.get("base_model", {}).get("path") or info.get("config", {}).get("model")
    if not base and (Path(adapter) / "adapter_config.json").is_file():
        base = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"adapter {adapter}: cannot tell which base model it belongs to; pass --model")
    return base


def trained_template(model: str | None, adapter: str | None) -> str | None:
    """The template the adapter (else the model dir, for a full fine-tune) was trained with, if recorded."""
    for directory in (adapter, model):
        name = read_run_info(directory).get("config", {}).get("template")
        if name and name != "auto":
            return name
    return None


def check_adapter_base(adapter: str | Path, model_config) -> None:
    """An adapter only fits the architecture it was trained on; say so instead of a shape-mismatch trace.

    Raises:
        UserError: naming the shape the adapter expects and the one the model has.
    """
    trained_on = read_run_info(adapter).get("base_model")
    if not trained_on:
        return
    mismatched = [k for k in SHAPE_KEYS if k in trained_on and getattr(model_config, k, None) != trained_on[k]]
    if mismatched:
        expected = ", ".join(f"{k}={trained_on[k]}" for k in mismatched)
        got = ", ".join(f"{k}={getattr(model_config, k, None)}" for k in mismatched)
        raise UserError(f"adapter {adapter} was trained on a different base model "
                        f"({trained_on.get('path')}: {expected}); this model has {got}")


def _version() -> str:
    try:
        return version("qwen-sft")
    except PackageNotFoundError:
        return "unknown"
