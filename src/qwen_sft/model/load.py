"""Loading: a model name resolved to a directory, and model + tokenizer loaded with one-line errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from qwen_sft.config.dtype import resolve_dtype
from qwen_sft.model.checkpoint import check_model_dir
from qwen_sft.model.tiny import tiny_path
from qwen_sft.runs.run_config import check_adapter_base
from qwen_sft.utils.errors import UserError
from qwen_sft.utils.modelscope import download_model, modelscope_id

log = logging.getLogger(__name__)


def resolve_model_path(name: str | Path) -> str:
    """`tiny` / `tiny-qwen2.5` / `tiny-qwen3` → the built embedded default; a ModelScope id → its downloaded dir
    (`utils/modelscope.py`); a local dir → checked for weights; anything else → hub id."""
    if modelscope_id(str(name)):
        name = download_model(str(name))
    built = tiny_path(str(name))
    if built is not None:
        return built
    path = Path(name)
    if path.exists():
        check_model_dir(path)
        return str(path)
    if str(name).count("/") != 1:  # not a hub id either
        raise UserError(f"model {name!r}: no such directory (and not a hub id like Qwen/Qwen1.5-7B-Chat)")
    return str(name)


def from_pretrained(loader, path: str, **kwargs):
    """`loader.from_pretrained(path)`, with a hub id that cannot be reached (or a broken checkpoint) reported as
    one line instead of transformers' traceback.

    Raises:
        UserError: naming the model and what went wrong.
    """
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as err:  # transformers/huggingface_hub report unreachable or missing repos as OSError
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        raise UserError(f"model {path}: cannot be loaded{offline}: {_first_line(err)}; check the path or hub id, "
                        "or download it first (huggingface-cli download ID)") from None


def _first_line(err: Exception) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer, path)


def load_model(path: str | Path, adapter: str | Path | None = None, dtype: str | torch.dtype = "auto",
               device: str | None = None):
    """Load a model for inference: eval mode, on `device`, adapter applied (not merged). Its tokenizer is
    `tokenizer_dir`'s (loaded by the caller, once).

    Raises:
        UserError: for a missing model / adapter dir, or an adapter trained on a different base.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "tf32":  # fp32 weights, TF32 matmuls (Ampere+ GPUs; no effect on CPU)
        torch.set_float32_matmul_precision("high")
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device=device)
    model = from_pretrained(AutoModelForCausalLM, path, dtype=torch_dtype)
    if adapter is not None:
        from peft import PeftModel

        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").exists():
            raise UserError(f"adapter {adapter}: no adapter_config.json (not a peft adapter dir)")
        check_adapter_base(adapter, model.config)
        model = PeftModel.from_pretrained(model, str(adapter))
    return model.to(device).eval()


def tokenizer_dir(model_path: str, adapter: str | Path | None = None) -> str:
    """Where the tokenizer of `model_path` (+ `adapter`) lives: the adapter dir when training saved one there (it is
    the one training used), else the model's."""
    if adapter is not None and (Path(adapter) / "tokenizer_config.json").exists():
        return str(adapter)
    return model_path
