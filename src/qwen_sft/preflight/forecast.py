"""Memory and time forecast of a training run, from its data, config and the measurements of `measure.py` (a few
real steps: `train`'s first ones, or `check`'s micro-run). How each figure is made (docs/check.md has the errors):

memory  peak = base + weights + optimizer state + allocator factor x max(activations + loss term, gradients)
  base         the process's resident memory before the model loads (CPU; 0 on a GPU: device memory only)
  weights      the training model's parameters as loaded (adapters included; a tied matrix once)
  gradients    trainable parameters x their element size; optimizer: x 8 bytes (AdamW's two fp32 moments;
               SGD 0, 8-bit optimizers 2)
  activations  what autograd saves, measured on the real model by probe forwards of three lengths and fitted
               as K + a x tokens + c x rows x width^2 (the attention mask), evaluated at the largest planned
               micro-batch; with gradient checkpointing: the checkpointed probes plus one layer recomputed
  loss term    the chunked output layer's exponentials: chunk rows x vocabulary x element size (`loss.py`)
  allocator    what the allocator keeps beyond the live bytes: the micro-run measures its own peak and scales
               the step's bytes by the ratio (CPU: glibc keeps freed blocks; on a GPU it is ~1)
  CPU loading also maps the weight files: the peak is the larger of training and base + weights + file bytes.
time    the measured steps time forward+backward on the data's micro-batches and the optimizer step; the run's
        model FLOPs (per padded token through the decoder, per trained token through the output layer,
        attention per row) divided by the measured FLOP/s, plus the optimizer steps, evaluation, checkpoint
        writes at the measured disk speed, model loading (measured) and fixed framework costs.
"""

from __future__ import annotations

import copy
import math
import os
import random

import torch

from qwen_sft.config.dtype import resolve_dtype
from qwen_sft.config.schema import Config
from qwen_sft.data.collate import VARLEN, training_items
from qwen_sft.model.attention import attention_implementation
from qwen_sft.model.loss import vocab_tiles
from qwen_sft.runs.train_log import FIRST_PLOT_S, PLOT_EVERY_S, PLOT_S
from qwen_sft.template.encode import count_trained

ALLOCATOR_MAX = 4.0  # the micro-run's measured allocator factor is clamped to [1, this]
# CPU: glibc's heap keeps growing for the first tens of steps past what 4 steps show (its mmap threshold adapts,
# freed blocks of other sizes are not reused); measured on CPU runs of `tiny` (docs/check.md)
HEAP_GROWTH = 1.25
STEP_OVERHEAD_S = 0.004  # Trainer bookkeeping per optimizer step beyond the timed step (callbacks, scheduler)
SETUP_S = 0.3  # Trainer construction, accelerate preparation
FINISH_S = 0.3  # saving the tokenizer and run_config.yaml, the last loss.png


