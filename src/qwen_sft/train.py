"""`qwen-sft train CONFIG.yaml [--key value ...]`: LoRA / DoRA / full SFT on transformers' Trainer.

What we add to the Trainer, and why:
  loss        the model's forward returns the SUM of token losses from a chunked output layer (`loss.py`):
              full-vocab logits are never built; the Trainer divides by the trained-token count of the whole
              accumulated batch (`num_items_in_batch`), so gradient accumulation is a true token mean.
  checkpoints written under a staging name, fsynced, then renamed once the weights they hold have
              given a finite loss: a killed or diverged run never leaves a half-written or poisoned
              `checkpoint-N` for `resume: auto` to pick up.
  NaN guard   a non-finite loss (or non-finite weights about to be saved) stops the run at once, leaving
              the last good checkpoint resumable.
  outputs     train_log.jsonl (one JSON per logging step), loss.png (redrawn while training), the
              adapter / model in the standard HF layout, tokenizer, run_config.yaml.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import types
from pathlib import Path

import torch
import yaml
from transformers import Trainer, TrainingArguments

from qwen_sft.collate import PackedCollator, PadCollator, pack_examples
from qwen_sft.config import TrainConfig, load_config, to_dict
from qwen_sft.data import load_samples
from qwen_sft.errors import UserError
from qwen_sft.loss import chunked_cross_entropy, count_trained_tokens
from qwen_sft.model import add_legacy_config_keys, base_model_shape, load_tokenizer, resolve_dtype, resolve_model_path
from qwen_sft.template import IGNORE_INDEX, encode_sample
from qwen_sft.template_proof import resolve_template

log = logging.getLogger(__name__)
STAGING = ".staging"  # checkpoints are written here, then renamed into place
# Keys that may change between an interrupted run and its resumption without making it a different run.
RESUMABLE_CHANGES = {"resume", "overwrite", "learning_rate", "logging_steps", "save_steps", "save_total_limit", "eval_steps",
                     "max_steps", "num_train_epochs", "extra"}


class NonFiniteLoss(RuntimeError):
    pass


def train_command(config: str | None = None, overrides: list[str] | None = None) -> int:
    """Fine-tune a Qwen model: `qwen-sft train CONFIG.yaml [--key value ...]` (keys: see examples/).

    Args:
        config: YAML config file; every key can also be given (or overridden) as --key value.
    """
    train(load_config(config, overrides))
    return 0


def train(cfg: TrainConfig) -> Path:
    """Run a training job described by `cfg`; returns the output dir.

    Raises:
        UserError: for bad data, model or output dir, and when the loss stops being finite.
    """
    from accelerate import PartialState

    output_dir = Path(cfg.output_dir)
    on_cpu = not torch.cuda.is_available()
    process = PartialState(cpu=on_cpu)  # under torchrun / accelerate launch: joins the process group (gloo on CPU)
    with process.main_process_first():  # builds `tiny` and cleans the output dir once, then the others look
        model_path = resolve_model_path(cfg.model)
        resume_from = prepare_output_dir(cfg, output_dir, clean=process.is_main_process)
    dtype = resolve_dtype(cfg.dtype, allow_fp16=cfg.allow_fp16)
    torch.manual_seed(cfg.seed)

    tokenizer = load_tokenizer(model_path)
    train_set = build_dataset(cfg.data, tokenizer, cfg, "train")
    eval_set = build_dataset(cfg.eval_data, tokenizer, cfg, "eval") if cfg.eval_data else None
    model = load_for_training(model_path, cfg, dtype)
    if cfg.finetuning == "full" and process.is_main_process:
        check_free_space(output_dir, 4 * sum(p.numel() for p in model.parameters()), cfg.finetuning)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    requested = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world
    if len(train_set) < requested:  # the spec's "unscale_() has already been called" corner
        log.warning("the effective batch asked for is %d examples (%d per device x %d accumulation x %d "
                    "processes) but the training set has only %d %s: each optimizer step uses all of them",
                    requested, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, world,
                    len(train_set), "packed rows" if cfg.packing else "examples")

    full_mixed = cfg.finetuning == "full" and dtype != torch.float32  # fp32 master weights + autocast
    args = TrainingArguments(**{**dict(
        output_dir=str(output_dir), use_cpu=on_cpu, learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if eval_set is not None else "no",
        eval_steps=cfg.eval_steps or cfg.save_steps, seed=cfg.seed, data_seed=cfg.seed,
        bf16=full_mixed and dtype == torch.bfloat16, fp16=dtype == torch.float16,
        tf32=True if cfg.dtype == "tf32" and torch.cuda.is_available() else None,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        remove_unused_columns=False, prediction_loss_only=True, report_to="none",
        disable_tqdm=False, logging_first_step=True, dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=False), **cfg.extra})  # extra: any other TrainingArguments key
    # packed: one row per bin, except for flash-attention, whose varlen path needs everything in one row
    flash = "flash" in str(getattr(model.config, "_attn_implementation", ""))
    collator = PackedCollator(per_bin=not flash, pad_id=tokenizer.pad_token_id) if cfg.packing \
        else PadCollator(tokenizer.pad_token_id)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                         data_collator=collator, processing_class=tokenizer)
    if trainer.is_world_process_zero():
        write_run_files(cfg, output_dir, model)
        trainer.tokens_before_resume = trim_log(output_dir, checkpoint_step(resume_from) if resume_from else 0)
    # denormals make early fp32 CPU steps 10-30x slower; the setting is process-wide, so it is undone after
    flush_denormals = dtype == torch.float32 and torch.set_flush_denormal(True)
    try:
        trainer.train(resume_from_checkpoint=resume_from)
        trainer.publish_checkpoint()
    except NonFiniteLoss as err:
        last = latest_checkpoint(output_dir)
        raise UserError(f"{err}; training stopped. "
                        + (f"The last good checkpoint is {last}: lower learning_rate and run again with "
                           "resume: auto to continue from it" if last else "No checkpoint was saved before it; "
                           "lower learning_rate (or use dtype fp32/bf16) and start again")) from None
    finally:
        if flush_denormals:
            torch.set_flush_denormal(False)
    if trainer.is_world_process_zero():
        trainer.save_model(str(output_dir))  # adapter (peft layout) or full model, safetensors
        tokenizer.save_pretrained(str(output_dir))
        if cfg.finetuning == "full":  # a full model must load in transformers 4.x / vLLM too
            add_legacy_config_keys(output_dir / "config.json")
        plot_loss(output_dir / "train_log.jsonl", output_dir / "loss.png")
        log.info("saved %s to %s (loss curve: %s)", "adapter" if cfg.finetuning != "full" else "model",
                 output_dir, output_dir / "loss.png")
    return output_dir


def build_dataset(source: str, tokenizer, cfg: TrainConfig, split: str) -> list:
    """Samples → tokenised examples (→ packed bins). Reports truncation; refuses examples with nothing to train."""
    template = resolve_template(cfg.template, tokenizer)
    samples = load_samples(source, fmt=cfg.data_format, skip_bad=cfg.skip_bad)
    examples, truncated = [], 0
    for sample in samples:
        example = encode_sample(sample, tokenizer, template, loss=cfg.loss, max_length=cfg.max_length)
        truncated += example.truncated
        if all(label == IGNORE_INDEX for label in example.labels[1:]):  # position 0 is never predicted
            raise UserError(f"{sample.where}: nothing left to train after truncation to max_length={cfg.max_length} "
                            f"with loss={cfg.loss} (the prompt alone fills it); raise max_length")
        examples.append({"input_ids": example.input_ids, "labels": example.labels})
    if truncated:
        log.warning("%s: %d of %d examples truncated to max_length=%d", source, truncated, len(examples),
                    cfg.max_length)
    log.info("%s set: %d examples, %d tokens", split, len(examples), sum(len(e["input_ids"]) for e in examples))
    return pack_examples(examples, cfg.max_length) if cfg.packing else examples


def load_for_training(model_path: str, cfg: TrainConfig, dtype: torch.dtype):
    """The model with LoRA/DoRA adapters (fp32, on a `dtype` base) or fully trainable (fp32 master weights)."""
    from transformers import AutoModelForCausalLM

    load_dtype = torch.float32 if cfg.finetuning == "full" else dtype
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=load_dtype)
    model.config.use_cache = False  # no KV cache while training
    use_chunked_loss(model, cfg.chunk_size)
    if cfg.finetuning == "full":
        return model
    from peft import LoraConfig, get_peft_model

    peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                             target_modules=cfg.lora.targets, use_dora=cfg.finetuning == "dora",
                             task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, peft_config, autocast_adapter_dtype=True)  # adapters in fp32
    except ValueError as err:
        raise UserError(f"lora.targets {cfg.lora.targets}: {str(err).splitlines()[0]}") from None
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def use_chunked_loss(model, chunk_size: int) -> None:
    """Make `model(input_ids, labels=...)` return the summed token loss without building full logits.

    The forward stays the model's own entry point, so DDP/FSDP wrappers (which only sync through it) and
    peft (which calls it) work unchanged; only the output layer + loss is replaced. Under DeepSpeed ZeRO-3
    the head weight is partitioned and only gathered by the head module's own call, so there the model's
    standard loss (full logits) is used instead.
    """
    standard_forward = model.forward

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None, **kwargs):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        kwargs.pop("num_items_in_batch", None)  # normalisation happens in SFTTrainer.compute_loss
        head = self.lm_head
        if getattr(head.weight, "ds_id", None) is not None:  # DeepSpeed ZeRO-3 partitioned parameter
            out = standard_forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   labels=labels, use_cache=False, **kwargs)
            return CausalLMOutputWithPast(loss=out.loss * count_trained_tokens(labels))  # mean → sum
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False, **kwargs).last_hidden_state
        loss = chunked_cross_entropy(hidden, head.weight, labels, bias=head.bias, chunk_size=chunk_size)
        return CausalLMOutputWithPast(loss=loss)

    model.forward = types.MethodType(forward, model)


class SFTTrainer(Trainer):
    """transformers.Trainer + token-normalised chunked loss, atomic checkpoints, NaN stop, jsonl/PNG logs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = True  # ask the Trainer for num_items_in_batch (trained tokens/step)
        self._loss_shifts_labels = True
        self._tokens_local = 0  # trained tokens seen by this process since the last log
        self._tokens_total = 0
        self._last_log_time = time.perf_counter()
        self._unpublished = None  # step of a checkpoint staged but not yet moved into place
        self.tokens_before_resume = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss_sum = model(**inputs).loss
        n_tokens = count_trained_tokens(inputs["labels"])
        if not torch.isfinite(loss_sum):
            raise NonFiniteLoss(f"loss is {loss_sum.item()} at step {self.state.global_step + 1} "
                                f"(learning_rate={self.args.learning_rate})")
        if model.training:
            self._tokens_local += int(n_tokens)
            self.publish_checkpoint()
        if num_items_in_batch is None:
            loss = loss_sum / max(int(n_tokens), 1)
        else:  # mean over every trained token of the accumulated (and all-process) batch
            loss = loss_sum / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        return (loss, {}) if return_outputs else loss  # no logits: they are never built

    def log(self, logs: dict, start_time=None):
        if "loss" in logs:  # training log: add token counts and throughput
            tokens = torch.tensor(self._tokens_local, device=self.args.device)
            tokens = int(self.accelerator.reduce(tokens, reduction="sum")) if self.accelerator.num_processes > 1 \
                else self._tokens_local
            now = time.perf_counter()
            self._tokens_total += tokens
            logs["tokens"] = self._tokens_total + self.tokens_before_resume
            logs["tokens_per_s"] = round(tokens / max(now - self._last_log_time, 1e-9), 1)
            self._tokens_local, self._last_log_time = 0, now
        super().log(logs, start_time)
        if self.is_world_process_zero():
            append_log(Path(self.args.output_dir), self.state.global_step, self.state.epoch, logs)

    def _get_output_dir(self, trial):
        return os.path.join(self.args.output_dir, STAGING)  # the base class writes checkpoint-N here

    def _save_checkpoint(self, model, trial):
        check_finite_weights(self.model, self.state.global_step)
        super()._save_checkpoint(model, trial)  # → OUTPUT_DIR/.staging/checkpoint-N
        self.accelerator.wait_for_everyone()  # every process has written its RNG state
        self._unpublished = self.state.global_step

    def publish_checkpoint(self) -> None:
        """Move the staged checkpoint into place, once its weights have produced a finite loss.

        Finite weights can still be garbage (after a huge step); the next forward tells. Until then the
        previous checkpoint stays the newest one `resume: auto` sees.
        """
        if self._unpublished is None:
            return
        if self.is_world_process_zero():
            name = f"checkpoint-{self._unpublished}"
            staged, final = Path(self.args.output_dir) / STAGING / name, Path(self.args.output_dir) / name
            fsync_tree(staged)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)  # atomic: a reader sees no checkpoint-N or a complete one
            fsync_dir(final.parent)
            rotate(Path(self.args.output_dir), self.args.save_total_limit)
        self.accelerator.wait_for_everyone()
        self._unpublished = None

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        # The saved states carry the old peak learning rate; a run resumed after a NaN stop is expected
        # to lower it, so the configured one wins: rescale the schedule and the current step's rate.
        scheduler = self.lr_scheduler
        if not checkpoint or not getattr(scheduler, "base_lrs", None) or not scheduler.base_lrs[0]:
            return
        scale = self.args.learning_rate / scheduler.base_lrs[0]
        if scale != 1.0:
            log.info("learning_rate changed on resume: schedule rescaled by %g", scale)
            scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
            for group in self.optimizer.param_groups:
                group["lr"] *= scale
                group["initial_lr"] = group.get("initial_lr", self.args.learning_rate / scale) * scale


