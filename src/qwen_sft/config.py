"""The training config: a YAML file plus `--key value` overrides, validated once, before anything loads.

Keys are flat (`learning_rate`, `max_length`) except the `lora.*` section; the names of transformers'
`TrainingArguments` are used wherever one exists, and any other `TrainingArguments` field may be given
too (it is passed through). Every problem is collected into one `UserError`, unknown keys with the
nearest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from qwen_sft.errors import UserError

LORA_TARGETS_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSection:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS_ALL))  # all linear layers


@dataclass
class TrainConfig:
    # what to train, on what
    model: str = "tiny"  # local dir, hub id (Qwen/Qwen1.5-7B-Chat) or `tiny`, the embedded default
    data: str = ""  # JSON/JSONL file, save_to_disk dir or hub dataset name
    eval_data: str | None = None
    data_format: str = "auto"  # auto | alpaca | sharegpt | messages
    skip_bad: bool = False  # skip malformed records (reported) instead of failing
    output_dir: str = "runs/sft"
    overwrite: bool = False  # allow an output_dir that holds a different run
    # how examples become tokens
    template: str = "auto"  # auto (proven from the model's chat template) | qwen1.5 | qwen2 | qwen2.5 | qwen3 | ...
    loss: str = "all"  # all | assistant | last | assistant_no_reasoning | last_no_reasoning
    max_length: int = 1024
    packing: bool = False  # padding-free: concatenate examples into rows of up to max_length tokens
    # method and precision
    finetuning: str = "lora"  # lora | dora | full
    lora: LoraSection = field(default_factory=LoraSection)
    dtype: str = "auto"  # auto (bf16 where supported, else fp32) | bf16 | fp32 | tf32 | fp16 (needs allow_fp16)
    allow_fp16: bool = False
    resume: str = "auto"  # auto (newest complete checkpoint in output_dir) | never | path to a checkpoint
    # transformers TrainingArguments names
    learning_rate: float = 2e-4
    num_train_epochs: float = 3.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int | None = 3
    eval_steps: int | None = None
    seed: int = 42
    chunk_size: int = 1024  # tokens per chunk of the fused output-layer + cross-entropy
    # any other TrainingArguments field (e.g. `report_to`, `optim`), passed through unchecked by us
    extra: dict = field(default_factory=dict)


CHOICES = {
    "data_format": ("auto", "alpaca", "sharegpt", "messages"),
    "template": ("auto", "qwen", "qwen1.5", "qwen2", "qwen2.5", "qwen3", "qwen1.5-sft-legacy"),
    "loss": ("all", "assistant", "last", "assistant_no_reasoning", "last_no_reasoning"),
    "finetuning": ("lora", "dora", "full"),
    "dtype": ("auto", "bf16", "fp32", "tf32", "fp16"),
    "lr_scheduler_type": ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                          "polynomial", "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay"),
}
POSITIVE = ("max_length", "per_device_train_batch_size", "per_device_eval_batch_size",
            "gradient_accumulation_steps", "logging_steps", "save_steps", "chunk_size", "lora.r", "lora.alpha")


def load_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Read YAML `path`, apply overrides (`["--lr", "1e-4", ...]` or a dict of dotted keys), validate.

    Raises:
        UserError: listing every problem found (unknown keys with suggestions, wrong types, bad values).
    """
    values: dict = {}
    if path is not None:
        try:
            values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise UserError(f"config {path}: no such file") from None
        except yaml.YAMLError as err:
            raise UserError(f"config {path}: invalid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise UserError(f"config {path}: expected a mapping of keys to values")
    flat = _flatten(values)
    if isinstance(overrides, dict):
        flat.update(overrides)
    else:
        flat.update(parse_overrides(overrides or []))
    return build_config(flat)


def parse_overrides(args: list[str]) -> dict:
    """`--key value` / `--key=value` pairs; values are parsed as YAML scalars (1e-4, true, [a, b])."""
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}: overrides are --key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise UserError(f"override --{key} has no value")
            value, i = args[i + 1], i + 1
        out[key.replace("-", "_") if "." not in key else key] = yaml.safe_load(value) if value != "" else ""
        i += 1
    return out


