"""What predict, chat, eval, merge and serve load: a base model, maybe an adapter, and the template it was
trained with.

Defaults follow the run metadata (`runs/run_config.py`): the base model is the adapter's, and the template is the one
training recorded (adapter, then model dir); where nothing was recorded, `template: auto` picks it from the
checkpoint's own chat template and proves it (`template/proof.py`).
"""

from __future__ import annotations

import logging

from qwen_sft.model.load import load_model, load_tokenizer, resolve_model_path, tokenizer_dir
from qwen_sft.runs.run_config import resolve_base, trained_template
from qwen_sft.template.proof import resolve_template
from qwen_sft.template.render import Template

log = logging.getLogger(__name__)


def load_inference_tokenizer(args):
    """(base model, tokenizer, Template) for a command's model section (`config.ModelArgs`), no weights loaded.

    The tokenizer is the adapter's when training saved one beside it (it is the one training used), else the
    base model's.

    Raises:
        UserError: an unknown template, an adapter that names no base, a template the checkpoint disproves.
    """
    base = resolve_base(args.model, args.adapter)
    tokenizer = load_tokenizer(tokenizer_dir(resolve_model_path(base), args.adapter))
    name = args.template if args.template != "auto" else trained_template(base, args.adapter) or "auto"
    return base, tokenizer, resolve_template(name, tokenizer)


def load_for_inference(args, device: str | None = None) -> tuple[object, object, Template]:
    """(model, tokenizer, Template), model in eval mode with the adapter applied; see `load_inference_tokenizer`.

    Raises:
        UserError: an unknown template, a model or adapter that cannot be loaded.
    """
    base, tokenizer, template = load_inference_tokenizer(args)  # a bad template fails before the weights load
    model = load_model(base, adapter=args.adapter, dtype=args.dtype, device=device)
    log.info("model %s%s, template %s", base, f" + adapter {args.adapter}" if args.adapter else "", template.name)
    return model, tokenizer, template
