"""`qwen-sft merge`: fold a LoRA / DoRA adapter into its base model and write a plain Hugging Face model.

The output is the standard Qwen2 layout — config.json, model*.safetensors, generation_config.json,
tokenizer files — and nothing else, so plain `transformers` (no peft) and `vllm serve DIR` load it
unchanged. Two things are set so the merged model behaves as it did under `qwen-sft chat`:
  chat template          the template the adapter was trained with: for qwen2 / qwen2.5 / qwen3 the family's
                         published Jinja (proven equal to `render`), else generated from `render`'s rules,
                         so a server applying it builds the prompts training saw
  generation_config.json eos_token_id = [<|im_end|>, <|endoftext|>]: servers stop where `generate` stops;
                         config.json's eos_token_id and the tokenizer's eos_token are <|im_end|> and every pad
                         id the tokenizer's, as in Qwen's own chat checkpoints (`qwen-sft check` verifies them)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from qwen_sft.config.dtype import resolve_dtype
from qwen_sft.model.checkpoint import add_legacy_config_keys
from qwen_sft.model.load import load_model, load_tokenizer, resolve_model_path, tokenizer_dir
from qwen_sft.runs.run_config import read_run_info, resolve_base, trained_template
from qwen_sft.template.encode import stop_token_ids
from qwen_sft.template.proof import resolve_template as template_for
from qwen_sft.template.registry import get_template
from qwen_sft.template.render import Template
from qwen_sft.template.tokenizer import official_chat_template
from qwen_sft.utils.errors import UserError
from qwen_sft.utils.files import atomic_dir

log = logging.getLogger(__name__)


def merge_adapter(adapter: str | Path, output: str | Path, model: str | None = None, template: str | None = None,
                  dtype: str = "auto", overwrite: bool = False) -> Path:
    """Merge `adapter` into its base model and write a plain HF model to `output`; returns `output`.

    Args:
        model: base model (default: the one the adapter was trained on, from its run_config.yaml).
        template: chat template to write (default / auto: the one the adapter was trained with, else the one
            the base checkpoint's chat template proves).
        dtype: auto (the base checkpoint's dtype, else bf16) | bf16 | fp32 | fp16.
        overwrite: replace an existing non-empty output dir.

    Raises:
        UserError: missing adapter, an output dir that is the adapter / holds something (without overwrite),
            an unknown dtype or template.
    """
    adapter, output = Path(adapter), Path(output)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"adapter {adapter}: no adapter_config.json (not a LoRA / DoRA adapter dir)")
    if output.resolve() == adapter.resolve():
        raise UserError(f"output {output}: is the adapter dir; choose another directory")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise UserError(f"output {output}: exists and is not empty; pass --overwrite or choose another directory")
    base = resolve_base(model, str(adapter))
    name = template if template not in (None, "auto") else trained_template(base, str(adapter)) or "auto"
    if name != "auto":
        get_template(name)  # fail on a bad name before loading
    check_not_quantized(base, resolve_model_path(base))
    torch_dtype = merge_dtype(dtype, resolve_model_path(base))
    if read_run_info(adapter).get("config", {}).get("quantization", "none") != "none":
        log.info("%s was trained on a quantised copy of %s (QLoRA); it is merged into the unquantised weights, as "
                 "QLoRA's authors do, so the merged model differs from the quantised one by the rounding", adapter, base)

    peft_model = load_model(base, adapter=adapter, dtype=torch_dtype, device="cpu")
    tokenizer = load_tokenizer(tokenizer_dir(resolve_model_path(base), adapter))
    chat_template = template_for(name, tokenizer)  # before the tokenizer's own template is replaced
    log.info("merging %s into %s (%s)", adapter, base, str(torch_dtype).removeprefix("torch."))
    merged = peft_model.merge_and_unload()  # W + scale * B @ A (DoRA: magnitude-rescaled), adapters removed
    align_stop_tokens(merged, tokenizer)  # config.json, generation_config.json and tokenizer: the same ids
    tokenizer.chat_template = chat_template_jinja(chat_template)

    with atomic_dir(output) as tmp:  # written whole or not at all
        merged.save_pretrained(tmp, max_shard_size="5GB")  # safetensors, shards + index past 5 GB like Qwen's
        add_legacy_config_keys(tmp / "config.json")
        tokenizer.save_pretrained(tmp, save_jinja_files=False)  # template inside tokenizer_config.json: every
        # transformers version (and so every vLLM) reads it there; chat_template.jinja needs a recent one
    return output


def align_stop_tokens(model, tokenizer) -> None:
    """Make config.json, generation_config.json and the tokenizer say the same: a chat model ends its turn with
    <|im_end|>, a document with <|endoftext|>; both stop generation; pad is the tokenizer's."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.config.eos_token_id = end
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.eos_token = "<|im_end|>"


def check_not_quantized(base: str, base_path: str) -> None:
    """Merging into 4-/8-bit weights would round the adapter's update away (and peft writes no usable model).

    Raises:
        UserError: naming the quantisation and what to merge into instead.
    """
    from transformers import AutoConfig

    quantization = getattr(AutoConfig.from_pretrained(base_path), "quantization_config", None)
    if quantization:
        method = quantization.get("quant_method", "?") if isinstance(quantization, dict) else \
            getattr(quantization, "quant_method", "?")
        raise UserError(f"model {base}: a quantised checkpoint ({method}); folding the adapter into it would round "
                        "the update into 4-/8-bit weights. Merge into the bf16 base instead: --model BASE, the "
                        "checkpoint the quantised one was made from (e.g. Qwen/Qwen2.5-7B-Instruct); the adapter fits "
                        "it as it is")


def merge_dtype(name: str, base_path: str) -> torch.dtype:
    """`auto` = the dtype the base checkpoint is stored in (Qwen's are bf16), else bf16.

    fp16 is allowed here (old GPUs serve only fp16), unlike for training where Qwen's loss goes NaN in it.
    """
    if name != "auto":
        return resolve_dtype(name, allow_fp16=True, device="cpu")
    stored = None
    config_file = Path(base_path) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        stored = config.get("dtype") or config.get("torch_dtype")
    return {"float32": torch.float32, "float16": torch.float16}.get(stored, torch.bfloat16)


def chat_template_jinja(template: Template) -> str:
    """A Jinja chat template rendering exactly what `template.render` renders (tests check both agree): the
    published one for official families, else generated (qwen1.5 and the legacy template: ChatML turns)."""
    if template.official:
        return official_chat_template(template.official)

    def literal(text: str) -> str:
        return json.dumps(text)  # a JSON string is a valid Jinja string literal (\\n, \\", unicode)

    separators = "{" + ", ".join(f"{literal(role)}: {literal(sep)}" for role, sep in template.role_sep.items()) + "}"
    default_system = template.turn_prefix("system") + template.default_system + template.turn_end
    return (
        f"{{% set sep = {separators} %}}"
        "{% for message in messages %}"
        f"{{% if loop.first and message['role'] != 'system' %}}{{{{ {literal(default_system)} }}}}{{% endif %}}"
        f"{{{{ {literal(template.turn_start)} + message['role'] + sep.get(message['role'], {literal(chr(10))}) "
        f"+ message['content'] + {literal(template.turn_end)} }}}}"
        "{% endfor %}"
        f"{{% if add_generation_prompt %}}{{{{ {literal(template.turn_prefix('assistant'))} }}}}{{% endif %}}"
    )
