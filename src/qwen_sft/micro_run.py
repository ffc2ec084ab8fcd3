"""The forecast's measurements: the model loaded as `train` loads it, a few real training steps, timed.

`measure` loads the training model (`train_model.load_for_training`, adapters and chunked loss included),
counts what autograd saves on probe forwards (`probe_activations`), runs one warm-up and `steps` timed
micro-steps (forward + backward, then the optimizer step transformers' Trainer would build: clipping,
AdamW or what `optim` names) on micro-batches of the user's data through the collator `train` uses, times a
checkpoint-sized write with fsync, and frees everything before returning. Nothing it does is kept: the run
itself starts from the checkpoint again, with its own seed.
"""

from __future__ import annotations

import copy
import gc
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from qwen_sft.attention import VARLEN, attention_implementation
from qwen_sft.collate import PackedCollator, PadCollator, pack_examples, varlen_boundaries
from qwen_sft.config import Config
from qwen_sft.forecast import model_flops, model_shape, plan_batches, predict_memory, predict_time
from qwen_sft.model import resolve_dtype
from qwen_sft.train_args import training_arguments
from qwen_sft.train_model import denormals_flushed, load_for_training
from qwen_sft.usage import PeakWatch, available_memory, write_speed

PROBE_LENGTHS = (32, 64, 128)
TIMED_STEPS = 3


def forecast_run(cfg: Config, model_path: str, pad_id: int, examples: list, eval_examples: list | None = None,
                 resume_step: int = 0, base_bytes: int = 0) -> dict:
    """Memory and time forecast of training `examples` with `cfg` on this machine (see forecast.py).

    Args:
        examples, eval_examples: the encoded training (evaluation) examples, as `train` will use them.
        resume_step: the optimizer step a resumed run starts from.
        base_bytes: the process's resident memory before the model loads (CPU forecasts).
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dtype = resolve_dtype(cfg.model.dtype, allow_fp16=cfg.model.allow_fp16)
    attention = attention_implementation(cfg.train.attention, cfg.data.packing, dtype, device)
    plan = plan_batches(examples, cfg, world, resume_step, varlen=attention == VARLEN)
    eval_plan = plan_batches(eval_examples, _eval_config(cfg), world, varlen=attention == VARLEN)["plan"][0] \
        if eval_examples else None
    collator = make_collator(cfg, pad_id, attention)
    measured = measure(model_path, cfg, dtype, micro_batches(examples, cfg), collator, Path(cfg.train.output_dir))
    memory = predict_memory(plan["plan"], measured, cfg, measured["shape"], base_bytes if device == "cpu" else 0,
                            device)
    memory["available"] += base_bytes if device == "cpu" else 0  # the base is part of the peak
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return {"device": name, "dtype": str(dtype).removeprefix("torch."), "memory": memory,
            "time": predict_time(plan, measured, cfg, measured["shape"], eval_plan),
            "micro_run": {k: measured[k] for k in ("load_s", "seconds", "optimizer_s", "first_step_extra_s",
                                                   "write_bytes_per_s", "peak")}}


def make_collator(cfg: Config, pad_id: int, attention: str | None = None):
    """The collator `train` uses with the model's attention implementation `attention`: packed rows one per bin,
    except under flash-attention (one row) and varlen (one row and the examples' boundaries)."""
    if not cfg.data.packing:
        return PadCollator(pad_id)
    return PackedCollator(per_bin="flash" not in str(attention), pad_id=pad_id, varlen=attention == VARLEN)


def micro_batches(examples: list, cfg: Config, steps: int = TIMED_STEPS) -> list[list]:
    """A warm-up micro-batch and `steps` timed ones, drawn from the data as a shuffled epoch would."""
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    items = pack_examples(rows, cfg.data.max_length) if cfg.data.packing else rows
    order = list(range(len(items)))
    random.Random(cfg.train.seed + 1).shuffle(order)
    size = cfg.train.per_device_train_batch_size
    batches = [[items[i] for i in order[k:k + size]] for k in range(0, len(order), size)]
    picks = [0, *(1 + round(j * (len(batches) - 2) / max(steps - 1, 1)) for j in range(steps))] \
        if len(batches) > 1 else [0] * (steps + 1)
    return [batches[min(i, len(batches) - 1)] for i in picks]


def _eval_config(cfg: Config) -> Config:
    out = copy.deepcopy(cfg)
    out.train.per_device_train_batch_size, out.train.max_steps = cfg.train.per_device_eval_batch_size, -1
    out.train.num_train_epochs, out.train.gradient_accumulation_steps = 1.0, 10 ** 9  # one pass, one "step"
    out.train.extra = {**cfg.train.extra, "train_sampling_strategy": "sequential"}
    return out


def measure(model_path: str, cfg: Config, dtype: torch.dtype, batches: list[list], collator,
            output_dir: Path) -> dict:
    """Measurements for `forecast`. `batches`: collator inputs; the first is the warm-up, the rest are timed."""
    from transformers import Trainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    model = load_for_training(model_path, cfg, dtype).to(device)
    load_s = time.perf_counter() - started
    model.train()
    shape = model_shape(_base(model).config, cfg)
    probes = probe_activations(model, cfg, device)
    args = training_arguments(cfg, dtype)
    if args.activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=args.activation_checkpointing_kwargs)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    optimizer = optimizer_cls(trainable, **optimizer_kwargs)
    autocast = torch.autocast(device, dtype=dtype, enabled=cfg.train.finetuning == "full" and dtype != torch.float32)
    timings = []
    with denormals_flushed(), PeakWatch() as watch:  # as train steps
        for items in batches:
            timings.append(_step(model, optimizer, trainable, items, collator, autocast, device, args.max_grad_norm))
    timed = timings[1:] or timings
    flops = [model_flops(t["shape"], shape, cfg) for t in timings]
    seconds = sum(t["forward_backward_s"] for t in timed)
    rate = sum(flops[1:] or flops) / seconds
    out = {
        "load_s": load_s, "probes": probes, "timed_steps": len(timed), "seconds": seconds,
        "flops": sum(flops[1:] or flops), "optimizer_s": float(np.median([t["optimizer_s"] for t in timed])),
        "collate_s": float(np.mean([t["collate_s"] for t in timed])),
        # the first step also allocates and warms up (optimizer state, kernels): what it took beyond a later one
        "first_step_extra_s": max(0.0, timings[0]["forward_backward_s"] - flops[0] / rate)
        + max(0.0, timings[0]["optimizer_s"] - float(np.median([t["optimizer_s"] for t in timed]))),
        "weight_bytes": sum(p.numel() * p.element_size() for p in _unique(model.parameters())),
        "gradient_bytes": sum(p.numel() * p.element_size() for p in _unique(trainable)),
        "trainable": sum(p.numel() for p in _unique(trainable)),
        "element_size": torch.empty((), dtype=dtype).element_size(),
        "file_bytes": _weight_file_bytes(model_path),
        "write_bytes_per_s": write_speed(output_dir, _checkpoint_tensors(optimizer, trainable)),
        "available": available_memory(device), "shape": shape, "peak": watch.peak,
        "batches": [t["shape"] for t in timings],
    }
    del model, optimizer, trainable
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def _step(model, optimizer, trainable, items, collator, autocast, device: str, max_grad_norm: float) -> dict:
    started = time.perf_counter()
    batch = collator(items)
    collate_s = time.perf_counter() - started
    n_trained = batch.pop("num_trained")
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}  # ints stay
    _sync(device)
    started = time.perf_counter()
    with autocast:
        loss = model(**batch).loss / max(n_trained, 1)
    loss.backward()
    _sync(device)
    middle = time.perf_counter()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    labels, bounds = batch["labels"], batch.get("cu_seq_lens_q")
    seqs = [labels.shape[1]] * labels.shape[0] if bounds is None else torch.diff(bounds).tolist()  # varlen: examples
    shape = {"rows": labels.shape[0], "width": labels.shape[1], "tokens": labels.numel(), "trained": n_trained,
             "seqs": seqs}
    return {"forward_backward_s": middle - started, "optimizer_s": time.perf_counter() - middle,
            "collate_s": collate_s, "shape": shape}