def build_config(flat: dict) -> TrainConfig:
    cfg, problems = TrainConfig(), []
    known = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name not in ("lora", "extra")}
    lora_fields = {f.name: f for f in dataclasses.fields(LoraSection)}
    passthrough = _training_argument_names()
    for key, value in flat.items():
        if key.startswith("lora."):
            target, name, spec = cfg.lora, key[5:], lora_fields.get(key[5:])
        else:
            target, name, spec = cfg, key, known.get(key)
        if spec is None:
            if key in passthrough:
                cfg.extra[key] = value
                continue
            valid = list(known) + [f"lora.{n}" for n in lora_fields] + sorted(passthrough)
            close = difflib.get_close_matches(key, valid, n=1)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            continue
        value, problem = _coerce(value, spec.type, key)
        if problem:
            problems.append(problem)
            continue
        setattr(target, name, value)
    problems += _check_values(cfg)
    if problems:
        raise UserError("invalid config: " + "; ".join(problems))
    return cfg


def _check_values(cfg: TrainConfig) -> list[str]:
    problems = []
    for key, choices in CHOICES.items():
        if getattr(cfg, key) not in choices:
            problems.append(f"{key}: {getattr(cfg, key)!r} is not one of {', '.join(choices)}")
    for key in POSITIVE:
        value = getattr(cfg.lora, key[5:]) if key.startswith("lora.") else getattr(cfg, key)
        if value <= 0:
            problems.append(f"{key}: must be > 0, got {value}")
    if not cfg.data:
        problems.append("data: required (a JSON/JSONL file, a save_to_disk dir or a hub dataset name)")
    if not 0 <= cfg.lora.dropout < 1:
        problems.append(f"lora.dropout: must be in [0, 1), got {cfg.lora.dropout}")
    if not 0 <= cfg.warmup_ratio < 1:
        problems.append(f"warmup_ratio: must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.learning_rate <= 0:
        problems.append(f"learning_rate: must be > 0, got {cfg.learning_rate}")
    if cfg.dtype == "fp16" and not cfg.allow_fp16:
        problems.append("dtype: fp16 refused: Qwen's loss goes NaN in fp16 (activations overflow); "
                        "use bf16 or fp32, or set allow_fp16: true to force it with loss scaling")
    return problems


def _coerce(value, annotation, key: str):
    """Check `value` against a dataclass field type. Returns (value, problem)."""
    kinds = _kinds(annotation)
    if value is None and type(None) in kinds:
        return None, None
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return value, None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if kind is float and not isinstance(value, bool):
            try:  # YAML reads `5e-5` (no dot) as a string; ints are fine for floats
                return float(value), None
            except (TypeError, ValueError):
                pass
        if kind is str and isinstance(value, str):
            return value, None
        if typing.get_origin(kind) is list:
            if isinstance(value, str):  # --lora.targets q_proj,v_proj
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return value, None
    names = " or ".join("a list of strings" if typing.get_origin(k) is list else k.__name__ for k in kinds)
    return None, f"{key}: expected {names}, got {type(value).__name__} {value!r}"


def _kinds(annotation) -> tuple:
    if isinstance(annotation, str):  # `from __future__ import annotations` leaves strings
        annotation = eval(annotation, {"list": list, "dict": dict}, {})  # noqa: S307 - our own field types
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and key in ("lora",):
            out.update(_flatten(value, f"{key}."))
        else:
            out[prefix + str(key)] = value
    return out


def _training_argument_names() -> set[str]:
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def to_dict(cfg: TrainConfig) -> dict:
    """The resolved config as written to OUTPUT_DIR/run_config.yaml."""
    data = dataclasses.asdict(cfg)
    extra = data.pop("extra")
    return {**data, **extra}
