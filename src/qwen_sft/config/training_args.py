"""transformers' TrainingArguments built from the config: used to train, and to check a config before
anything loads (pass-through keys and their combinations are TrainingArguments' own business)."""

from __future__ import annotations

from qwen_sft.config.dtype import resolve_dtype
from qwen_sft.config.schema import Config


def training_arguments(cfg: Config):
    """transformers' TrainingArguments from the config (pass-through keys, `train.extra`, win), built once per
    config: parsing builds it to check the keys, and the check, the forecast and the Trainer use that one.

    Raises:
        ValueError, TypeError: what TrainingArguments raises for an inconsistent combination.
        UserError: a dtype this machine refuses (fp16 without allow_fp16).
    """
    if cfg.arguments is None:
        cfg.arguments = _build(cfg)
    return cfg.arguments


def _build(cfg: Config):
    import torch
    from transformers import TrainingArguments

    t = cfg.train
    dtype = resolve_dtype(cfg.model.dtype, allow_fp16=cfg.model.allow_fp16)
    has_eval = bool(cfg.data.eval_data)
    full_mixed = t.finetuning == "full" and dtype != torch.float32  # fp32 master weights + autocast
    cuda = torch.cuda.is_available()
    # warmup_steps below 1 is a share of the total steps in transformers 5 (`get_warmup_steps`), which removed
    # warmup_ratio: our warmup_ratio key is passed that way
    return TrainingArguments(**{**dict(
        output_dir=t.output_dir, use_cpu=not cuda, learning_rate=t.learning_rate, num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
        lr_scheduler_type=t.lr_scheduler_type, warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, logging_steps=t.logging_steps, save_steps=t.save_steps,
        save_total_limit=t.save_total_limit, eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps or t.save_steps, seed=t.seed, data_seed=t.seed,
        bf16=full_mixed and dtype == torch.bfloat16, fp16=dtype == torch.float16,
        tf32=True if cfg.model.dtype == "tf32" and cuda else None,
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        remove_unused_columns=False, prediction_loss_only=True, report_to="none", disable_tqdm=False,
        logging_first_step=True, logging_nan_inf_filter=False,  # the filter syncs with the device every step
        dataloader_pin_memory=cuda, ddp_find_unused_parameters=False), **t.extra})
