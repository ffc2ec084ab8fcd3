"""The templates by name.

Templates (`get_template`; each renders exactly the text of the family's published chat template, which
the tests prove against the stored Jinja in qwen_sft/template/chat_templates/ and `proof.py` at load time):
  qwen1.5             Qwen1.5-Chat; default system "You are a helpful assistant" (`qwen` is an alias)
  qwen2               Qwen2-Instruct; default system "You are a helpful assistant."
  qwen2.5             Qwen2.5-Instruct; default system "You are Qwen, created by Alibaba Cloud. ..."; tools
  qwen3               Qwen3 (hybrid thinking); no default system; tools; reasoning in <think>...</think>
  qwen1.5-sft-legacy  the prompt of github.com/yongzhuo/qwen1.5-sft byte for byte: system with a period,
                      `<|im_start|>assistant` with no newline; training uses the same rendering, so train and
                      inference agree
"""

from __future__ import annotations

from qwen_sft.template.render import Template
from qwen_sft.utils.errors import UserError

TEMPLATES = {t.name: t for t in (
    Template("qwen1.5", "chatml", "You are a helpful assistant"),
    Template("qwen2", "chatml", "You are a helpful assistant.", tokenizer_family="qwen2", official="qwen2"),
    Template("qwen2.5", "qwen2.5", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
             tokenizer_family="qwen2.5", official="qwen2.5", tools=True),
    Template("qwen3", "qwen3", None, tokenizer_family="qwen3", official="qwen3", tools=True, thinking=True),
    Template("qwen1.5-sft-legacy", "chatml", "You are a helpful assistant.",
             role_sep={"system": "\n", "user": "\n", "assistant": ""}),
)}
ALIASES = {"qwen": "qwen1.5"}  # the name before Qwen2 / Qwen2.5 / Qwen3 templates existed
TEMPLATE_NAMES = ("auto", *ALIASES, *TEMPLATES)


def get_template(name: str) -> Template:
    """Return the template called `name` (`qwen` is `qwen1.5`; `auto` is resolved by `proof.resolve_template`).

    Raises:
        UserError: if no such template exists.
    """
    template = TEMPLATES.get(ALIASES.get(name, name))
    if template is None:
        hint = " (resolve it with qwen_sft.template.proof.resolve_template)" if name == "auto" else ""
        raise UserError(f"unknown template {name!r}{hint}; choose one of: {', '.join(TEMPLATE_NAMES)}")
    return template
