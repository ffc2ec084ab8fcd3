"""Score predictions with ROUGE-1/2/L (jieba words) and BLEU-4 (characters), LLaMA-Factory's convention.

Either --predictions FILE (from `qwen-sft predict`), or --data FILE with --model/--adapter to generate greedily
first. Writes metrics.json and metrics_per_example.jsonl (plus predictions.jsonl when it generated) to the output
dir and prints a table.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

from qwen_sft.config.schema import Command, Config, arg
from qwen_sft.utils.errors import UserError


@dataclass
class EvalOptions:
    """eval"""

    predictions: str | None = arg(None, "JSONL written by `qwen-sft predict` (or LLaMA-Factory's "
                                        "generated_predictions.jsonl)")
    output_dir: str | None = arg(None, "where to write the results (default: beside --predictions, else runs/eval)")
    batch_size: int = arg(16, "generate mode: prompts generated together", low=1)


COMMAND = Command(parts=("model", ("data", ("data", "data_format")), ("sampling", ("max_new_tokens",))),
                  options=EvalOptions)


def main(cfg: Config) -> int:
    from qwen_sft.eval.report import format_table, read_predictions, write_report

    opts = cfg.command
    if bool(opts.predictions) == bool(cfg.data.data):
        raise UserError("eval needs either --predictions FILE, or --data FILE (with --model and/or --adapter) "
                        "to generate the predictions first")
    if opts.predictions:
        rows, out = read_predictions(opts.predictions), Path(opts.output_dir or Path(opts.predictions).parent)
    else:
        out = Path(opts.output_dir or "runs/eval")
        rows = generate_predictions(cfg, out / "predictions.jsonl")
    metrics = write_report(rows, out)
    print(format_table(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'metrics_per_example.jsonl'}", file=sys.stderr)
    return 0


def generate_predictions(cfg: Config, path: Path) -> list[dict]:
    """Greedy predictions for every record of the data, written like `qwen-sft predict` writes them."""
    from qwen_sft.data.mix import load_one
    from qwen_sft.eval.report import write_predictions
    from qwen_sft.generation.predict import predict_samples, sampling_from
    from qwen_sft.model.inference import load_for_inference

    samples = load_one(cfg.data.data, fmt=cfg.data.data_format, require_answer=True, command="eval")
    model, tokenizer, template = load_for_inference(cfg.model)
    results = predict_samples(model, tokenizer, samples, template, sampling_from(cfg.sampling), cfg.command.batch_size)
    write_predictions(path, samples, results)
    return [{"prediction": text, "reference": s.messages[-1]["content"], "where": s.where, "finish_reason": reason}
            for s, (text, reason) in zip(samples, results)]
