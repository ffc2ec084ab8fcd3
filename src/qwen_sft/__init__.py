"""qwen-sft: fine-tune, evaluate and serve Qwen-family chat models."""

__version__ = "0.1.0"
