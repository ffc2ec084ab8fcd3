"""The model as training sees it: LoRA / DoRA adapters or full fine-tuning, and a forward that returns the
summed token loss from the chunked output layer (`loss.py`) instead of full-vocabulary logits."""

from __future__ import annotations

import types

import torch

from qwen_sft.config import Config
from qwen_sft.errors import UserError
from qwen_sft.loss import chunked_cross_entropy, count_trained_tokens
from qwen_sft.model import from_pretrained


def load_for_training(model_path: str, cfg: Config, dtype: torch.dtype):
    """The model with LoRA/DoRA adapters (fp32, on a `dtype` base) or fully trainable (fp32 master weights).

    Raises:
        UserError: LoRA targets that match no module.
    """
    from transformers import AutoModelForCausalLM

    full = cfg.train.finetuning == "full"
    model = from_pretrained(AutoModelForCausalLM, model_path, dtype=torch.float32 if full else dtype)
    model.config.use_cache = False  # no KV cache while training (and packed rows need it off, see collate.py)
    use_chunked_loss(model, cfg.train.chunk_size)
    if full:
        return model
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.targets,
                             use_dora=cfg.train.finetuning == "dora", task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, peft_config, autocast_adapter_dtype=True)  # adapters in fp32
    except ValueError as err:
        raise UserError(f"lora.targets {lora.targets}: {str(err).splitlines()[0]}") from None
    if cfg.train.gradient_checkpointing:
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
