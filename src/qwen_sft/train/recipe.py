"""`train(cfg)`: LoRA / DoRA / full SFT on transformers' Trainer, from a validated config to a saved model.

The steps, in order: check the output dir (before anything loads) → tokenise the data → load the model →
build the Trainer (`trainer.SFTTrainer`) → train → save the adapter/model, tokenizer, run_config.yaml and
loss.png. Under `torchrun` / `accelerate launch` every process runs this; the main one writes the files.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from qwen_sft.config.dtype import resolve_dtype
from qwen_sft.config.schema import Config
from qwen_sft.config.training_args import training_arguments
from qwen_sft.data.collate import make_collator, training_items
from qwen_sft.data.dataset import load_examples
from qwen_sft.data.mix import write_report
from qwen_sft.model.attention import check_attention
from qwen_sft.model.checkpoint import add_legacy_config_keys
from qwen_sft.model.load import load_tokenizer, resolve_model_path
from qwen_sft.model.training import check_quantization, denormals_flushed, load_for_training
from qwen_sft.preflight.check import check_before_training, dry_run
from qwen_sft.preflight.estimate import finish_check, forecast_training
from qwen_sft.runs.checkpoints import check_free_space, checkpoint_step, latest_checkpoint, prepare_output_dir
from qwen_sft.runs.run_config import write_run_info
from qwen_sft.template.proof import resolve_template
from qwen_sft.train.trainer import NonFiniteLoss, SFTTrainer
from qwen_sft.utils.errors import UserError
from qwen_sft.utils.machine import current_rss

log = logging.getLogger(__name__)


def train(cfg: Config) -> Path:
    """Run the training job `cfg` describes; returns the output dir.

    Raises:
        UserError: for bad data, model or output dir, and when the loss stops being finite.
    """
    from accelerate import PartialState

    output_dir = Path(cfg.train.output_dir)
    check_quantization(cfg)
    check_attention(cfg.train.attention, cfg.data.packing)
    if cfg.train.dry_run:  # `qwen-sft check` alone: nothing is loaded for training, nothing but check.json written
        return dry_run(cfg)
    on_cpu = not torch.cuda.is_available()
    process = PartialState(cpu=on_cpu)  # under torchrun / accelerate launch: joins the process group (gloo on CPU)
    with process.main_process_first():  # builds `tiny` and cleans the output dir once, then the others look
        model_path = resolve_model_path(cfg.model.model or "tiny")
        tokenizer = load_tokenizer(model_path)
        template = resolve_template(cfg.model.template, tokenizer)  # auto: proven against the checkpoint's own
        cfg.model.template = template.name  # run_config.yaml records (and a rerun compares) the real name
        resume_from = prepare_output_dir(cfg, clean=process.is_main_process)
    dtype = resolve_dtype(cfg.model.dtype, allow_fp16=cfg.model.allow_fp16)
    arguments = training_arguments(cfg)  # built once, when the config was parsed

    data = cfg.data
    datasets = [load_examples(source, tokenizer, template, fmt=data.data_format, loss=data.loss,
                              max_length=data.max_length, skip_bad=data.skip_bad, split=split, seed=cfg.train.seed,
                              cache=True)
                if source else None for source, split in ((data.data, "train"), (data.eval_data, "eval"))]
    # prompts, data, checkpoint: a FAIL stops here, before the model loads (unless force)
    report = check_before_training(cfg, model_path, tokenizer, template, datasets, resume_from,
                                   process.is_main_process)
    base_bytes, started = current_rss(), time.perf_counter()
    train_set, eval_set = (training_items(d.examples, data.packing, data.max_length) if d else None
                           for d in datasets)
    if process.is_main_process:
        write_report(output_dir / "data_report.json", {s: d.sources for s, d in zip(("train", "eval"), datasets) if d})
    torch.manual_seed(cfg.train.seed)  # the adapters' initialisation
    model = load_for_training(model_path, cfg, dtype)
    timer = forecast_training(report, cfg, model, model_path, time.perf_counter() - started, base_bytes,
                              datasets[0].examples, datasets[1].examples if datasets[1] else None,
                              checkpoint_step(resume_from) if resume_from else 0) \
        if cfg.train.forecast and process.is_main_process else None
    if cfg.train.finetuning == "full" and process.is_main_process:  # fp32 weights + two Adam moments
        check_free_space(output_dir, 3 * 4 * sum(p.numel() for p in model.parameters()))
    _warn_small_corpus(len(train_set), cfg)

    collator = make_collator(data.packing, tokenizer.pad_token_id, getattr(model.config, "_attn_implementation", None))
    base = getattr(model, "get_base_model", lambda: model)()

    def describe(directory: Path) -> None:
        write_run_info(directory, cfg, base.config)

    trainer = SFTTrainer(model=model, args=arguments, train_dataset=train_set, eval_dataset=eval_set,
                         data_collator=collator, processing_class=tokenizer, describe=describe, step_timer=timer)
    _warn_sharding_ignored(trainer)
    if trainer.is_world_process_zero():
        describe(output_dir)
        trainer.tokens_before_resume = trainer.train_log.trim(checkpoint_step(resume_from) if resume_from else 0)
    try:
        with denormals_flushed():
            trainer.train(resume_from_checkpoint=resume_from)
        trainer.publish_checkpoint()
    except NonFiniteLoss as err:
        last = latest_checkpoint(output_dir)
        raise UserError(f"{err}; training stopped. "
                        + (f"The last good checkpoint is {last}: lower learning_rate and run again with "
                           "resume: auto to continue from it" if last else "No checkpoint was saved before it; "
                           "lower learning_rate (or use dtype fp32/bf16) and start again")) from None
    if trainer.is_fsdp_enabled:  # checkpoints stay sharded (fast, resumable); the result is one plain file
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(output_dir))  # every process: FSDP / ZeRO-3 gather the weights; the main one writes
    if trainer.is_world_process_zero():  # adapter (peft layout) or full model, safetensors
        tokenizer.save_pretrained(str(output_dir))
        if cfg.train.finetuning == "full":  # a full model must load in transformers 4.x / vLLM too
            add_legacy_config_keys(output_dir / "config.json")
        trainer.train_log.plot()
        log.info("saved %s to %s (loss curve: %s)", "model" if cfg.train.finetuning == "full" else "adapter",
                 output_dir, trainer.train_log.plot_path)
    finish_check(report, output_dir, trainer.is_world_process_zero())  # forecast vs measured
    return output_dir


def _warn_sharding_ignored(trainer: SFTTrainer) -> None:
    """accelerate runs an FSDP or DeepSpeed config on a machine without GPUs as plain DDP: say so."""
    for kind, enabled in (("FSDP", trainer.is_fsdp_enabled), ("DeepSpeed", trainer.is_deepspeed_enabled)):
        if not enabled and os.environ.get(f"ACCELERATE_USE_{kind.upper()}", "").lower() == "true":
            log.warning("accelerate launch asked for %s, but accelerate runs it as plain DDP without a GPU (every "
                        "process holds the whole model); see the README, Bigger models", kind)


def _warn_small_corpus(n_rows: int, cfg: Config) -> None:
    """qwen1.5-sft's "unscale_() has already been called" corner: a batch larger than the data."""
    t, world = cfg.train, int(os.environ.get("WORLD_SIZE", "1"))
    requested = t.per_device_train_batch_size * t.gradient_accumulation_steps * world
    if n_rows < requested:
        log.warning("the effective batch asked for is %d examples (%d per device x %d accumulation x %d "
                    "processes) but the training set has only %d %s: each optimizer step uses all of them",
                    requested, t.per_device_train_batch_size, t.gradient_accumulation_steps, world, n_rows,
                    "packed rows" if cfg.data.packing else "examples")
