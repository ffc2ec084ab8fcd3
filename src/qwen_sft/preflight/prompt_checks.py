"""Prompt checks: what the model will be trained to see and to say, on the user's own data.

  prompt.template     a sample of the data rendered by qwen-sft's template and by the checkpoint's own chat
                      template (Qwen3: the prompt with thinking on and off too): the same ids, or the first
                      difference (a Qwen2 default system prompt on a Qwen2.5 checkpoint shows up here)
  prompt.terminator   every trained assistant turn has its closing <|im_end|> trained, after the collator
                      training uses (a masked terminator makes a model that never stops)
  prompt.pad          the pad token exists and is not the terminator (collators that mask padding by id, as
                      most do, would mask every <|im_end|> with it)
  prompt.thinking     Qwen3: the share of examples with reasoning against the checkpoint's kind (hybrid
                      thinking, thinking-only, instruct-only)
  prompt.empty_think  Qwen3: the empty <think></think> block the template inserts is kept out of the loss
                      (trained, it teaches the model to skip thinking)

Positions are found in the encoded ids: content is tokenised without added tokens (template.py), so an
<|im_start|>, <|im_end|> or <think> id is always the template's own marker.
"""

from __future__ import annotations

from qwen_sft.preflight.report import FAIL, PASS, WARN, Finding
from qwen_sft.template.encode import IGNORE_INDEX
from qwen_sft.template.proof import TemplateMismatch, verify_conversation
from qwen_sft.template.render import Template, last_query_index
from qwen_sft.template.tokenizer import text_tokenizer

SAMPLE = 48  # examples spread over the file, plus up to SPECIAL of each rarer kind (tools, reasoning, ...)
SPECIAL = 8
COLLATED = 512  # examples run through the real collator
DELIBERATE = ("qwen1.5-sft-legacy",)  # templates that differ from every checkpoint's by design (qwen1.5-sft's prompt)


def check_template(samples: list, tokenizer, template: Template, skip: set[str]) -> Finding:
    """Render a sample of the data both ways; `skip`: wheres of examples holding added-token text (qwen-sft
    tokenises it as text by design; data.special_tokens reports them)."""
    if not getattr(tokenizer, "chat_template", None):
        return Finding("prompt.template", PASS, f"the checkpoint has no chat template (a base model): nothing to "
                       f"compare; qwen-sft's {template.name} is used, and merge writes it")
    chosen = [samples[i] for i in sample_indices(samples) if samples[i].where not in skip]
    bad = []
    for sample in chosen:
        messages = [dict(m) for m in sample.messages]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        cases = [(messages, False, True), (messages[:last], True, True)]
        if template.thinking:
            cases.append((messages[:last], True, False))
        for conversation, generation, thinking in cases:
            try:
                verify_conversation(template, tokenizer, sample.where, conversation, sample.tools,
                                    generation=generation, thinking=thinking)
            except TemplateMismatch as err:
                bad.append((sample.where, str(err).split("; pass --template")[0]))
                break
    if bad and template.name in DELIBERATE:  # chosen on purpose: a format of its own, not another family's
        return Finding("prompt.template", WARN, f"{template.name} differs from the checkpoint's chat template, as "
                       f"intended: {bad[0][1]}", len(bad), len(chosen), bad[0][0],
                       "serve the merged model (merge writes this template into it), not the adapter on the base "
                       "checkpoint's own template")
    if bad:
        return Finding("prompt.template", FAIL, f"qwen-sft's {template.name} and the checkpoint's chat template "
                       f"disagree: {bad[0][1]}", len(bad), len(chosen), bad[0][0],
                       "template: auto (proves the template against the checkpoint), or the family the checkpoint "
                       "is (qwen2 and qwen2.5 differ in the default system prompt)")
    modes = " (prompts with thinking on and off)" if template.thinking else ""
    return Finding("prompt.template", PASS, f"sampled examples give the same ids with qwen-sft's {template.name} "
                   f"and the checkpoint's own chat template{modes}", len(chosen), len(chosen))


def sample_indices(samples: list, n: int = SAMPLE, special: int = SPECIAL) -> list[int]:
    """Spread over the data, plus the first few with tools, reasoning, a system message, several turns."""
    spread = {round(i * (len(samples) - 1) / max(n - 1, 1)) for i in range(min(n, len(samples)))}
    kinds = (lambda s: s.tools, has_reasoning, lambda s: s.messages[0]["role"] == "system",
             lambda s: sum(m["role"] == "assistant" for m in s.messages) > 1)
    for kind in kinds:
        spread.update([i for i, s in enumerate(samples) if kind(s)][:special])
    return sorted(spread)


