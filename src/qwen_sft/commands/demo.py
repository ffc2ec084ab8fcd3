"""Train LoRA on the bundled sample data with the embedded model, then evaluate and show generations.

Builds `tiny` (random-init Qwen1.5 architecture, real tokenizer), trains LoRA on the bundled AdvertiseGen-style
samples, draws the loss curve, generates for held-out samples, scores them and prints three generations.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from qwen_sft.config import Command, Config, arg
from qwen_sft.errors import UserError

DATA_DIR = Path(__file__).resolve().parents[3] / "data" / "advertise_gen"


@dataclass
class DemoOptions:
    """demo"""

    output_dir: str = arg("runs/demo", "where the adapter, loss.png, predictions and metrics go")
    max_steps: int = arg(60, "optimizer steps (batch 4 x 2 accumulation)", low=1)
    eval_examples: int = arg(16, "held-out samples to generate for and score", low=1)
    max_new_tokens: int = arg(48, "tokens generated per held-out sample", low=1)


COMMAND = Command(parts=(), options=DemoOptions, positional=None)


def main(cfg: Config) -> int:
    from qwen_sft.arguments import load_config
    from qwen_sft.data import load_samples
    from qwen_sft.evaluate import format_table, read_predictions, write_predictions, write_report
    from qwen_sft.generate import Sampling, predict_samples
    from qwen_sft.model import load_for_inference, resolve_model_path
    from qwen_sft.train import train

    opts = cfg.command
    train_file, dev_file = DATA_DIR / "train.jsonl", DATA_DIR / "dev.jsonl"
    if not train_file.exists():
        raise UserError(f"{train_file}: missing; run the demo from a checkout of the repository")
    out = Path(opts.output_dir)
    print(f"[1/4] embedded default model: {resolve_model_path('tiny')}")
    run = load_config(None, dict(
        model="tiny", data=str(train_file), output_dir=str(out), template="qwen", loss="all", max_length=256,
        finetuning="lora", learning_rate=2e-3, max_steps=opts.max_steps, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, lr_scheduler_type="cosine", warmup_ratio=0.05, logging_steps=2,
        save_steps=max(opts.max_steps // 2, 1), save_total_limit=1, seed=42, overwrite=True, resume="never",
        **{"lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.05}))
    print(f"[2/4] training LoRA for {opts.max_steps} steps on {train_file.name} ...")
    train(run)
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines() if '"loss"' in line]
    print(f"      loss {losses[0]:.2f} -> {losses[-1]:.2f}; curve: {out / 'loss.png'}")

    print(f"[3/4] generating for {opts.eval_examples} held-out samples ...")
    samples = load_samples(dev_file)[:opts.eval_examples]
    run.model.adapter, run.model.model = str(out), None
    model, tokenizer, template = load_for_inference(run.model)
    results = predict_samples(model, tokenizer, samples, template, Sampling(max_new_tokens=opts.max_new_tokens),
                              batch_size=opts.eval_examples)
    predictions = out / "predictions.jsonl"
    write_predictions(predictions, samples, results)
    print("[4/4] scoring:")
    print(format_table(write_report(read_predictions(predictions), out)))
    print("\nthree generations (prompt → prediction | reference):")
    for sample, (text, _) in list(zip(samples, results))[:3]:
        print(f"  {sample.record['instruction']}\n    → {text!r}\n    | {sample.record['output'][:60]}…")
    print(f"\nadapter, tokenizer, run_config.yaml, train_log.jsonl, loss.png, predictions.jsonl, metrics.json: {out}/")
    print(f"next: qwen-sft chat --adapter {out}    |    qwen-sft merge --adapter {out} --output {out}-merged")
    return 0
