"""Parsing, validation and `--help` of the argument tree (`config.py`).

A value is parsed by its key's declared type (`--output_dir 0001` stays a string, `--packing` alone means true,
`--no-packing` false), every problem is collected into one `UserError`, and train's pass-through
`TrainingArguments` keys are checked here too, before any data or model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path

import yaml

from qwen_sft.config.schema import PREFIX, TRAIN, Command, Config, value_of
from qwen_sft.data.mix import DataSource, parse_source
from qwen_sft.utils.errors import UserError

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None,
                command: Command | None = None) -> Config:
    """Read YAML `path`, apply overrides (`["--key", "value", ...]` or a dict of keys), validate.

    Args:
        command: which keys are accepted (default: `train`'s).

    Raises:
        UserError: listing every problem found.
    """
    command = command or TRAIN
    values = read_yaml(path) if path else {}
    problems: list[str] = []
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        values.update(parse_overrides(overrides or [], command, problems))
    return build(values, command, problems)


def parse_args(argv: list[str], command: Command) -> Config:
    """A command line (after the command name) → Config. Raises UserError listing every problem."""
    argv = list(argv)
    values: dict = {}
    if argv and not argv[0].startswith("--") and command.positional:
        first = argv.pop(0)
        values = read_yaml(first) if command.positional == "config" else {command.positional: first}
    problems: list[str] = []
    values.update(parse_overrides(argv, command, problems))
    return build(values, command, problems)


def read_yaml(path: str | Path) -> dict:
    """The keys of config file `path` (`lora: {r: 8}` read as `lora.r: 8`).

    Raises:
        UserError: no such file, not YAML, not a mapping; a data file given where the config goes (one line saying
            to pass it as --data).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config {path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError) as err:
        raise UserError(f"config {path}: not a YAML file ({type(err).__name__})") from None
    data_file = UserError(f"config {path}: this is a data file, not a config; pass it as --data {path} (the first "
                          "argument is a config such as examples/tiny.yaml, and is optional)")
    if path.suffix in (".json", ".jsonl"):
        raise data_file
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        if text.lstrip().startswith(("{", "[")):  # JSON lines, most likely
            raise data_file from None
        raise UserError(f"config {path}: invalid YAML: {str(err).splitlines()[0]}") from None
    if isinstance(values, list):
        raise data_file
    if not isinstance(values, dict):
        raise UserError(f"config {path}: expected a mapping of keys to values")
    flat = {}
    for key, value in values.items():  # `lora: {r: 8}` is the same as `lora.r: 8`
        if f"{key}." in PREFIX.values() and isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def parse_overrides(args: list[str], command: Command, problems: list[str]) -> dict:
    """`--key value`, `--key=value`, `--flag` (true), `--no-flag` (false); strings are kept as typed later."""
    keys, out, i = command.keys(), {}, 0
    while i < len(args):
        arg_ = args[i]
        if not arg_.startswith("--"):
            problems.append(f"unexpected argument {arg_!r}: options are --key value")
            i += 1
            continue
        key, eq, value = arg_[2:].partition("=")
        key = _normal(key)
        negated = key.startswith("no_") and key[3:] in keys and _is_bool(keys[key[3:]][1])
        if negated:
            out[key[3:]], i = False, i + 1
            continue
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            elif key in keys and _is_bool(keys[key][1]):
                value = "true"  # a boolean key alone means true
            else:
                problems.append(f"--{key} has no value")
                i += 1
                continue
        out[key] = _Text(value)
        i += 1
    return out


class _Text(str):
    """A value typed on the command line: parsed by the key's declared type, not as YAML."""


def build(values: dict, command: Command, problems: list[str] | None = None) -> Config:
    problems = list(problems or [])
    keys = command.keys()
    cfg = Config(command=command.options() if command.options else None)
    passthrough = _training_argument_names() if command.passthrough else {}
    given_badly: set[str] = set()  # keys whose value was refused: not also reported as missing
    for key, value in values.items():
        key = _normal(str(key))
        if key not in keys:
            if key in passthrough:
                cfg.train.extra[key] = _coerce_passthrough(value, passthrough[key])
                continue
            close = difflib.get_close_matches(key, list(keys) + sorted(passthrough), n=1)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            continue
        section, spec = keys[key]
        parsed, problem = coerce(value, spec, key)
        if problem:
            problems.append(problem)
            given_badly.add(key)
        else:
            setattr(getattr(cfg, section), spec.name, parsed)
    for key, (section, spec) in keys.items():  # defaults are in range: this checks what was given
        problems += _check_range(getattr(getattr(cfg, section), spec.name), spec, key)
    problems += [f"{key}: required" for key in command.required
                 if key not in given_badly and value_of(cfg, keys, key) in (None, "")]
    for section in {s for s, _ in keys.values()}:
        resolve = getattr(getattr(cfg, section), "resolve", None)
        problems += resolve() if resolve else []
    if command.passthrough and not problems:  # only a config without other problems can be built
        problems += _check_training_arguments(cfg)
    if problems:
        raise UserError("invalid config: " + "; ".join(dict.fromkeys(problems)))
    return cfg


def _normal(key: str) -> str:
    return key if key.startswith("lora.") else key.replace("-", "_")


def _is_bool(spec: dataclasses.Field) -> bool:
    return bool in type_options(spec.type)


def coerce(value, spec: dataclasses.Field, key: str):
    """`value` as the key's declared type. Returns (value, problem)."""
    kinds = type_options(spec.type)
    text = value if isinstance(value, _Text) else None
    null = value is None or (text is not None and (text == "null" or text.lower() == "none" and str not in kinds))
    if null and type(None) in kinds:
        return None, None
    if list[DataSource] in kinds:
        return coerce_sources(value, key)
    for kind in kinds:
        if kind is bool:
            if isinstance(value, bool):
                return value, None
            if text is not None and text.lower() in TRUE + FALSE:
                return text.lower() in TRUE, None
        elif kind is int and not isinstance(value, bool):
            if isinstance(value, int):
                return value, None
            if text is not None:
                try:
                    return int(text), None
                except ValueError:
                    pass
        elif kind is float and not isinstance(value, bool):
            try:  # YAML reads `5e-5` (no dot) as a string
                return float(value), None
            except (TypeError, ValueError):
                pass
        elif kind is str and isinstance(value, str):
            return str(value), None
        elif typing.get_origin(kind) is list:
            if isinstance(value, str):  # --lora.targets q_proj,v_proj
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return value, None
    names = " or ".join("a list of strings" if typing.get_origin(k) is list else
                        {"NoneType": "null"}.get(k.__name__, k.__name__) for k in kinds)
    return None, f"{key}: expected {names}, got {value!r}"


def coerce_sources(value, key: str):
    """`data` / `eval_data`: one source (a string, kept as it is) or a list of them (`a.jsonl,b.jsonl` on the command
    line; in YAML strings or `{path, weight | samples, format}` mappings). Returns (value, problem)."""
    if isinstance(value, _Text) and value.lstrip().startswith("["):  # --data '[{path: a.jsonl, weight: 0.3}, b]'
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            return None, f"{key}: not a YAML list: {str(err).splitlines()[0]}"
    if isinstance(value, str):
        if "," not in value:
            return str(value), None
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        return None, f"{key}: expected a path or a list of paths / {{path, weight | samples}} mappings, got {value!r}"
    sources, problems = [], []
    for i, entry in enumerate(value):
        source, problem = parse_source(entry, f"{key}[{i}]")
        sources.append(source)
        problems += problem
    weights = [s.weight for s in sources if s is not None and s.weight is not None]
    if weights and len(weights) < len(sources) and sum(weights) >= 1:
        problems.append(f"{key}: the weights add up to {sum(weights):g}; beside sources without a weight they are "
                        "shares of the whole mix and must add up to less than 1")
    return (None, "; ".join(problems)) if problems else (sources, None)


def _check_range(value, spec: dataclasses.Field, key: str) -> list[str]:
    meta = spec.metadata
    if value is None or isinstance(value, (bool, list, dict)):
        return []
    if meta.get("choices") and value not in meta["choices"]:
        return [f"{key}: {value!r} is not one of {', '.join(meta['choices'])}"]
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("open_low") and value == low)):
        return [f"{key}: must be {'>' if meta.get('open_low') else '>='} {low}, got {value}"]
    if high is not None and value > high:
        return [f"{key}: must be <= {high}, got {value}"]
    return []


