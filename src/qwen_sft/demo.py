"""`qwen-sft demo`: the main job end to end on the embedded default model, in a few minutes on a CPU.

Builds `tiny` (random-init Qwen1.5 architecture, real tokenizer), trains LoRA on the bundled
AdvertiseGen-style samples, draws the loss curve, generates for the held-out samples, scores them and
prints three generations. A random-init model trained for minutes writes poor ads: the point is the whole
pipeline, the falling loss and where everything lands, not the prose.
"""

from __future__ import annotations

import json
from pathlib import Path

from qwen_sft.errors import UserError

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "advertise_gen"


def demo(*, output_dir: str = "runs/demo", max_steps: int = 60, eval_examples: int = 16,
         max_new_tokens: int = 48) -> int:
    """Train LoRA on the bundled sample data with the embedded model, then evaluate and show generations.

    Args:
        output_dir: where the adapter, loss.png, predictions and metrics go.
        max_steps: optimizer steps (batch 4 x 2 accumulation); 60 take about three minutes on 2 CPU cores.
        eval_examples: held-out samples to generate for and score.
        max_new_tokens: tokens generated per held-out sample.
    """
    from qwen_sft.config import load_config
    from qwen_sft.evaluate import evaluate_command
    from qwen_sft.generate import predict
    from qwen_sft.model import resolve_model_path
    from qwen_sft.train import train

    train_file, dev_file = DATA_DIR / "train.jsonl", DATA_DIR / "dev.jsonl"
    if not train_file.exists():
        raise UserError(f"{train_file}: missing; run the demo from a checkout of the repository")
    out = Path(output_dir)
    print(f"[1/4] embedded default model: {resolve_model_path('tiny')}")
    cfg = load_config(None, dict(
        model="tiny", data=str(train_file), output_dir=str(out), template="qwen", loss="all", max_length=256,
        finetuning="lora", learning_rate=2e-3, max_steps=max_steps, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, lr_scheduler_type="cosine", warmup_ratio=0.05, logging_steps=2,
        save_steps=max(max_steps // 2, 1), save_total_limit=1, seed=42, overwrite=True, resume="never",
        **{"lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.05}))
    print(f"[2/4] training LoRA for {max_steps} steps on {train_file.name} ...")
    train(cfg)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    print(f"      loss {losses[0]:.2f} -> {losses[-1]:.2f}; curve: {out / 'loss.png'}")

    held_out = out / "dev_sample.jsonl"
    held_out.write_text("".join(dev_file.read_text(encoding="utf-8").splitlines(keepends=True)[:eval_examples]),
                        encoding="utf-8")
    predictions = out / "predictions.jsonl"
    print(f"[3/4] generating for {eval_examples} held-out samples ...")
    predict(data=str(held_out), output=str(predictions), adapter=str(out), max_new_tokens=max_new_tokens,
            batch_size=eval_examples)
    print("[4/4] scoring:")
    evaluate_command(predictions=str(predictions), output_dir=str(out))
    print("\nthree generations (prompt → prediction | reference):")
    for row in [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()][:3]:
        print(f"  {row['instruction']}\n    → {row['prediction']!r}\n    | {row['output'][:60]}…")
    print(f"\nadapter, tokenizer, run_config.yaml, train_log.jsonl, loss.png, predictions.jsonl, metrics.json: {out}/")
    print(f"next: qwen-sft chat --adapter {out}    |    qwen-sft merge --adapter {out} --output {out}-merged")
    return 0
