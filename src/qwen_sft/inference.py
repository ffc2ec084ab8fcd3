"""What predict, chat, eval, merge and serve load: a base model, maybe an adapter, and the template it was
trained with.

Defaults follow the run metadata (`run.py`): the base model is the adapter's, and the template is the one
training recorded (adapter, then model dir); where nothing was recorded, `template: auto` picks it from the
checkpoint's own chat template and proves it (`template_proof.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from qwen_sft.model import load_model, load_tokenizer, resolve_model_path
from qwen_sft.run import resolve_base, trained_template
from qwen_sft.template import Template
from qwen_sft.template_proof import resolve_template

log = logging.getLogger(__name__)


def load_inference_tokenizer(args):
    """(base model, tokenizer, Template) for a command's model section (`config.ModelArgs`), no weights loaded.

    The tokenizer is the adapter's when training saved one beside it (it is the one training used), else the
    base model's.

    Raises:
        UserError: an unknown template, an adapter that names no base, a template the checkpoint disproves.
    """
    base = resolve_base(args.model, args.adapter)
    adapter = Path(args.adapter) if args.adapter else None
    own = adapter is not None and (adapter / "tokenizer_config.json").exists()
    tokenizer = load_tokenizer(str(adapter) if own else resolve_model_path(base))
    name = args.template if args.template != "auto" else trained_template(base, args.adapter) or "auto"
    return base, tokenizer, resolve_template(name, tokenizer)


def load_for_inference(args, device: str | None = None) -> tuple[object, object, Template]:
    """(model, tokenizer, Template), model in eval mode with the adapter applied; see `load_inference_tokenizer`.

    Raises:
        UserError: an unknown template, a model or adapter that cannot be loaded.
    """
    base, tokenizer, template = load_inference_tokenizer(args)  # a bad template fails before the weights load
    model, tokenizer = load_model(base, adapter=args.adapter, dtype=args.dtype, device=device)
    log.info("model %s%s, template %s", base, f" + adapter {args.adapter}" if args.adapter else "", template.name)
    return model, tokenizer, template
