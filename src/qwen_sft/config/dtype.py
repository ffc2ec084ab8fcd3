"""The `dtype` key on this machine: bf16 where the device computes it natively, fp32 elsewhere, fp16 refused."""

from __future__ import annotations

from pathlib import Path

import torch

from qwen_sft.utils.errors import UserError


def resolve_dtype(name: str = "auto", allow_fp16: bool = False, device: str | None = None) -> torch.dtype:
    """The training/inference dtype. `auto` = bf16 where the device supports it, else fp32.

    `tf32` is fp32 here; training turns TF32 matmuls on through TrainingArguments(tf32=True), inference in
    `load_model`: this function changes no global setting.

    Raises:
        UserError: for fp16 without allow_fp16 (Qwen's loss goes NaN in fp16), or an unknown name.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "auto":
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    if name in ("fp32", "float32"):
        return torch.float32
    if name == "tf32":
        return torch.float32
    if name in ("bf16", "bfloat16"):
        return torch.bfloat16
    if name in ("fp16", "float16"):
        if not allow_fp16:
            raise UserError("dtype fp16 refused: Qwen's activations overflow fp16 and the loss goes NaN "
                            "(see docs/check.md); use bf16 or fp32 (training: allow_fp16: true forces it)")
        return torch.float16
    raise UserError(f"unknown dtype {name!r}; choose one of: auto, bf16, fp32, tf32, fp16")


def bf16_supported(device: str) -> bool:
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    if device == "cpu":  # avx512_bf16 / AMX make bf16 fast; without them it is emulated and slow
        return _cpu_has_bf16()
    return False


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
