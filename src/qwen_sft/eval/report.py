"""The files `predict` and `eval` write and read: predictions.jsonl, metrics.json, metrics_per_example.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from qwen_sft.data.records import load_samples
from qwen_sft.eval.metrics import METRICS, score_all
from qwen_sft.utils.errors import UserError
from qwen_sft.utils.files import write_jsonl


def write_predictions(path: str | Path, samples, results: list[tuple[str, str]]) -> None:
    """The predictions file `qwen-sft predict` writes: each input record + `prediction` + `finish_reason`."""
    write_jsonl(path, ({**s.record, "prediction": text, "finish_reason": reason}
                       for s, (text, reason) in zip(samples, results)))


def read_predictions(path: str | Path) -> list[dict]:
    """[{"prediction", "reference", "where", "finish_reason"?}] from a `qwen-sft predict` output (any data
    format plus `prediction`) or a LLaMA-Factory `generated_predictions.jsonl` (`predict` / `label`).

    Raises:
        UserError: unreadable file, or a record without a prediction or without a reference answer.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"predictions {path}: no such file (write one with `qwen-sft predict`)")
    first = next((line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()), "")
    if first.startswith("{") and {"predict", "label"} <= set(_json_or_empty(first)):  # LLaMA-Factory's file
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        return [{"prediction": r["predict"], "reference": r["label"], "where": f"{path}:{i + 1}"}
                for i, r in enumerate(rows)]
    out = []
    for sample in load_samples(path, require_answer=False):
        prediction = sample.record.get("prediction")
        if not isinstance(prediction, str):
            raise UserError(f"{sample.where}: no string field 'prediction' (is this a `qwen-sft predict` output?)")
        last = sample.messages[-1]
        if last["role"] != "assistant" or not last["content"].strip():
            raise UserError(f"{sample.where}: no reference answer (the last assistant turn is missing or empty); "
                            "eval needs data with answers")
        out.append({"prediction": prediction, "reference": last["content"], "where": sample.where,
                    "finish_reason": sample.record.get("finish_reason")})
    return out


def _json_or_empty(line: str) -> dict:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def write_report(rows: list[dict], out: Path) -> dict:
    """Score `rows` (from `read_predictions`), write metrics.json and metrics_per_example.jsonl to `out`,
    return the metrics."""
    means, per_example = score_all([r["prediction"] for r in rows], [r["reference"] for r in rows])
    reasons = [r.get("finish_reason") for r in rows]
    metrics = {**means, "num_examples": len(rows), "convention": "llamafactory",
               "finish_reason": {k: reasons.count(k) for k in ("stop", "length") if k in reasons}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_jsonl(out / "metrics_per_example.jsonl", ({"index": i, "where": r["where"], **s,
                                                     "finish_reason": r.get("finish_reason")}
                                                    for i, (r, s) in enumerate(zip(rows, per_example))))
    return metrics


def format_table(metrics: dict) -> str:
    lines = [f"{'metric':<10}{'score':>10}"] + [f"{name:<10}{metrics[name]:>10.4f}" for name in METRICS]
    lines.append(f"({metrics['num_examples']} examples, LLaMA-Factory convention: x100, ROUGE on jieba words, "
                 "BLEU-4 on characters)")
    return "\n".join(lines)
