"""`qwen-sft demo`: the main job on the embedded default model (grows as the pipeline grows)."""

from __future__ import annotations

from pathlib import Path

SAMPLE_TRAIN = Path(__file__).resolve().parents[2] / "data" / "advertise_gen" / "train.jsonl"


def demo() -> int:
    """Build the embedded default model and preview how the bundled sample data is trained."""
    from qwen_sft.model import resolve_model_path
    from qwen_sft.preview import preview

    path = resolve_model_path("tiny")
    print(f"embedded default model: {path}")
    return preview(str(SAMPLE_TRAIN), n=2)