def has_reasoning(sample) -> bool:
    return any(m["role"] == "assistant" and (m.get("reasoning_content") or "</think>" in (m.get("content") or ""))
               for m in sample.messages)


def markers(tokenizer, template: Template) -> dict:
    """Ids the scans look for: turn markers, the assistant header's role text, Qwen3's think markers."""
    plain, added = text_tokenizer(tokenizer)
    role = "assistant" + template.role_sep.get("assistant", "\n")
    return {"start": added.get("<|im_start|>"), "end": added.get("<|im_end|>"), "think": added.get("<think>"),
            "end_think": added.get("</think>"), "role": plain.encode(role, add_special_tokens=False).ids,
            "blank": plain.encode("\n\n", add_special_tokens=False).ids}


def assistant_turns(ids: list[int], ids_of: dict) -> list[tuple[int, int | None]]:
    """(first answer position, position of its closing <|im_end|> or None if the example ends before it)."""
    start, end, role = ids_of["start"], ids_of["end"], ids_of["role"]
    turns = []
    for k in [k for k, token in enumerate(ids) if token == start]:
        if ids[k + 1:k + 1 + len(role)] == role:
            first = k + 1 + len(role)
            try:
                turns.append((first, ids.index(end, first)))
            except ValueError:  # cut by max_length before the turn's end
                turns.append((first, None))
    return turns


def masked_terminators(ids: list[int], labels: list[int], ids_of: dict) -> int:
    """Trained assistant turns whose closing <|im_end|> is not trained."""
    masked = 0
    for first, close in assistant_turns(ids, ids_of):
        if close is None:
            continue  # cut by max_length: data.truncated counts it
        if labels[close] == IGNORE_INDEX and labels[first:close].count(IGNORE_INDEX) < close - first:
            masked += 1
    return masked


def check_terminator(encoded, tokenizer, template: Template, collator, loss: str) -> Finding:
    """Every trained answer closes with a trained <|im_end|>, in the labels and after the real collator."""
    ids_of = markers(tokenizer, template)
    if ids_of["end"] is None:
        return Finding("prompt.terminator", FAIL, "the tokenizer has no <|im_end|> token: not a Qwen chat tokenizer",
                       fix="use the checkpoint's own tokenizer (a Qwen chat model's)")
    bad = [(s.where, n) for s, e in zip(encoded.samples, encoded.examples)
           if (n := masked_terminators(e.input_ids, e.labels, ids_of))]
    total = len(encoded.examples)
    if bad:
        return Finding("prompt.terminator", FAIL, f"{sum(n for _, n in bad)} trained answers end in an untrained "
                       f"<|im_end|> (loss={loss}): the model never learns to stop", len(bad), total, bad[0][0],
                       "use loss all, assistant or last (they train each answer's <|im_end|>)")
    lost = collator_losses(encoded.examples[:COLLATED], collator, ids_of["end"])
    if lost:
        return Finding("prompt.terminator", FAIL, f"the collator masks {lost} trained <|im_end|> labels (as collators "
                       "that mask the pad id do when pad = eos)", lost, None, None,
                       "pad with a token other than <|im_end|>, and mask padding by position, not by id")
    return Finding("prompt.terminator", PASS, f"every trained answer's <|im_end|> is trained (loss={loss}), and stays "
                   "so after the collator", total, total)


def collator_losses(examples: list, collator, end: int) -> int:
    """Trained <|im_end|> labels the collator drops: counted before and after it, in batches of 8."""
    if collator is None or not examples:
        return 0
    before = sum(1 for e in examples for i, label in enumerate(e.labels) if i and label == end)
    after = 0
    for k in range(0, len(examples), 8):
        batch = collator([{"input_ids": e.input_ids, "labels": e.labels} for e in examples[k:k + 8]])
        after += int((batch["labels"][:, 1:] == end).sum())
    return max(before - after, 0)


def check_pad(tokenizer) -> Finding:
    pad, end = tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")
    if pad is None:
        return Finding("prompt.pad", FAIL, "the tokenizer has no pad token: batches cannot be padded",
                       fix='set "pad_token": "<|endoftext|>" in tokenizer_config.json (Qwen\'s own choice)')
    if pad == end:
        return Finding("prompt.pad", FAIL, f"the pad token is the terminator <|im_end|> ({end}): any collator or "
                       "server that masks or strips the pad id drops every end of turn",
                       fix='set "pad_token": "<|endoftext|>" in tokenizer_config.json (Qwen\'s own choice)')
    return Finding("prompt.pad", PASS, f"pad {tokenizer.pad_token} ({pad}) is not the terminator <|im_end|> ({end})")


