"""Write the embedded default model (random-init, Qwen architecture, real tokenizer) to a directory."""

from dataclasses import dataclass

from qwen_sft.config.schema import Command, Config, arg


@dataclass
class InitTinyOptions:
    """init-tiny"""

    output_dir: str | None = arg(None, "where to write it")
    seed: int = arg(0, "random-init seed (the built-in `tiny` models use 0)")
    family: str = arg("qwen1.5", "architecture, tokenizer and chat template of: qwen1.5 (`tiny`), qwen2.5 "
                                 "(`tiny-qwen2.5`: grouped-query attention) or qwen3 (`tiny-qwen3`)",
                      choices=("qwen1.5", "qwen2.5", "qwen3"))


COMMAND = Command(parts=(), options=InitTinyOptions, required=("output_dir",), positional="output_dir")


def main(cfg: Config) -> int:
    from qwen_sft.model.tiny import init_tiny

    print(init_tiny(cfg.command.output_dir, seed=cfg.command.seed, family=cfg.command.family))
    return 0