def type_options(annotation) -> tuple:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _training_argument_names() -> dict[str, object]:
    """TrainingArguments' keys and their types (None where an annotation cannot be resolved)."""
    from transformers import TrainingArguments

    try:
        hints = typing.get_type_hints(TrainingArguments)
    except Exception:  # an annotation naming a type transformers imports only for type checkers
        hints = {}
    return {f.name: hints.get(f.name) for f in dataclasses.fields(TrainingArguments) if f.init}


def _coerce_passthrough(value, annotation):
    """A TrainingArguments value typed on the command line, by its declared type (a string where unsure);
    TrainingArguments itself then checks it (`_check_training_arguments`)."""
    if not isinstance(value, _Text):
        return value
    kinds = type_options(annotation) if annotation is not None else (str,)
    if bool in kinds and value.lower() in TRUE + FALSE:
        return value.lower() in TRUE
    for kind in (int, float):
        if kind in kinds:
            try:
                return kind(value)
            except ValueError:
                pass
    if dict in kinds or any(typing.get_origin(k) in (dict, list) for k in kinds):
        return yaml.safe_load(value)
    return str(value)


def _check_training_arguments(cfg: Config) -> list[str]:
    """Build the TrainingArguments the run will use (pass-through keys included): their errors come now, not
    after the data is tokenised and the model loaded."""
    from qwen_sft.config.training_args import training_arguments

    try:
        training_arguments(cfg)
    except (ValueError, TypeError) as err:
        keys = ", ".join(cfg.train.extra) or "training"
        return [f"{keys}: {' '.join(str(err).split())[:300]}"]
    return []
