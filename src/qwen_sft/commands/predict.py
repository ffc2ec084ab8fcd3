"""Generate an answer for every record of a data file; write them as JSONL (input record + prediction)."""

import sys
from dataclasses import dataclass

from qwen_sft.config.schema import Command, Config, arg


@dataclass
class PredictOptions:
    """predict"""

    output: str | None = arg(None, "JSONL to write: each input record plus `prediction` and `finish_reason` "
                                   "(stop | length)")
    batch_size: int = arg(16, "prompts generated together", low=1)


COMMAND = Command(parts=("model", ("data", ("data", "data_format")), "sampling"), options=PredictOptions,
                  required=("data", "output"))


def main(cfg: Config) -> int:
    from qwen_sft.data.mix import load_one
    from qwen_sft.eval.report import write_predictions
    from qwen_sft.generation.predict import predict_samples, sampling_from
    from qwen_sft.model.inference import load_for_inference

    sampling = sampling_from(cfg.sampling)
    samples = load_one(cfg.data.data, fmt=cfg.data.data_format, require_answer=False, command="predict")
    model, tokenizer, template = load_for_inference(cfg.model)
    results = predict_samples(model, tokenizer, samples, template, sampling, cfg.command.batch_size)
    write_predictions(cfg.command.output, samples, results)
    stopped = sum(reason == "stop" for _, reason in results)
    print(f"wrote {len(results)} predictions to {cfg.command.output} ({stopped} stopped, {len(results) - stopped} hit "
          f"max_new_tokens={sampling.max_new_tokens})", file=sys.stderr)
    return 0
