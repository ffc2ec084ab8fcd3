"""`qwen-sft COMMAND [CONFIG.yaml] [--key value ...]`: a table of command modules (`qwen_sft/commands/`).

Each command's keys, their types, defaults and help come from the one argument tree (`config.py`); this module
only dispatches, prints `--help`, and turns a `UserError` into one line on stderr (exit 2).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import warnings

from qwen_sft.utils.errors import UserError

COMMANDS = {
    "demo": "qwen_sft.commands.demo",
    "init-tiny": "qwen_sft.commands.init_tiny",
    "preview": "qwen_sft.commands.preview",
    "check": "qwen_sft.commands.check",
    "train": "qwen_sft.commands.train",
    "predict": "qwen_sft.commands.predict",
    "chat": "qwen_sft.commands.chat",
    "eval": "qwen_sft.commands.eval",
    "merge": "qwen_sft.commands.merge",
    "serve": "qwen_sft.commands.serve",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"qwen-sft: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    from qwen_sft.config.help import help_text
    from qwen_sft.config.parse import parse_args

    name, rest = argv[0], argv[1:]
    command = importlib.import_module(COMMANDS[name])
    if "-h" in rest or "--help" in rest:
        print(help_text(command.COMMAND, f"qwen-sft {name}", command.__doc__.strip()))
        return 0
    logging.basicConfig(level=os.environ.get("QWEN_SFT_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    _quiet_optional_backends()
    try:
        return command.main(parse_args(rest, command.COMMAND)) or 0
    except UserError as err:
        print(f"qwen-sft {name}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qwen-sft {name}: interrupted", file=sys.stderr)
        return 130
    except MemoryError as err:  # torch.OutOfMemoryError (GPU) is a RuntimeError, checked below
        return _out_of_memory(name, err)
    except RuntimeError as err:
        if type(err).__name__ != "OutOfMemoryError":
            raise
        return _out_of_memory(name, err)


def _out_of_memory(name: str, err: BaseException) -> int:
    print(f"qwen-sft {name}: error: out of memory ({str(err).splitlines()[0][:120] if str(err) else 'host'}); "
          "lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the batch), max_length or "
          "chunk_size, set gradient_checkpointing: true, or use LoRA / a smaller model; for inference lower "
          "batch_size / max_batch", file=sys.stderr)
    return 2


def _quiet_optional_backends() -> None:
    """bitsandbytes and DeepSpeed, when installed (the test extra has them), are imported by peft / accelerate in
    every run and warn about kernels and accelerators the run does not use: a newcomer reads that as broken."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # peft 0.21 asks transformers 5.23 a deprecated question on every model it wraps; nothing for a user to do
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if "DS_ACCELERATOR" not in os.environ and importlib.util.find_spec("deepspeed") is not None:
        import torch

        if not torch.cuda.is_available():  # DeepSpeed warns when it has to guess; on a GPU it finds CUDA
            os.environ["DS_ACCELERATOR"] = "cpu"


def run(name: str, config: str | None = None, **keys) -> int:
    """Run a command from Python with keys as keyword arguments: `run("eval", predictions="preds.jsonl")`.

    Raises:
        UserError: as the command line would report it (one line), instead of printing it.
    """
    from qwen_sft.config.parse import load_config

    command = importlib.import_module(COMMANDS[name])
    return command.main(load_config(config, keys, command.COMMAND)) or 0


def usage() -> str:
    lines = ["usage: qwen-sft COMMAND [CONFIG.yaml] [--key value ...]   (qwen-sft COMMAND --help lists its keys)",
             "", "commands:"]
    for name, module in COMMANDS.items():
        summary = (importlib.import_module(module).__doc__ or "").strip().split("\n")[0]
        lines.append(f"  {name:<10} {summary}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
