"""Checkpoint checks: what the model files will make servers and training do.

  checkpoint.eos_pad          the EOS and pad ids of config.json, generation_config.json and the tokenizer agree,
                              and the stop ids include the chat terminator <|im_end|>
  checkpoint.tied_embeddings  tied input/output embeddings noticed (and an untied checkpoint has its output layer)
  checkpoint.dtype            the training dtype is supported here (fp16 is refused, as `train` does)
  checkpoint.sampling         generation_config.json's sampling defaults: which servers apply them

`export/merge.py` writes the ids consistently (`align_stop_tokens`), as Qwen's own chat checkpoints have them.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from qwen_sft.config.dtype import bf16_supported, resolve_dtype
from qwen_sft.config.schema import ModelArgs
from qwen_sft.preflight.report import FAIL, PASS, WARN, Finding
from qwen_sft.utils.errors import UserError

# the generation_config.json keys vLLM (and qwen-sft serve) apply as sampling defaults; do_sample is not one
SERVED_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens")
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
                 "repetition_penalty", "no_repeat_ngram_size", "num_beams", "penalty_alpha")
NEUTRAL = {"temperature": 1.0, "top_p": 1.0, "top_k": 50, "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0,
           "eta_cutoff": 0.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "num_beams": 1}


def checkpoint_file(model: str | Path, name: str) -> Path | None:
    """A file of a local checkpoint dir, or of a hub checkpoint already in the local hub cache (or downloadable)."""
    path = Path(model) / name
    if path.is_file() or Path(model).is_dir():
        return path if path.is_file() else None
    try:
        from transformers.utils import cached_file

        found = cached_file(str(model), name, _raise_exceptions_for_missing_entries=False)
    except Exception:  # offline, gated, no such repo: the hub client raises many types; the file is just unknown
        return None
    return Path(found) if found else None


def read_json(model: str | Path, name: str) -> dict | None:
    path = checkpoint_file(model, name)
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path else None
    except (OSError, ValueError):
        return None


def _ids(value) -> set[int]:
    if value is None:
        return set()
    return set(value) if isinstance(value, list) else {value}


def check_eos_pad(model_dir: str | Path, tokenizer) -> Finding:
    config = read_json(model_dir, "config.json") or {}
    generation = read_json(model_dir, "generation_config.json")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config_eos, tokenizer_eos = _ids(config.get("eos_token_id")), _ids(tokenizer.eos_token_id)
    stop = _ids(generation.get("eos_token_id")) if generation else config_eos  # what servers stop at
    where = str(Path(model_dir) / ("generation_config.json" if generation else "config.json"))
    seen = (f"config.json {sorted(config_eos)}, generation_config.json "
            f"{sorted(stop) if generation else 'absent'}, tokenizer {tokenizer.eos_token!r} {sorted(tokenizer_eos)}")
    fix = ("eos_token_id [<|im_end|>, <|endoftext|>] in generation_config.json, eos_token <|im_end|> in "
           "tokenizer_config.json, eos_token_id <|im_end|> in config.json (as Qwen's chat checkpoints; "
           "qwen-sft merge writes them so)")
    if not (config_eos | tokenizer_eos) <= stop:
        return Finding("checkpoint.eos_pad", FAIL, f"the EOS ids disagree: {seen}: servers reading different files "
                       "stop at different tokens", where=where, fix=fix)
    pads = {name: value for name, value in (("config.json", config.get("pad_token_id")),
                                            ("generation_config.json", (generation or {}).get("pad_token_id")),
                                            ("tokenizer", tokenizer.pad_token_id)) if value is not None}
    if len(set(pads.values())) > 1:
        return Finding("checkpoint.eos_pad", WARN, f"the pad ids disagree: {pads}", where=where,
                       fix="set pad_token_id <|endoftext|> (151643) in config.json and generation_config.json")
    if end not in stop:
        return Finding("checkpoint.eos_pad", WARN, f"the stop ids do not include <|im_end|> ({end}): {seen}; a base "
                       "checkpoint? qwen-sft predict/chat/serve stop there anyway, but other servers given this "
                       "model with an adapter run past the end of the answer", where=where, fix=fix)
    return Finding("checkpoint.eos_pad", PASS, f"EOS ids agree and stop at <|im_end|>: {seen}; pad "
                   f"{sorted(set(pads.values()))}")


def weight_names(model_dir: str | Path) -> set[str] | None:
    """Tensor names stored in the checkpoint (from the safetensors index or header), or None if unknown."""
    index = read_json(model_dir, "model.safetensors.index.json")
    if index:
        return set(index.get("weight_map", {}))
    single = Path(model_dir) / "model.safetensors"  # local only: a hub header would mean downloading the weights
    try:
        with open(single, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            return set(json.loads(f.read(size))) - {"__metadata__"}
    except (OSError, ValueError, struct.error):
        return None


def check_tied(model_dir: str | Path, targets: list[str], finetuning: str) -> Finding:
    config = read_json(model_dir, "config.json") or {}
    tied = bool(config.get("tie_word_embeddings", False))  # Qwen2/Qwen3 configs default to untied
    names = weight_names(model_dir)
    stored = None if names is None else any(n.endswith("lm_head.weight") for n in names)
    where = str(Path(model_dir) / "config.json")
    if not tied and stored is False:
        return Finding("checkpoint.tied_embeddings", FAIL, "config.json says the output layer is not tied to the "
                       "embeddings, but no lm_head.weight is stored: it would be randomly initialised", where=where,
                       fix="set tie_word_embeddings: true in config.json if the model ties them, or restore "
                       "lm_head.weight")
    if tied and stored:
        return Finding("checkpoint.tied_embeddings", WARN, "config.json ties the output layer to the embeddings, "
                       "yet lm_head.weight is stored: transformers ignores it, so the model is not what that tensor "
                       "says", where=where, fix="set tie_word_embeddings: false if the output layer is its own")
    if tied and {"lm_head", "embed_tokens"} & set(targets):
        return Finding("checkpoint.tied_embeddings", WARN, "tied embeddings with lora.targets on lm_head / "
                       "embed_tokens: the adapter changes one use of the shared matrix, not the other", where=where,
                       fix="leave lm_head and embed_tokens out of lora.targets")
    if tied:
        trained = "trained through both uses (full)" if finetuning == "full" else "frozen under the adapters"
        return Finding("checkpoint.tied_embeddings", PASS, f"tied input/output embeddings: one matrix, counted once "
                       f"in the forecast, {trained}")
    return Finding("checkpoint.tied_embeddings", PASS, "untied output layer" +
                   (", lm_head.weight stored" if stored else ""))


def check_dtype(args: ModelArgs, model_dir: str | Path) -> Finding:
    config = read_json(model_dir, "config.json") or {}
    stored = config.get("dtype") or config.get("torch_dtype") or "unknown"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dtype = resolve_dtype(args.dtype, allow_fp16=args.allow_fp16)
    except UserError as err:
        return Finding("checkpoint.dtype", FAIL, str(err), fix="dtype: auto, bf16 or fp32")
    name = str(dtype).removeprefix("torch.")
    if dtype == torch.float16:
        return Finding("checkpoint.dtype", WARN, "fp16 forced (allow_fp16): Qwen's activations overflow it and "
                       "the loss goes NaN", fix="dtype: bf16 or fp32")
    if dtype == torch.bfloat16 and not bf16_supported(device):
        return Finding("checkpoint.dtype", WARN, f"bf16 on a {device} without native bf16: emulated, several times "
                       "slower", fix="dtype: auto (fp32 here)")
    why = f" (auto: {'native bf16' if dtype == torch.bfloat16 else 'no native bf16'} on this {device})" \
        if args.dtype == "auto" else ""
    return Finding("checkpoint.dtype", PASS, f"training in {name}{why}; checkpoint stored as {stored}")


def check_sampling(model_dir: str | Path) -> Finding:
    generation = read_json(model_dir, "generation_config.json")
    where = str(Path(model_dir) / "generation_config.json")
    if generation is None:
        return Finding("checkpoint.sampling", WARN, "no generation_config.json: servers fall back to their own "
                       "sampling defaults and to config.json's single eos id", where=where,
                       fix="copy the base model's generation_config.json beside the weights")
    set_ = {k: generation[k] for k in SAMPLING_KEYS if generation.get(k) is not None
            and generation[k] != NEUTRAL.get(k)}
    ignored = {k: v for k, v in set_.items() if k not in SERVED_KEYS}
    if ignored:
        return Finding("checkpoint.sampling", WARN, f"generation_config.json sets {ignored}, which vLLM and qwen-sft "
                       "serve do not apply: served answers differ from transformers' generate", where=where,
                       fix="remove those keys, or pass them per request")
    if set_ and not generation.get("do_sample"):
        return Finding("checkpoint.sampling", WARN, f"generation_config.json sets {set_} but not do_sample: "
                       "transformers' generate decodes greedily, vLLM and qwen-sft serve sample with them",
                       where=where, fix="set do_sample: true (or remove the sampling keys)")
    if not set_:
        return Finding("checkpoint.sampling", PASS, "no sampling defaults: greedy unless a request asks otherwise")
    return Finding("checkpoint.sampling", PASS, f"sampling defaults {set_}: applied by qwen-sft chat/serve, vLLM "
                   "and transformers alike (predict and eval stay greedy unless set)")