def check_finite_weights(model, step: int) -> None:
    for name, param in model.named_parameters():
        if param.requires_grad and not torch.isfinite(param).all():
            raise NonFiniteLoss(f"weights became non-finite ({name}) after step {step}")


def fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step a checkpoint was saved at (its trainer_state.json knows; its name usually says)."""
    state = Path(path) / "trainer_state.json"
    if state.exists():
        return int(json.loads(state.read_text(encoding="utf-8")).get("global_step", 0))
    tail = Path(path).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints (only renamed-into-place ones exist under this name), oldest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def rotate(output_dir: Path, limit: int | None) -> None:
    """Keep the newest `limit` checkpoints. Each old one is first renamed out of sight, so a kill during
    the slow delete never leaves a half-deleted `checkpoint-N` behind."""
    if limit is None or limit <= 0:
        return
    for old in checkpoints(output_dir)[:-limit]:
        trash = output_dir / STAGING / f"deleting-{old.name}"
        trash.parent.mkdir(exist_ok=True)
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def prepare_output_dir(cfg: TrainConfig, output_dir: Path, clean: bool = True) -> str | None:
    """Check the output dir before anything loads; return the checkpoint to resume from (or None).

    Only the main process (`clean`) writes or deletes anything; the others check and read.

    Raises:
        UserError: unwritable dir, a dir holding a different run (unless overwrite), a resume path that
            does not exist.
    """
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output_dir {output_dir}: not writable ({err.strerror})") from None
    check_free_space(output_dir, model_bytes=None)
    if clean:
        shutil.rmtree(output_dir / STAGING, ignore_errors=True)  # a checkpoint a killed run never finished
    previous = output_dir / "run_config.yaml"
    if previous.exists() and not cfg.overwrite:
        old = yaml.safe_load(previous.read_text(encoding="utf-8")) or {}
        new = to_dict(cfg)
        changed = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
        if changed:
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:3])
            raise UserError(f"output_dir {output_dir} holds a different run ({diff}); "
                            "use another output_dir or set overwrite: true")
    if cfg.overwrite and clean:
        for stale in checkpoints(output_dir):
            shutil.rmtree(stale)
        for name in ("train_log.jsonl", "loss.png"):
            (output_dir / name).unlink(missing_ok=True)
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        last = latest_checkpoint(output_dir)
        if last:
            log.info("resuming from %s", last)
        return str(last) if last else None
    if not Path(cfg.resume).is_dir():
        raise UserError(f"resume: {cfg.resume} is not a checkpoint directory (use auto, never or a checkpoint-N dir)")
    return cfg.resume


def check_free_space(output_dir: Path, model_bytes: int | None, finetuning: str = "lora") -> None:
    """Refuse to start where a checkpoint cannot fit: better now than after hours, at the first save.

    Raises:
        UserError: naming the free and the needed space.
    """
    free = shutil.disk_usage(output_dir).free
    # an adapter checkpoint is a few MB; a full one holds fp32 weights + two Adam moments
    needed = 64 << 20 if model_bytes is None or finetuning != "full" else 3 * model_bytes
    if free < needed:
        raise UserError(f"output_dir {output_dir}: only {free / 2**20:.0f} MiB free, a checkpoint needs about "
                        f"{needed / 2**20:.0f} MiB; free some space or choose another output_dir")


def write_run_files(cfg: TrainConfig, output_dir: Path, model) -> None:
    (output_dir / "run_config.yaml").write_text(yaml.safe_dump(to_dict(cfg), allow_unicode=True, sort_keys=False),
                                                encoding="utf-8")
    base = getattr(model, "get_base_model", lambda: model)()
    (output_dir / "base_model.json").write_text(json.dumps({"path": cfg.model, "shape": base_model_shape(base.config)},
                                                           indent=2), encoding="utf-8")


def append_log(output_dir: Path, step: int, epoch: float | None, logs: dict) -> None:
    """One JSON line per logging step; loss.png redrawn from the whole file."""
    record = {"step": step, **{k: _plain(v) for k, v in logs.items()}, "epoch": round(epoch or 0.0, 4)}
    path = output_dir / "train_log.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if "loss" in logs or "eval_loss" in logs:
        plot_loss(path, output_dir / "loss.png")


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def trim_log(output_dir: Path, step: int) -> int:
    """Drop log lines after `step` (a resumed run redoes them); return the trained tokens counted by then."""
    path = output_dir / "train_log.jsonl"
    kept = [r for r in read_log(path) if r["step"] <= step]
    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    return max((r.get("tokens", 0) for r in kept), default=0)


def plot_loss(log_path: Path, png_path: Path) -> None:
    """Training loss (raw and smoothed) and eval loss against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    train_points = [(r["step"], r["loss"]) for r in records if "loss" in r and math.isfinite(r["loss"])]
    eval_points = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train_points:
        return
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps, losses = zip(*train_points)
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, label="train loss")
    ax.plot(steps, ema(losses), color="tab:blue", label="train loss (smoothed)")
    if eval_points:
        ax.plot(*zip(*eval_points), "o-", color="tab:orange", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over trained tokens)")
    ax.set_title(f"{png_path.parent.name}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)  # a viewer never sees a half-written image


def ema(values, weight: float = 0.8) -> list[float]:
    smoothed, current = [], values[0]
    for v in values:
        current = weight * current + (1 - weight) * v
        smoothed.append(current)
    return smoothed


def _plain(value):
    return value.item() if hasattr(value, "item") else value
