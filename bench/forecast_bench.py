"""The forecast on this machine: `qwen-sft check`'s predicted peak memory and wall time vs a real `train` run.

    python bench/forecast_bench.py            # GPU: a random-init Qwen1.5-0.5B shape, LoRA, bf16, packed rows
    python bench/forecast_bench.py --smoke    # CPU: the embedded `tiny` model (tests run this)

Same process for both (`forecast_vs_measured`: forecast, free, reset the peak counter, train): on a GPU the figures
are device memory allocated and wall time from the model load to the end of `train`.
The data is the AdvertiseGen sample in data/; the model has the shape of gpu_bench.py's MODELS entry, random
weights written to a temporary dir with the embedded model's tokenizer (no download). One markdown row per run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from gpu_bench import MODELS, QWEN  # bench/ is on sys.path: scripts here are run as `python bench/NAME.py`

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT / "data" / "advertise_gen" / "train.jsonl"
COLUMNS = ["model", "run", "peak forecast / measured", "error", "wall forecast / measured", "error",
           "tokens/s forecast / measured"]


def model_dir(name: str, into: Path) -> str:
    """A checkpoint dir of the named shape with random bf16 weights and the embedded tokenizer; `tiny` as it is."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from qwen_sft.model.load import resolve_model_path

    tiny = Path(resolve_model_path("tiny"))
    if name == "tiny":
        return str(tiny)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**{**QWEN, "eos_token_id": 151645, "bos_token_id": None,
                                            "pad_token_id": 151643}, **MODELS[name])).to(torch.bfloat16)
    model.save_pretrained(into)
    for file in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(tiny / file, into / file)
    return str(into)


def forecast_vs_measured(values: dict) -> dict:
    """Forecast the run `values` (train config keys) describes, then run it and measure.

    Returns:
        {"forecast": {"peak", "wall_s", "tokens_per_s"}, "measured": {same}, "error_percent": {"peak", "wall_s"}}.

    Raises:
        UserError: as `train` does.
    """
    import gc
    import json

    import torch

    from qwen_sft.config.parse import load_config
    from qwen_sft.preflight.check import check
    from qwen_sft.preflight.report import CHECK_FILE
    from qwen_sft.train.recipe import train

    report = check(load_config(None, {**values, "forecast": True, "dry_run": False}))
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = load_config(None, {**values, "forecast": False, "dry_run": False, "force": True})
    output_dir = train(cfg)
    measured = json.loads((output_dir / CHECK_FILE).read_text(encoding="utf-8"))["measured"]
    predicted = {"peak": report.forecast["memory"]["peak"], "wall_s": report.forecast["time"]["wall_s"],
                 "tokens_per_s": report.forecast["time"]["tokens_per_s"]}
    got = {"peak": measured["peak"], "wall_s": measured["wall_s"], "tokens_per_s": measured["tokens_per_s"]}
    return {"forecast": predicted, "measured": got,
            "error_percent": {k: round(100 * (predicted[k] - got[k]) / got[k], 1) for k in ("peak", "wall_s")}}


def run(name: str, steps: int, seq_len: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="forecast-bench-") as tmp:
        path = model_dir(name, Path(tmp) / "model")
        values = dict(model=path, data=str(DATA), output_dir=str(Path(tmp) / "out"), packing=True,
                      max_length=seq_len, per_device_train_batch_size=1, max_steps=steps, logging_steps=min(5, steps // 2),
                      save_strategy="no", overwrite=True, resume="never")
        return {"model": name, "run": f"LoRA, packed {seq_len}, {steps} steps", **forecast_vs_measured(values)}


def row(r: dict) -> str:
    f, m, e, gib = r["forecast"], r["measured"], r["error_percent"], 2 ** 30
    cells = [r["model"], r["run"], f"{f['peak'] / gib:.2f} / {m['peak'] / gib:.2f} GiB", f"{e['peak']:+.0f} %",
             f"{f['wall_s']:.1f} / {m['wall_s']:.1f} s", f"{e['wall_s']:+.0f} %",
             f"{f['tokens_per_s']:.0f} / {m['tokens_per_s'] or 0:.0f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, the embedded tiny model, a few steps")
    parser.add_argument("--models", default=None, help="comma-separated, from: " + ", ".join(MODELS))
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 30; smoke 4)")
    parser.add_argument("--seq-len", type=int, default=None, help="packed row length (default 2048; smoke 256)")
    parser.add_argument("--table", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()
    names = ["tiny"] if args.smoke else (args.models or "Qwen1.5-0.5B").split(",")
    steps, seq_len = args.steps or (4 if args.smoke else 30), args.seq_len or (256 if args.smoke else 2048)
    results = [run(name, steps, seq_len) for name in names]
    text = "\n".join(["forecast vs measured (same process; GPU: device memory allocated)", "",
                      "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS), *(row(r) for r in results)])
    print("\n" + text)
    if args.table:
        args.table.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
