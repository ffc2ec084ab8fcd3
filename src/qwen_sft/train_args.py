"""transformers' TrainingArguments built from the config: used to train, and to check a config before
anything loads (pass-through keys and their combinations are TrainingArguments' own business)."""

from __future__ import annotations

from qwen_sft.config import Config


def training_arguments(cfg: Config, dtype=None, has_eval: bool | None = None):
    """transformers' TrainingArguments from the config; pass-through keys (`train.extra`) win.

    Args:
        dtype: the resolved training dtype (None: fp32, as when only checking the config).
        has_eval: whether there is an eval set (None: whether `eval_data` is set).

    Raises:
        ValueError, TypeError: what TrainingArguments raises for an inconsistent combination.
    """
    import torch
    from transformers import TrainingArguments

    t = cfg.train
    dtype = dtype or torch.float32
    has_eval = bool(cfg.data.eval_data) if has_eval is None else has_eval
    full_mixed = t.finetuning == "full" and dtype != torch.float32  # fp32 master weights + autocast
    cuda = torch.cuda.is_available()
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