def checkpoint_kind(tokenizer) -> str | None:
    """hybrid (thinking on/off by enable_thinking), thinking (always thinks), instruct (never), or None."""
    jinja = getattr(tokenizer, "chat_template", None) or ""
    if not jinja:
        return None
    return "hybrid" if "enable_thinking" in jinja else "thinking" if "<think>" in jinja else "instruct"


def check_thinking(samples: list, tokenizer, template: Template, loss: str) -> Finding:
    n = sum(has_reasoning(s) for s in samples)
    share, total = n / max(len(samples), 1), len(samples)
    kind = checkpoint_kind(tokenizer) or ("hybrid" if template.thinking else "instruct")
    text = f"{n} of {total} examples ({share:.0%}) have reasoning; the checkpoint is {kind}"
    if not template.thinking:
        return Finding("prompt.thinking", PASS, f"n/a: template {template.name} has no thinking mode")
    if kind == "hybrid" and n == 0:
        return Finding("prompt.thinking", WARN, text + ": trained on answers only, it loses its thinking mode",
                       0, total, None, "mix in examples with reasoning_content (Unsloth's Qwen3 guide keeps ~75 %), "
                       "or serve the result with enable_thinking=False")
    if kind == "instruct" and n:
        first = next(s.where for s in samples if has_reasoning(s))
        return Finding("prompt.thinking", WARN, text + ": its template never shows reasoning", n, total, first,
                       "drop reasoning_content, or fine-tune a hybrid / thinking Qwen3 checkpoint")
    if kind == "thinking" and n < total:
        first = next(s.where for s in samples if not has_reasoning(s))
        return Finding("prompt.thinking", WARN, text + ": it always thinks, so answers without reasoning teach it "
                       "to skip that", total - n, total, first, "add reasoning_content to every example")
    trained = "as context, not trained" if loss.endswith("_no_reasoning") else "trained"
    return Finding("prompt.thinking", PASS, f"{text}; reasoning {trained} (loss={loss})", n, total)


def check_empty_think(encoded, tokenizer, template: Template, loss: str) -> Finding:
    if not template.thinking:
        return Finding("prompt.empty_think", PASS, f"n/a: template {template.name} inserts no think block")
    ids_of = markers(tokenizer, template)
    block = [ids_of["think"], *ids_of["blank"], ids_of["end_think"]]
    with_block, trained = [], []
    for sample, example in zip(encoded.samples, encoded.examples):
        ids = example.input_ids
        spans = [k for k, token in enumerate(ids) if token == block[0] and ids[k:k + len(block)] == block]
        if spans:
            with_block.append(sample.where)
        if any(label != IGNORE_INDEX for k in spans for label in example.labels[k:k + len(block)]):
            trained.append(sample.where)
    total = len(encoded.examples)
    if trained:
        return Finding("prompt.empty_think", FAIL, f"the template's empty <think></think> block is trained "
                       f"(loss={loss}): the model learns to skip thinking", len(trained), total, trained[0],
                       "loss: assistant (the block is context there), or give those answers reasoning_content")
    return Finding("prompt.empty_think", PASS, f"{len(with_block)} examples carry the template's empty think "
                   f"block; none of it is trained (loss={loss})", len(with_block), total)


def check_dropped_reasoning(samples: list, template: Template) -> Finding:
    """Qwen3 renders reasoning only after the last user query: earlier turns' reasoning is never trained."""
    dropped = [s.where for s in samples
               if any(m["role"] == "assistant" and m.get("reasoning_content")
                      for m in s.messages[:last_query_index(s.messages)])]
    if not template.thinking:
        return Finding("prompt.reasoning_kept", PASS, f"n/a: template {template.name} has no reasoning")
    if dropped:
        return Finding("prompt.reasoning_kept", WARN, "reasoning of turns before the last user message is dropped "
                       "by Qwen3's template (as at inference), so it is never trained", len(dropped), len(samples),
                       dropped[0], "split such conversations into one example per turn to train that reasoning")
    return Finding("prompt.reasoning_kept", PASS, "no reasoning is dropped by the template", 0, len(samples))
