"""Merge a LoRA / DoRA adapter into its base model; write a plain HF model (loadable by transformers, vLLM)."""

import sys
from dataclasses import dataclass

from qwen_sft.config.schema import Command, Config, arg


@dataclass
class MergeOptions:
    """merge"""

    output: str | None = arg(None, "directory to write the merged model to")
    dtype: str = arg("auto", "auto = the base checkpoint's dtype (else bf16); fp16 is allowed here, for serving",
                     choices=("auto", "bf16", "fp32", "fp16"))
    overwrite: bool = arg(False, "replace an existing non-empty output dir")


COMMAND = Command(parts=(("model", ("model", "adapter", "template")),), options=MergeOptions,
                  required=("adapter", "output"))


def main(cfg: Config) -> int:
    from qwen_sft.export.merge import merge_adapter

    opts = cfg.command
    path = merge_adapter(cfg.model.adapter, opts.output, model=cfg.model.model, template=cfg.model.template,
                         dtype=opts.dtype, overwrite=opts.overwrite)
    print(f"merged model written to {path}; serve it with: vllm serve {path}", file=sys.stderr)
    return 0
