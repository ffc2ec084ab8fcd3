"""Write the embedded default model (random-init, Qwen architecture, real tokenizer) to a directory."""

from dataclasses import dataclass

from qwen_sft.config import Command, Config, arg


@dataclass
class InitTinyOptions:
    """init-tiny"""

    output_dir: str | None = arg(None, "where to write it")
    seed: int = arg(0, "random-init seed (the built-in `tiny` uses 0)")


COMMAND = Command(parts=(), options=InitTinyOptions, required=("output_dir",), positional="output_dir")


def main(cfg: Config) -> int:
    from qwen_sft.model import init_tiny

    print(init_tiny(cfg.command.output_dir, seed=cfg.command.seed))
    return 0
