"""`template: auto`, and the load-time proof that qwen-sft renders what a checkpoint's own chat template does.

qwen-sft never runs a checkpoint's Jinja to build prompts (template.py is its own renderer, so that train,
predict, chat and serve share one tokenisation). Instead, when a checkpoint carries a chat template,
`verify_against_checkpoint` renders a fixed set of conversations (`PROOFS`: with and without a system
message, multi-turn, tool calls, thinking on and off) both ways and requires the same text, and the same
ids when the checkpoint's text is tokenised by its own tokenizer split where ours starts an answer run.

`resolve_template` picks the template:
  a name       that template: it is the override. A checkpoint template that renders differently only
               gets a warning saying where.
  auto         the checkpoint has a chat template: the first candidate that passes the proof, trying
               qwen3 first for `model_type: qwen3` checkpoints, else qwen2.5, qwen2, qwen1.5,
               qwen1.5-sft-legacy, qwen3. None passes: a UserError naming the nearest candidate, the
               first differing character, and `--template NAME`, the flag that overrides the proof.
               No chat template (a base checkpoint): chosen by its added tokens (<think>: qwen3,
               <tool_call>: qwen2.5, else qwen1.5), and logged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from qwen_sft.template.encode import encode_example, encode_prompt, pieces
from qwen_sft.template.registry import TEMPLATE_NAMES, TEMPLATES, get_template
from qwen_sft.template.render import Template
from qwen_sft.utils.errors import UserError

log = logging.getLogger(__name__)


def _call(name: str, arguments: dict, call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["C", "F"]}},
                   "required": ["city"]}}}
CLOCK = {"type": "function", "function": {
    "name": "local_time", "description": "Local time in an IANA time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}


@dataclass(frozen=True)
class Proof:
    name: str
    messages: tuple
    tools: tuple | None = None
    thinking: bool = False  # only for templates that render reasoning


PROOFS = (
    Proof("one turn, no system", (
        {"role": "user", "content": "你好，介绍一下你自己。"},
        {"role": "assistant", "content": "我是一个乐于助人的助手。"})),
    Proof("system, two turns", (
        {"role": "system", "content": "Answer in one line."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3 + 3?\nExplain."},
        {"role": "assistant", "content": "6, since 3 + 3 = 6."})),
    Proof("tools, system, parallel calls", (
        {"role": "system", "content": "You help travellers."},
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            _call("get_weather", {"city": "Paris", "unit": "C"}, "call_1"),
            _call("local_time", {"zone": "Europe/Paris"}, "call_2")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18}"},
        {"role": "tool", "tool_call_id": "call_2", "content": "14:05"},
        {"role": "assistant", "content": "18°C, and it is 14:05 in Paris."}), tools=(WEATHER, CLOCK)),
    Proof("tools, no system, text before the call", (
        {"role": "user", "content": "Is it cold in Oslo?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [_call("get_weather", {"city": "Oslo"}, "c")]},
        {"role": "tool", "tool_call_id": "c", "content": "-3"},
        {"role": "assistant", "content": "Yes: -3°C."}), tools=(WEATHER,)),
    Proof("thinking, two turns", (
        {"role": "user", "content": "What is 17 * 3?"},
        {"role": "assistant", "reasoning_content": "17 * 3 = 51.", "content": "51."},
        {"role": "user", "content": "And 17 * 4?"},
        {"role": "assistant", "reasoning_content": "17 * 4 = 68.", "content": "68."}), thinking=True),
    Proof("thinking with a tool call", (
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "reasoning_content": "I need the tool.", "content": "",
         "tool_calls": [_call("get_weather", {"city": "Rome"}, "r")]},
        {"role": "tool", "tool_call_id": "r", "content": "{\"temperature\": 24}"},
        {"role": "assistant", "reasoning_content": "24 is warm.", "content": "Warm: 24°C."}),
        tools=(WEATHER,), thinking=True),
)
AUTO_ORDER = ("qwen2.5", "qwen2", "qwen1.5", "qwen1.5-sft-legacy", "qwen3")


class TemplateMismatch(UserError):
    """The checkpoint's chat template renders a proof conversation differently; `at` = how far they agree."""

    def __init__(self, message: str, template: Template, at: int):
        super().__init__(message)
        self.template, self.at = template, at


def verify_against_checkpoint(template: Template, tokenizer) -> None:
    """Prove `template` renders what the tokenizer's own chat template renders (text, then ids).

    Does nothing when the tokenizer has no chat template.

    Raises:
        TemplateMismatch (a UserError): one line naming the conversation, the first differing character
            (or token) and the --template flag that overrides the proof.
    """
    if not getattr(tokenizer, "chat_template", None):
        return
    for proof in PROOFS:
        if (proof.tools and not template.tools) or (proof.thinking and not template.thinking):
            continue
        messages, tools = [dict(m) for m in proof.messages], list(proof.tools) if proof.tools else None
        prompt = messages[:max(i for i, m in enumerate(messages) if m["role"] == "assistant")]
        cases = [("", messages, False, True), (" (prompt)", prompt, True, True)]
        if template.thinking:
            cases.append((" (prompt, enable_thinking=False)", prompt, True, False))
        for label, conversation, generation, thinking in cases:
            _check(template, tokenizer, proof.name + label, conversation, tools, generation, thinking)


