"""The model as training sees it: LoRA / DoRA adapters (on a bf16/fp32 or a 4-/8-bit quantised base) or full
fine-tuning, and a forward that returns the summed token loss from the chunked output layer (`loss.py`) instead of
full-vocabulary logits."""

from __future__ import annotations

import contextlib
import importlib.util
import types

import torch

from qwen_sft.config.schema import Config
from qwen_sft.model.attention import attention_implementation, check_model
from qwen_sft.model.load import from_pretrained
from qwen_sft.model.loss import chunked_cross_entropy
from qwen_sft.template.encode import IGNORE_INDEX
from qwen_sft.utils.errors import UserError


@contextlib.contextmanager
def denormals_flushed():
    """Training steps with denormal floats flushed to zero, then the process-wide setting restored.

    Denormals make CPU steps 10-30x slower (the loss's exponentials of a confident model, Adam's moments), in fp32
    and in the fp32 parts of a bf16 run alike; `train` and the forecast's micro-run both step inside this, so the
    micro-run times what training runs. A GPU flushes in its kernels anyway."""
    flushed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def check_quantization(cfg: Config) -> None:
    """Refuse a quantised run that cannot work, before any data or model loads.

    Raises:
        UserError: quantization with full fine-tuning, or without bitsandbytes installed.
    """
    if cfg.model.quantization == "none":
        return
    if cfg.train.finetuning == "full":
        raise UserError(f"quantization: {cfg.model.quantization} trains adapters on a frozen quantised base; it "
                        "cannot be used with finetuning: full (use lora or dora, or quantization: none)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"quantization: {cfg.model.quantization} needs bitsandbytes: pip install "
                        "'qwen-sft[qlora]' (CUDA GPUs; recent bitsandbytes also runs 4-bit on CPU, slowly)")


def quantization_config(kind: str, compute_dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for `kind`: 4bit = QLoRA's NF4 with double quantisation, matmuls in
    `compute_dtype` (bf16 on a GPU that has it); 8bit = LLM.int8."""
    from transformers import BitsAndBytesConfig

    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def load_for_training(model_path: str, cfg: Config, dtype: torch.dtype):
    """The model with LoRA/DoRA adapters (fp32, on a `dtype` or quantised base) or fully trainable (fp32 master
    weights), with the attention `cfg.train.attention` picks (attention.py).

    Raises:
        UserError: LoRA targets that match no module; varlen attention on a sliding-window model.
    """
    from transformers import AutoModelForCausalLM

    full = cfg.train.finetuning == "full"
    quantized = cfg.model.quantization != "none"
    load = {"dtype": torch.float32 if full else dtype}
    attention = attention_implementation(cfg.train.attention, cfg.data.packing, dtype,
                                         "cuda" if torch.cuda.is_available() else "cpu")
    if attention:  # else transformers' default (sdpa)
        load["attn_implementation"] = attention
    if quantized:  # each process holds its quantised copy on its own device (no .to() after loading)
        from accelerate import PartialState

        device = PartialState().local_process_index if torch.cuda.is_available() else "cpu"
        load.update(quantization_config=quantization_config(cfg.model.quantization, dtype), device_map={"": device})
    model = from_pretrained(AutoModelForCausalLM, model_path, **load)
    check_model(model.config)
    model.config.use_cache = False  # no KV cache while training (and packed rows need it off, see collate.py)
    if quantized:  # norms and output layer to fp32, inputs that require grad (for checkpointing); peft's recipe
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
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

    The forward stays the model's own entry point, so DDP/FSDP wrappers (which only sync through it) and peft
    (which calls it) work unchanged; only the output layer + loss is replaced. The loss is computed *inside* the
    output layer's own call (`lm_head(hidden, labels=...)`): FSDP (v1 and v2) shards that layer's weight and gathers
    it only around its own forward (peft's wrap policy makes it a unit of its own), so reading `lm_head.weight`
    from outside would see a shard (a DTensor, or FSDP1's empty view). Under DeepSpeed ZeRO-3, which partitions
    the weight the same way but has not been run with this path, the model's standard loss (full logits) is used.
    """
    standard_forward = model.forward
    head = model.lm_head
    head_forward = head.forward

    def head_with_loss(self, hidden, labels=None):
        if labels is None:  # an ordinary call (generation): the layer as it was
            return head_forward(hidden)
        return chunked_cross_entropy(hidden, self.weight, labels, bias=self.bias, chunk_size=chunk_size)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None, **kwargs):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        kwargs.pop("num_items_in_batch", None)  # normalisation happens in SFTTrainer.compute_loss
        if getattr(self.lm_head.weight, "ds_id", None) is not None:  # DeepSpeed ZeRO-3 partitioned parameter
            logits = standard_forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                      use_cache=False, **kwargs).logits
            if labels is None:
                return CausalLMOutputWithPast(logits=logits)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                     ignore_index=IGNORE_INDEX, reduction="sum")
            return CausalLMOutputWithPast(loss=loss)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False, **kwargs).last_hidden_state
        if labels is None:
            return CausalLMOutputWithPast(logits=self.lm_head(hidden))
        return CausalLMOutputWithPast(loss=self.lm_head(hidden, labels=labels))

    head.forward = types.MethodType(head_with_loss, head)
    model.forward = types.MethodType(forward, model)
