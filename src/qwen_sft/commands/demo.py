"""Fine-tune the embedded model on the bundled ad-copy samples, then generate for held-out ones and score them.

The whole main job in a few minutes on a CPU, no GPU or network: build `tiny` (a random-init model of the
Qwen1.5 architecture with the real tokenizer), fine-tune it on the 220 AdvertiseGen-style training records, draw
the loss curve, generate greedily for held-out records, score them (ROUGE/BLEU, LLaMA-Factory's convention) and
show a few. `tiny` starts from random weights, so the demo trains all of them (`finetuning: full`): LoRA adapts
what a model already knows, and a random model knows nothing. On a real checkpoint, LoRA is the default.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

from qwen_sft.config.schema import Command, Config, arg
from qwen_sft.utils.errors import UserError

DATA_DIR = Path(__file__).resolve().parents[3] / "data" / "advertise_gen"


@dataclass
class DemoOptions:
    """demo"""

    output_dir: str = arg("runs/demo", "where the model, loss.png, predictions and metrics go")
    max_steps: int = arg(150, "optimizer steps of 8 examples", low=1)
    eval_examples: int = arg(16, "held-out samples to generate for and score", low=1)
    max_new_tokens: int = arg(160, "at most this many tokens per generated ad", low=1)


COMMAND = Command(parts=(), options=DemoOptions, positional=None)


def main(cfg: Config) -> int:
    from qwen_sft.config.parse import load_config
    from qwen_sft.data.records import load_samples
    from qwen_sft.eval.report import format_table, read_predictions, write_predictions, write_report
    from qwen_sft.generation.predict import predict_samples
    from qwen_sft.generation.sampler import SamplingParams
    from qwen_sft.model.inference import load_for_inference
    from qwen_sft.model.load import resolve_model_path
    from qwen_sft.train.recipe import train
    from qwen_sft.utils.files import read_jsonl

    opts, started = cfg.command, time.perf_counter()
    train_file, dev_file = DATA_DIR / "train.jsonl", DATA_DIR / "dev.jsonl"
    if not train_file.exists():
        raise UserError(f"{train_file}: missing; run the demo from a checkout of the repository")
    out = Path(opts.output_dir)
    print(f"[1/4] embedded default model `tiny` (random weights, real Qwen tokenizer): {resolve_model_path('tiny')}")
    run = load_config(None, dict(
        model="tiny", data=str(train_file), output_dir=str(out), loss="assistant", max_length=256,
        finetuning="full", learning_rate=1e-3, max_steps=opts.max_steps, per_device_train_batch_size=8,
        lr_scheduler_type="cosine", warmup_ratio=0.05, logging_steps=5, save_strategy="no", seed=42, overwrite=True,
        resume="never", forecast=False))
    # no checkpoints: a full one of even this model is ~1 GB with the optimizer state; no forecast: the checks
    # still run, but the demo's length is fixed and its micro-run would add half a minute
    print(f"[2/4] full fine-tuning for {opts.max_steps} steps x 8 examples of {train_file.name} "
          "(loss on the answers) ...")
    train(run)
    losses = [r["loss"] for r in read_jsonl(out / "train_log.jsonl") if "loss" in r]
    uniform = math.log(151646)  # the loss of a model that knows nothing: every token equally likely
    print(f"      loss {losses[0]:.2f} -> {losses[-1]:.2f} (guessing uniformly: {uniform:.2f}); "
          f"curve: {out / 'loss.png'}")

    print(f"[3/4] generating for {opts.eval_examples} held-out samples of {dev_file.name} (greedy) ...")
    samples = load_samples(dev_file)[:opts.eval_examples]
    run.model.model = str(out)
    model, tokenizer, template = load_for_inference(run.model)
    results = predict_samples(model, tokenizer, samples, template, SamplingParams(max_new_tokens=opts.max_new_tokens),
                              batch_size=opts.eval_examples)
    write_predictions(out / "predictions.jsonl", samples, results)
    print("[4/4] scoring against the reference ads:")
    metrics = write_report(read_predictions(out / "predictions.jsonl"), out)
    print(format_table(metrics))
    stopped = metrics["finish_reason"].get("stop", 0)
    print(f"      {stopped} of {len(results)} answers ended by themselves (the rest hit max_new_tokens)")
    print("\nthree generations (prompt → prediction | reference):")
    for sample, (text, _) in list(zip(samples, results))[:3]:
        print(f"  {sample.record['instruction']}\n    → {text}\n    | {sample.record['output']}")
    print(f"\nmodel, tokenizer, run_config.yaml, train_log.jsonl, loss.png, predictions.jsonl, metrics.json: {out}/")
    print(f"next: qwen-sft chat --model {out}    |    qwen-sft serve --model {out}")
    print(f"demo wall time: {time.perf_counter() - started:.0f} s")
    return 0