def verify_conversation(template: Template, tokenizer, name: str, messages: list[dict], tools=None, *,
                        generation: bool = False, thinking: bool = True) -> None:
    """`verify_against_checkpoint` for one conversation (`qwen-sft check` proves a sample of the user's data).

    Raises:
        TemplateMismatch (a UserError): naming the conversation `name` and the first difference.
    """
    _check(template, tokenizer, name, messages, tools, generation, thinking)


def _check(template: Template, tokenizer, name: str, messages: list[dict], tools, generation: bool,
           thinking: bool) -> None:
    items = pieces(messages, template, generation, tools, thinking)
    ours = "".join(p.text for p in items)
    try:
        theirs = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation,
                                               enable_thinking=thinking)
    except Exception as err:  # a foreign template may raise anything (raise_exception, undefined, ...)
        raise TemplateMismatch(f"the checkpoint's chat template fails on the {name!r} conversation "
                               f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                               f"{_override(template)}", template, 0) from None
    if ours != theirs:
        at = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        raise TemplateMismatch(
            f"the checkpoint's chat template and qwen-sft's {template.name} differ in the {name!r} conversation "
            f"at character {at}: the checkpoint renders {theirs[at:at + 24]!r} after {theirs[max(0, at - 24):at]!r}"
            f", {template.name} renders {ours[at:at + 24]!r}; {_override(template)}", template, at)
    # ids: the checkpoint's text through its own tokenizer, cut where our answer runs start
    cuts, at = [0], 0
    for piece in items:
        if piece.new_run:
            cuts.append(at)
        at += len(piece.text)
    cuts.append(len(theirs))
    their_ids = [i for a, b in zip(cuts, cuts[1:]) if b > a
                 for i in tokenizer(theirs[a:b], add_special_tokens=False)["input_ids"]]
    our_ids = (encode_prompt(messages, tokenizer, template, tools, thinking) if generation
               else encode_example(messages, tokenizer, template, tools=tools).input_ids)
    if our_ids != their_ids:
        k = next((k for k, (a, b) in enumerate(zip(our_ids, their_ids)) if a != b), min(len(our_ids), len(their_ids)))
        raise TemplateMismatch(
            f"the checkpoint's tokenizer and qwen-sft's {template.name} give different ids for the same text in "
            f"the {name!r} conversation at token {k}: {their_ids[k:k + 3]} vs {our_ids[k:k + 3]} "
            f"({tokenizer.decode(their_ids[k:k + 3])!r}); {_override(template)}", template, len(ours))


def _override(template: Template) -> str:
    return (f"pass --template {template.name} (template: {template.name} in a training YAML) to use qwen-sft's "
            f"{template.name} rendering anyway")


def resolve_template(name: str | None, tokenizer) -> Template:
    """The template to use with a checkpoint: `name`, or for `auto` / None the one its chat template proves.

    Args:
        name: a template name (see registry.TEMPLATE_NAMES), `auto` or None (= auto).
        tokenizer: the checkpoint's tokenizer (its `name_or_path` dir's config.json names the model type).

    Raises:
        UserError: an unknown name; for auto, no template renders what the checkpoint's chat template does.
    """
    model_type, where = _describe(tokenizer)
    if name and name != "auto":
        template = get_template(name)
        try:
            verify_against_checkpoint(template, tokenizer)
        except TemplateMismatch as err:
            log.warning("%s: %s (using %s as asked)", where, str(err).split("; pass --template")[0], template.name)
        return template
    if not getattr(tokenizer, "chat_template", None):
        added = tokenizer.get_added_vocab()
        template = get_template("qwen3" if "<think>" in added else "qwen2.5" if "<tool_call>" in added else "qwen1.5")
        log.info("template auto: %s has no chat template; %s chosen from its added tokens", where, template.name)
        return template
    order = ("qwen3", *AUTO_ORDER[:-1]) if model_type == "qwen3" else AUTO_ORDER
    nearest = None
    for candidate in order:
        try:
            verify_against_checkpoint(TEMPLATES[candidate], tokenizer)
        except TemplateMismatch as err:
            nearest = err if nearest is None or err.at > nearest.at else nearest
            continue
        log.info("template auto: %s (proven equal to %s's chat template)", candidate, where)
        return TEMPLATES[candidate]
    names = ", ".join(n for n in TEMPLATE_NAMES if n not in ("auto", "qwen"))
    raise UserError(f"{where}: template auto: no qwen-sft template renders what its chat template renders; "
                    f"nearest is {nearest.template.name}: {nearest} (templates: {names})")


def _describe(tokenizer) -> tuple[str | None, str]:
    """(config.json's model_type beside the tokenizer, or None; a name for messages)."""
    directory = Path(str(getattr(tokenizer, "name_or_path", "") or "."))
    model_type = None
    config = directory / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    return model_type, f"model {directory}" if str(directory) != "." else "the tokenizer"
