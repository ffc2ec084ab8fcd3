"""`qwen-sft COMMAND ...`: a table of plain functions; each one's signature and docstring is its CLI.

Parameters before `*` are positional (optional where they have a default), keyword-only ones are
--flags; `bool` flags become --flag/--no-flag; a parameter named
`overrides` collects the remaining `--key value` pairs (used by `train`). Modules are imported only
when their command runs, so `qwen-sft --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import logging
import os
import re
import sys
import types
import typing

from qwen_sft.errors import UserError

COMMANDS = {
    "demo": "qwen_sft.demo:demo",
    "init-tiny": "qwen_sft.model:init_tiny",
    "preview": "qwen_sft.preview:preview",
    "train": "qwen_sft.train:train_command",
    "predict": "qwen_sft.generate:predict",
    "chat": "qwen_sft.generate:chat",
    "eval": "qwen_sft.evaluate:evaluate_command",
    "merge": "qwen_sft.merge:merge",
    "serve": "qwen_sft.serve:serve",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(_usage(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=os.environ.get("QWEN_SFT_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    name, rest = argv[0], argv[1:]
    try:
        func = _resolve(COMMANDS[name])
        parser = build_parser(func, prog=f"qwen-sft {name}")
        if "overrides" in inspect.signature(func).parameters:  # `train CONFIG --key value ...`
            if "-h" in rest or "--help" in rest:
                parser.parse_args(["--help"])
            split = next((i for i, a in enumerate(rest) if a.startswith("-")), len(rest))
            kwargs = {**vars(parser.parse_args(rest[:split])), "overrides": rest[split:]}
        else:
            kwargs = vars(parser.parse_args(rest))
        result = func(**kwargs)
    except UserError as err:
        print(f"qwen-sft {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qwen-sft {name}: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def _resolve(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _usage() -> str:
    lines = ["usage: qwen-sft COMMAND [options]   (qwen-sft COMMAND --help for its options)", "", "commands:"]
    for name, target in COMMANDS.items():
        lines.append(f"  {name:<10} {_summary_without_import(target)}")
    return "\n".join(lines)


def _summary_without_import(target: str) -> str:
    """First docstring line of the command, read from source so no heavy module gets imported."""
    module, func = target.split(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    source = open(spec.origin, encoding="utf-8").read()
    match = re.search(rf"def {func}\(.*?\).*?:\s*\n\s*\"\"\"(.+?)\n", source, re.S)
    return match.group(1).strip() if match else ""


def build_parser(func, prog: str) -> argparse.ArgumentParser:
    """An argparse parser from `func`'s signature; help texts from its docstring's Args section."""
    doc = inspect.getdoc(func) or ""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    helps = {name: " ".join(text.split()) for name, text in  # an entry may continue on indented lines
             re.findall(r"^ {4}(\w+)(?: \(.*?\))?: (.+?)(?=^ {4}\w|^\S|\Z)", doc, re.M | re.S)}
    hints = typing.get_type_hints(func)
    for pname, param in inspect.signature(func).parameters.items():
        if pname == "overrides":
            continue
        kind = _base_type(hints.get(pname, str))
        help_text = helps.get(pname, "")
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            optional = {} if param.default is inspect.Parameter.empty else {"nargs": "?", "default": param.default}
            parser.add_argument(pname, type=kind, help=help_text, **optional)
        elif kind is bool:
            parser.add_argument(f"--{pname.replace('_', '-')}", dest=pname, action=argparse.BooleanOptionalAction,
                                default=param.default, help=help_text)
        else:
            flag = f"--{pname.replace('_', '-')}"
            aliases = [flag, f"--{pname}"] if "_" in pname else [flag]
            required = param.default is inspect.Parameter.empty
            parser.add_argument(*aliases, dest=pname, type=kind, help=help_text, required=required,
                                **({} if required else {"default": param.default}))
    return parser


def _base_type(hint):
    """`int | None` → int; `Path`/`str` → str-like callable."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    return hint if hint in (int, float, bool) else str


if __name__ == "__main__":
    raise SystemExit(main())
