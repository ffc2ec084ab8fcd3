"""The forecast's measurements, taken on the training model as `train` loads it.

What does not need a step (`model_measurements`): the weights, trainable parameters and their gradients, what
autograd saves for a forward (`probe_activations`: probe forwards of three lengths, with and without activation
checkpointing, fitted as K + a x tokens + c x width^2), the disk's speed for a checkpoint-sized write, the free
memory. What does (`step_measurements`): one warm-up and a few timed optimizer steps on the user's data, as
`StepRecord`s. `train` takes those from its own first steps (`step_timer.StepTimer`), so the forecast costs it no
extra step and no second model load; `qwen-sft check`, which trains nothing, runs them itself (`micro_run`: the
optimizer transformers' Trainer would build, on micro-batches drawn as a shuffled epoch would, through the
collator `train` uses) and frees the model afterwards.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qwen_sft.config.schema import Config
from qwen_sft.config.training_args import training_arguments
from qwen_sft.data.collate import VARLEN, training_items, varlen_boundaries
from qwen_sft.model.training import denormals_flushed
from qwen_sft.preflight.forecast import model_flops, model_shape
from qwen_sft.utils.machine import PeakWatch, available_memory, write_speed

PROBE_LENGTHS = (32, 64, 128)
TIMED_STEPS = 3  # after one warm-up step


@dataclass
class StepRecord:
    """One optimizer step: its micro-batches' shapes (rows, width, tokens, trained, seqs), and the seconds spent
    collating them, in their forward and backward passes, and in the optimizer's step."""

    batches: list[dict] = field(default_factory=list)
    collate_s: float = 0.0
    compute_s: float = 0.0
    optimizer_s: float = 0.0


def batch_shape(batch: dict, trained: int) -> dict:
    """A collated micro-batch as the FLOP formula sees it, read on the host: rows and width of input_ids, and the
    sequences attention runs over (each row, or each example under varlen: `seq_lengths`)."""
    rows, width = batch["input_ids"].shape
    seqs = batch.get("seq_lengths") or [width] * rows
    return {"rows": rows, "width": width, "tokens": rows * width, "trained": trained, "seqs": list(seqs)}


def model_measurements(model, cfg: Config, dtype: torch.dtype, model_path: str, output_dir: Path,
                       load_s: float) -> dict:
    """What the forecast needs to know of the loaded training model before any step."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trainable = list(_unique(p for p in model.parameters() if p.requires_grad))
    return {
        "load_s": load_s, "probes": probe_activations(model, cfg, device), "shape": model_shape(_base(model).config, cfg),
        "weight_bytes": sum(p.numel() * p.element_size() for p in _unique(model.parameters())),
        "gradient_bytes": sum(p.numel() * p.element_size() for p in trainable),
        "trainable": sum(p.numel() for p in trainable), "element_size": torch.empty((), dtype=dtype).element_size(),
        "file_bytes": _weight_file_bytes(model_path), "available": available_memory(device),
        # a checkpoint holds the trainable weights and two optimizer moments of each
        "write_bytes_per_s": write_speed(output_dir, trainable * 3),
    }


def step_measurements(records: list[StepRecord], peak: int, cfg: Config, shape: dict) -> dict:
    """The timing figures of the forecast from a warm-up step and timed steps (`records[0]` is the warm-up)."""
    timed = records[1:] or records
    flops = [sum(model_flops(b, shape, cfg) for b in r.batches) for r in records]
    seconds = sum(r.compute_s for r in timed)
    rate = sum(flops[1:] or flops) / max(seconds, 1e-9)
    optimizer_s = float(np.median([r.optimizer_s for r in timed]))
    return {
        "timed_steps": len(timed), "seconds": seconds, "flops": sum(flops[1:] or flops), "optimizer_s": optimizer_s,
        "collate_s": float(np.mean([r.collate_s / max(len(r.batches), 1) for r in timed])),
        # the first step also allocates and warms up (optimizer state, kernels): what it took beyond a later one
        "first_step_extra_s": max(0.0, records[0].compute_s - flops[0] / rate)
        + max(0.0, records[0].optimizer_s - optimizer_s),
        "peak": peak, "batches": [b for r in records for b in r.batches],
    }


def micro_run(model, cfg: Config, dtype: torch.dtype, batches: list[list], collator) -> dict:
    """`qwen-sft check`'s steps: `batches` (collator inputs; the first is the warm-up) trained with the optimizer
    transformers' Trainer would build. The model's weights change: it is loaded for this alone."""
    from transformers import Trainer

    args = training_arguments(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.train()
    if args.activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=args.activation_checkpointing_kwargs)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    optimizer = optimizer_cls(trainable, **optimizer_kwargs)
    autocast = torch.autocast(device, dtype=dtype, enabled=cfg.train.finetuning == "full" and dtype != torch.float32)
    records = []
    with denormals_flushed(), PeakWatch() as watch:  # as train steps
        for items in batches:
            records.append(_step(model, optimizer, trainable, items, collator, autocast, device, args.max_grad_norm))
    return step_measurements(records, watch.peak, cfg, model_shape(_base(model).config, cfg))


def _step(model, optimizer, trainable, items, collator, autocast, device: str, max_grad_norm: float) -> StepRecord:
    started = time.perf_counter()
    batch = collator(items)
    collate_s = time.perf_counter() - started
    n_trained = batch.pop("num_trained")
    shape = batch_shape(batch, n_trained)
    batch.pop("seq_lengths", None)
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
    return StepRecord([shape], collate_s, middle - started, time.perf_counter() - middle)


def micro_batches(examples: list, cfg: Config, steps: int = TIMED_STEPS) -> list[list]:
    """A warm-up micro-batch and `steps` timed ones, drawn from the data as a shuffled epoch would."""
    items = training_items(examples, cfg.data.packing, cfg.data.max_length)
    order = list(range(len(items)))
    random.Random(cfg.train.seed + 1).shuffle(order)
    size = cfg.train.per_device_train_batch_size
    batches = [[items[i] for i in order[k:k + size]] for k in range(0, len(order), size)]
    picks = [0, *(1 + round(j * (len(batches) - 2) / max(steps - 1, 1)) for j in range(steps))] \
        if len(batches) > 1 else [0] * (steps + 1)
    return [batches[min(i, len(batches) - 1)] for i in picks]


def probe_activations(model, cfg: Config, device: str) -> dict:
    """Bytes autograd saves in a forward, fitted as K + a x tokens + c x width^2 (one row; the c term is the
    attention mask), without and with activation checkpointing (+ one layer, recomputed in backward).

    Forward passes only, nothing stepped: the weights are untouched, and the model is left as it came (activation
    checkpointing and the input-gradient hook the configuration asks for)."""
    was_training = model.training
    model.train()
    plain = _fit([_saved_bytes(model, n, cfg.data.packing, device) for n in PROBE_LENGTHS])
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    try:
        checkpointed = _fit([_saved_bytes(model, n, cfg.data.packing, device) for n in PROBE_LENGTHS])
    finally:
        model.activation_checkpointing_disable()
        model.disable_input_require_grads()
        if cfg.train.gradient_checkpointing:  # load_for_training turned it on for LoRA (peft's recipe)
            model.enable_input_require_grads()
        model.train(was_training)
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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _weight_file_bytes(model_path: str) -> int:
    path = Path(model_path)
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) if path.is_dir() else 0
