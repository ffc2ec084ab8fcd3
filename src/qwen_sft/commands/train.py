"""Fine-tune a Qwen model with LoRA, DoRA or full fine-tuning: `qwen-sft train CONFIG.yaml [--key value ...]`."""

from qwen_sft.config.schema import TRAIN, Config

COMMAND = TRAIN


def main(cfg: Config) -> int:
    from qwen_sft.train.recipe import train

    train(cfg)
    return 0
