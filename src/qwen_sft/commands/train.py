"""Fine-tune a Qwen model with LoRA, DoRA or full fine-tuning: `qwen-sft train CONFIG.yaml [--key value ...]`."""

from qwen_sft.config import TRAIN as COMMAND  # noqa: F401 - the command's keys
from qwen_sft.config import Config


def main(cfg: Config) -> int:
    from qwen_sft.train import train

    train(cfg)
    return 0