def probe_activations(model, cfg: Config, device: str) -> dict:
    """Bytes autograd saves in a forward, fitted as K + a x tokens + c x width^2 (one row; the c term is the
    attention mask), without and with activation checkpointing (+ one layer, recomputed in backward)."""
    plain = _fit([_saved_bytes(model, n, cfg.data.packing, device) for n in PROBE_LENGTHS])
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    try:
        checkpointed = _fit([_saved_bytes(model, n, cfg.data.packing, device) for n in PROBE_LENGTHS])
    finally:  # undone, input-gradient hook included: the steps run as configured (measure re-enables it)
        model.activation_checkpointing_disable()
        model.disable_input_require_grads()
    layers = _base(model).config.num_hidden_layers
    one_layer = [(p - q) / layers for p, q in zip(plain, checkpointed)]
    return {"plain": plain, "checkpointed": [q + o for q, o in zip(checkpointed, one_layer)]}


def _saved_bytes(model, n: int, packing: bool, device: str) -> int:
    ids = torch.randint(0, 1000, (1, n), device=device)
    inputs = {"input_ids": ids, "labels": ids.clone()}
    if packing:  # two examples in one row, as PackedCollator writes them
        inputs["position_ids"] = torch.cat([torch.arange(n // 2), torch.arange(n - n // 2)])[None].to(device)
        if _base(model).config._attn_implementation == VARLEN:
            inputs.update(varlen_boundaries([n // 2, n - n // 2]))
    else:  # one padded position, so the mask is built as for a padded batch
        inputs["attention_mask"] = torch.ones_like(ids)
        inputs["attention_mask"][0, -1] = 0
        inputs["labels"][0, -1] = -100
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(**inputs)
    del out
    return sum(seen.values())


def _fit(sizes: list[int]) -> list[float]:
    n = np.array(PROBE_LENGTHS, dtype=float)
    return np.linalg.solve(np.stack([np.ones(3), n, n * n], axis=1), np.array(sizes, dtype=float)).tolist()


def _base(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _unique(params):
    seen = set()
    for p in params:
        if p.data_ptr() not in seen:  # tied weights: one matrix
            seen.add(p.data_ptr())
            yield p


def _checkpoint_tensors(optimizer, trainable) -> list[torch.Tensor]:
    """What a checkpoint writes: the optimizer's state tensors, then the trainable weights."""
    state = [v for per_param in optimizer.state.values() for v in per_param.values()
             if torch.is_tensor(v) and v.dim()]
    return state + list(trainable)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _weight_file_bytes(model_path: str) -> int:
    path = Path(model_path)
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) if path.is_dir() else 0
