"""Show what each example becomes (text, token ids, trained tokens) before spending a GPU-hour on it."""

import json
import sys
from dataclasses import dataclass

from qwen_sft.config.schema import Command, Config, arg


@dataclass
class PreviewOptions:
    """preview"""

    n: int = arg(3, "how many examples to show (0 = all)", low=0)
    json_lines: bool = arg(False, "print one JSON object per example (input_ids, labels, text) instead")
    color: bool | None = arg(None, "mark trained tokens green (default: when stdout is a terminal); else [[...]]")


COMMAND = Command(parts=(("model", ("model", "template")),
                         ("data", ("data", "data_format", "skip_bad", "max_length", "loss")),
                         ("train", ("seed",))),  # the seed picks a data mix's examples, as in training
                  options=PreviewOptions, required=("data",))


def main(cfg: Config) -> int:
    from qwen_sft.data.dataset import load_examples
    from qwen_sft.model.inference import load_inference_tokenizer
    from qwen_sft.template.preview import highlight

    _, tokenizer, template = load_inference_tokenizer(cfg.model)
    data, opts = cfg.data, cfg.command
    encoded = load_examples(data.data, tokenizer, template, fmt=data.data_format, loss=data.loss,
                            max_length=data.max_length, skip_bad=data.skip_bad, seed=cfg.train.seed)
    shown = list(zip(encoded.samples, encoded.examples))[:opts.n or None]
    color = sys.stdout.isatty() if opts.color is None else opts.color
    for sample, example in shown:
        if opts.json_lines:
            print(json.dumps({"where": sample.where, "input_ids": example.input_ids, "labels": example.labels,
                              "text": tokenizer.decode(example.input_ids), "truncated": example.truncated},
                             ensure_ascii=False))
            continue
        print(f"=== {sample.where}: {len(example.input_ids)} tokens, {example.num_trained} trained"
              + (" (truncated)" if example.truncated else ""))
        print(highlight(example.input_ids, example.labels, tokenizer, color))
        print(f"input_ids: {example.input_ids}")
        print(f"labels:    {example.labels}\n")
    if not opts.json_lines:
        print(f"{len(shown)} of {len(encoded.examples)} examples shown; {len(encoded.truncated)} of "
              f"{len(encoded.examples)} cut at max_length={data.max_length}; template={template.name} loss={data.loss}")
    return 0
