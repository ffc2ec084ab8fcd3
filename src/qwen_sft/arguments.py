"""Parsing, validation and `--help` of the argument tree (`config.py`).

A value is parsed by its key's declared type (`--output_dir 0001` stays a string, `--packing` alone means true,
`--no-packing` false), every problem is collected into one `UserError`, and train's pass-through
`TrainingArguments` keys are checked here too, before any data or model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import textwrap
import types
import typing
from pathlib import Path

import yaml

from qwen_sft.config import PREFIX, SECTIONS, TRAIN, Command, Config, DataSource, parse_source, value_of
from qwen_sft.errors import UserError

HELP_WIDTH = 110
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
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"config {path}: no such file") from None
    except yaml.YAMLError as err:
        raise UserError(f"config {path}: invalid YAML: {str(err).splitlines()[0]}") from None
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
    return bool in _kinds(spec.type)


def coerce(value, spec: dataclasses.Field, key: str):
    """`value` as the key's declared type. Returns (value, problem)."""
    kinds = _kinds(spec.type)
    text = value if isinstance(value, _Text) else None
    if value is None or (text is not None and (text == "null" or text.lower() == "none" and str not in kinds)):
        if type(None) in kinds:
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


def _kinds(annotation) -> tuple:
    if isinstance(annotation, str):  # `from __future__ import annotations` leaves strings
        annotation = eval(annotation, {"list": list, "dict": dict, "str": str, "int": int, "float": float,  # noqa: S307
                                       "bool": bool, "None": None, "DataSource": DataSource})
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _training_argument_names() -> dict[str, dataclasses.Field]:
    from transformers import TrainingArguments

    return {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}


def _coerce_passthrough(value, spec: dataclasses.Field):
    """A TrainingArguments value typed on the command line, by its declared type (a string where unsure);
    TrainingArguments itself then checks it (`_check_training_arguments`)."""
    if not isinstance(value, _Text):
        return value
    try:
        kinds = _kinds(spec.type)
    except Exception:  # an annotation naming transformers' own types: leave the value a string
        kinds = (str,)
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
    from qwen_sft.train_args import training_arguments

    try:
        training_arguments(cfg)
    except (ValueError, TypeError) as err:
        keys = ", ".join(cfg.train.extra) or "training"
        return [f"{keys}: {' '.join(str(err).split())[:300]}"]
    return []


def help_text(command: Command, prog: str, summary: str) -> str:
    """`--help`: every key with its type, default (once) and one line of help, grouped by section."""
    positional = {"config": " [CONFIG.yaml]", None: ""}.get(command.positional) \
        if command.positional in ("config", None) else f" {command.positional.upper()}"
    lines = [f"usage: {prog}{positional} [--key value ...]", "", summary]
    if command.positional == "config":
        lines += ["", "CONFIG.yaml holds any of these keys (flat; `lora:` may be a mapping); --key value overrides it."]
    groups: dict[str, list[str]] = {}
    for key, (section, spec) in command.keys().items():
        title = (command.options.__doc__ or "options").split("\n")[0] if section == "command" else \
            SECTIONS[section].__doc__.split("\n")[0]
        groups.setdefault(title, []).append(_help_line(key, _type_name(spec), spec, key in command.required))
    for title, entries in groups.items():
        lines += ["", f"{title}:", *entries]
    if command.passthrough:
        lines += ["", "Any other transformers TrainingArguments key (report_to, optim, ...) is passed through."]
    return "\n".join(lines)


def _type_name(spec: dataclasses.Field) -> str:
    kinds = [k for k in _kinds(spec.type) if k is not type(None)]
    return "|".join("LIST" if typing.get_origin(k) is list else k.__name__.upper() for k in kinds)


def _help_line(key: str, kind: str, spec: dataclasses.Field, required: bool) -> str:
    help_ = spec.metadata.get("help", "")
    if spec.metadata.get("choices"):
        help_ += f" [{' | '.join(spec.metadata['choices'])}]"
    default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
    if required:
        help_ += " (required)"
    elif "default" not in help_ and default not in (None, dataclasses.MISSING):
        shown = ",".join(default) if isinstance(default, list) else str(default).lower() if isinstance(default, bool) \
            else default
        help_ += f" (default: {shown})"
    flag = f"--{key} {kind}".rstrip() if kind != "BOOL" else f"--{key} [true|false]"
    text = textwrap.fill(help_, width=HELP_WIDTH, initial_indent=" " * 38, subsequent_indent=" " * 38)
    return f"  {flag:<35} {text[38:]}" if len(flag) < 35 else f"  {flag}\n{text}"