def forecast(measured: dict, cfg: Config, examples: list, eval_examples: list | None = None, resume_step: int = 0,
             base_bytes: int = 0) -> dict:
    """Memory and time forecast of training `examples` (and evaluating `eval_examples`, the encoded examples as
    `train` uses them) with `cfg` on this machine, from the measurements of `measure.py`.

    Args:
        resume_step: the optimizer step a resumed run starts from.
        base_bytes: the process's resident memory before the model loaded (CPU forecasts).
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dtype = resolve_dtype(cfg.model.dtype, allow_fp16=cfg.model.allow_fp16)
    varlen = attention_implementation(cfg.train.attention, cfg.data.packing, dtype, device) == VARLEN
    plan = plan_batches(examples, cfg, world, resume_step, varlen=varlen)
    eval_plan = plan_batches(eval_examples, _eval_config(cfg), world, varlen=varlen)["plan"][0] if eval_examples else None
    base = base_bytes if device == "cpu" else 0
    memory = predict_memory(plan["plan"], measured, cfg, measured["shape"], base, device)
    memory["available"] += base  # the base is part of the peak
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return {"device": name, "dtype": str(dtype).removeprefix("torch."), "memory": memory,
            "time": predict_time(plan, measured, cfg, measured["shape"], eval_plan),
            "measurements": {k: measured[k] for k in ("load_s", "seconds", "optimizer_s", "first_step_extra_s",
                                                      "write_bytes_per_s", "peak")}}


def _eval_config(cfg: Config) -> Config:
    """The eval set planned as one pass in order, at the eval batch size."""
    out = copy.deepcopy(cfg)
    out.train.per_device_train_batch_size, out.train.max_steps = cfg.train.per_device_eval_batch_size, -1
    out.train.num_train_epochs, out.train.gradient_accumulation_steps = 1.0, 10 ** 9  # one pass, one "step"
    out.train.extra = {**cfg.train.extra, "train_sampling_strategy": "sequential"}
    return out


def plan_batches(examples: list, cfg: Config, world: int = 1, resume_step: int = 0, varlen: bool = False) -> dict:
    """The micro-batches one process will run: each as rows, width, tokens (padded), trained tokens, and the
    sequences attention runs over (`seqs`: each padded row, or each example under varlen attention).

    Order follows the sampler's kind (shuffled per epoch with the seed, or sequential); the exact order of
    transformers' sampler differs, the sizes' distribution does not.
    """
    t, d = cfg.train, cfg.data
    items = [item if isinstance(item, list) else [item] for item in training_items(examples, d.packing, d.max_length)]
    sizes = [([len(r["input_ids"]) for r in item], sum(count_trained(r["labels"]) for r in item)) for item in items]
    per_process = sizes[::world] if world > 1 else sizes
    batch, accumulation = t.per_device_train_batch_size, t.gradient_accumulation_steps
    per_epoch = math.ceil(len(per_process) / batch)
    steps_per_epoch = math.ceil(per_epoch / accumulation)
    steps = t.max_steps if t.max_steps > 0 else math.ceil(t.num_train_epochs * steps_per_epoch)
    sequential = t.extra.get("train_sampling_strategy") == "sequential"
    rng, plan, step = random.Random(t.seed), [], 0
    while step < steps and per_process:
        order = list(range(len(per_process)))
        if not sequential:
            rng.shuffle(order)
        micro = [order[k:k + batch] for k in range(0, len(order), batch)]
        for first in range(0, len(micro), accumulation):
            if step >= resume_step:
                plan.append([_shape([per_process[i] for i in mb], varlen) for mb in micro[first:first + accumulation]])
            step += 1
            if step >= steps:
                break
    return {"steps": steps, "remaining": steps - min(resume_step, steps), "plan": plan}


def _shape(items: list, varlen: bool) -> dict:
    lengths = [sum(lens) for lens, _ in items]
    width = max(lengths)
    seqs = [n for lens, _ in items for n in lens] if varlen else [width] * len(items)
    return {"rows": len(items), "width": width, "tokens": len(items) * width, "real": sum(lengths),
            "trained": sum(trained for _, trained in items), "seqs": seqs}


def interval_events(start: int, end: int, every: int) -> int:
    """How often the Trainer saves (or evaluates) in steps start+1..end: at each multiple of `every`, and once
    more at the last step when it is not one (transformers' DefaultFlowCallback)."""
    if end <= start:
        return 0
    return end // every - start // every + (1 if end % every else 0)


def model_flops(batch: dict, shape: dict, cfg: Config, forward_only: bool = False) -> float:
    """FLOPs of one micro-batch: matmuls only (norms, activations, the optimizer are left out)."""
    full = cfg.train.finetuning == "full"
    layer = shape["linear"]  # sum of in x out over one decoder layer's linear layers
    body = (2 if forward_only else 6 if full else 4) * layer
    if not full and not forward_only:
        body += 6 * cfg.lora.r * shape["lora_io"]  # LoRA A and B: forward, input and weight gradients
    if cfg.train.gradient_checkpointing and not forward_only:
        body += 2 * layer  # the forward again, in backward
    head = (2 if forward_only else 6 if full else 4) * shape["vocab"] * shape["hidden"]
    attention = 6 * shape["q_dim"] * sum(n * n for n in batch["seqs"]) / (3 if forward_only else 1)
    return shape["layers"] * (batch["tokens"] * body + attention) + batch["trained"] * head


def model_shape(config, cfg: Config) -> dict:
    """The sizes the FLOP and memory formulas need, from a transformers model config."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    io = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, inter),
          "up_proj": (h, inter), "down_proj": (inter, h)}
    return {"hidden": h, "layers": layers, "vocab": config.vocab_size, "q_dim": q,
            "linear": sum(i * o for i, o in io.values()),
            "lora_io": sum(i + o for name, (i, o) in io.items() if name in cfg.lora.targets)}


def loss_bytes(trained: int, cfg: Config, shape: dict, element: int, device: str) -> int:
    """The chunked loss's buffers for one micro-batch: E of one chunk (+ the bf16 path's tile scratch)."""
    if not trained:
        return 0
    chunk = cfg.train.chunk_size
    rows = -(-trained // -(-trained // chunk))  # balanced chunks, as loss.py cuts them
    width = max(b - a for a, b in vocab_tiles(shape["vocab"], None if device == "cpu" else shape["vocab"]))
    scratch = 0 if element == 4 else rows * width * (element + 4)
    return rows * shape["vocab"] * element + scratch


def optimizer_bytes(trainable: int, cfg: Config) -> int:
    optim = str(cfg.train.extra.get("optim", "adamw")).lower()
    per = 0 if optim.startswith("sgd") or "adafactor" in optim else 2 if "8bit" in optim else 8
    return trainable * per


def activation_bytes(probe: list[float], batch: dict) -> float:
    """What autograd saves for a micro-batch, from a fitted probe (K, a, c): K + a x tokens + c x rows x width^2."""
    k, a, c = probe
    return k + a * batch["tokens"] + c * batch["rows"] * batch["width"] ** 2


def step_bytes(batch: dict, measured: dict, probe: list[float], cfg: Config, shape: dict, device: str) -> dict:
    """What one micro-step adds at its peak: the activations and the loss buffers at the end of the forward, or
    the gradients at the end of the backward (the activations are freed as they fill), whichever is larger."""
    parts = {"activations": activation_bytes(probe, batch),
             "loss": loss_bytes(batch["trained"], cfg, shape, measured["element_size"], device),
             "gradients": measured["gradient_bytes"]}
    return {**parts, "step": max(parts["activations"] + parts["loss"], parts["gradients"])}


def predict_memory(plan: list, measured: dict, cfg: Config, shape: dict, base: int, device: str) -> dict:
    """Predicted peak memory and its parts (bytes) at the plan's most expensive micro-batch.

    peak = base + weights + optimizer + allocator x step: `step_bytes` of the worst batch, scaled by what the
    allocator really used in the micro-run for its own batches (CPU: glibc keeps freed blocks, 1-3x here).
    """
    probes = measured["probes"]
    probe = probes["checkpointed" if cfg.train.gradient_checkpointing else "plain"]
    optimizer = optimizer_bytes(measured["trainable"], cfg)
    batches = [mb for step in plan for mb in step] or measured["batches"]
    worst = max(batches, key=lambda b: step_bytes(b, measured, probe, cfg, shape, device)["step"])
    modelled = max(step_bytes(b, measured, probe, cfg, shape, device)["step"] for b in measured["batches"])
    used = measured["peak"] - base - measured["weight_bytes"] - optimizer
    factor = min(max(used / modelled, 1.0), ALLOCATOR_MAX) if measured["peak"] and modelled else 1.0
    factor *= HEAP_GROWTH if device == "cpu" else 1.0
    step = step_bytes(worst, measured, probe, cfg, shape, device)
    parts = {"base": base, "weights": measured["weight_bytes"], "optimizer": optimizer, "step": step["step"],
             "allocator": (factor - 1.0) * step["step"]}
    peak = sum(parts.values())
    loading = base + measured["weight_bytes"] + measured["file_bytes"] if device == "cpu" else 0
    return {"kind": "resident memory (RSS)" if device == "cpu" else "device memory (allocated)",
            "peak": int(max(peak, loading)), "parts": {k: int(v) for k, v in parts.items()},
            "step": {k: int(v) for k, v in step.items() if k != "step"}, "allocator_factor": round(factor, 2),
            "loading_peak": int(loading), "activations": int(activation_bytes(probes["plain"], worst)),
            "activations_checkpointed": int(activation_bytes(probes["checkpointed"], worst)),
            "worst_batch": {k: worst[k] for k in ("rows", "width", "trained")}, "available": measured["available"]}


def predict_time(plan: dict, measured: dict, cfg: Config, shape: dict, eval_plan: list | None) -> dict:
    """Predicted seconds from the model load to the end of `train`, and trained tokens/s."""
    flops_per_s = measured["flops"] / measured["seconds"]
    batches = [mb for step in plan["plan"] for mb in step]
    loop = sum(model_flops(b, shape, cfg) for b in batches) / flops_per_s
    loop += len(plan["plan"]) * (measured["optimizer_s"] + STEP_OVERHEAD_S) + len(batches) * measured["collate_s"]
    loop += measured["first_step_extra_s"]
    t = cfg.train
    start = plan["steps"] - plan["remaining"]
    evals = interval_events(start, plan["steps"], t.eval_steps or t.save_steps) if eval_plan else 0
    eval_s = evals * sum(model_flops(b, shape, cfg, forward_only=True) for b in eval_plan or ()) / flops_per_s
    strategy = t.extra.get("save_strategy", "steps")
    saves = 0 if strategy == "no" else interval_events(start, plan["steps"], t.save_steps) if strategy == "steps" \
        else math.ceil(t.num_train_epochs)
    weights, optimizer = measured["trainable"] * 4, optimizer_bytes(measured["trainable"], cfg)
    save_s = saves * (weights + optimizer) / measured["write_bytes_per_s"]
    final_s = weights / measured["write_bytes_per_s"] + FINISH_S
    plots = FIRST_PLOT_S + PLOT_S * (loop + eval_s) / PLOT_EVERY_S
    parts = {"load": measured["load_s"], "setup": SETUP_S, "loop": loop, "eval": eval_s, "checkpoints": save_s,
             "final_save": final_s, "plots": plots}
    trained = sum(b["trained"] for b in batches)
    return {"steps": plan["remaining"], "total_steps": plan["steps"], "wall_s": sum(parts.values()),
            "parts": {k: round(v, 2) for k, v in parts.items()}, "tokens_per_s": trained / loop if loop else 0.0,
            "trained_tokens": trained, "flops_per_s": flops_per_s, "micro_steps": measured["timed_steps"]}
