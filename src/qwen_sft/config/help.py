"""`qwen-sft COMMAND --help`: every key a command takes, with its type, default (once) and one line of help."""

from __future__ import annotations

import dataclasses
import textwrap
import typing

from qwen_sft.config.parse import type_options
from qwen_sft.config.schema import SECTIONS, Command

HELP_WIDTH = 110


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
    kinds = [k for k in type_options(spec.type) if k is not type(None)]
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


