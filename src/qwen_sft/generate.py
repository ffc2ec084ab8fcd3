"""Generation: `generate_batch` (batched, left-padded, KV-cached), `predict_samples` and the chat loop.

Prompts are rendered by `template.encode_prompt`, the function training uses, so the model sees at
inference exactly the prefix it was trained on. Generation stops at <|im_end|> or <|endoftext|>
(`template.stop_token_ids`) and never emits a padded vocabulary row: Qwen checkpoints have 151936 or
152064 output rows but the tokenizer only 151646 tokens; the rows past it were never trained.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from qwen_sft.errors import UserError
from qwen_sft.template import encode_prompt, stop_token_ids

log = logging.getLogger(__name__)


@dataclass
class Sampling:
    """Decoding settings shared by predict, chat, eval and serve. temperature 0 = greedy (deterministic)."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    repetition_penalty: float = 1.0

    def check(self) -> Sampling:
        """Raises UserError naming every out-of-range setting."""
        problems = [f"{name}: {why}" for name, bad, why in (
            ("max_new_tokens", self.max_new_tokens < 1, "must be >= 1"),
            ("temperature", self.temperature < 0, "must be >= 0 (0 = greedy)"),
            ("top_p", not 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("top_k", self.top_k < 0, "must be >= 0 (0 = off)"),
            ("repetition_penalty", self.repetition_penalty <= 0, "must be > 0 (1 = off)")) if bad]
        if problems:
            raise UserError("invalid generation settings: " + "; ".join(problems))
        return self


class VocabLimit(LogitsProcessor):
    """Mask the output rows past the tokenizer's vocabulary (padding rows that were never trained).

    A slice assignment per step: cheaper than `suppress_tokens`, which builds an isin-mask over the vocab.
    Runs before temperature/top-k/top-p (transformers puts custom processors ahead of the warpers).
    """

    def __init__(self, limit: int):
        self.limit = limit

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.limit:] = -float("inf")  # scores is generate's own fp32 copy of the logits
        return scores


# ------------------------------------------------------------------------------------------- generation

def generation_config(tokenizer, sampling: Sampling) -> GenerationConfig:
    """Every field set explicitly: generate() fills unset ones from the checkpoint's own generation_config.json
    (Qwen chat models ship do_sample=True, top_p=0.8, ...), which would make `greedy` not greedy."""
    greedy = sampling.temperature == 0
    return GenerationConfig(  # greedy: the sampling knobs at transformers' neutral defaults (else it warns)
        max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
        temperature=1.0 if greedy else sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
        top_k=50 if greedy else sampling.top_k,
        repetition_penalty=sampling.repetition_penalty, eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_token_ids(tokenizer)[1],
        use_cache=True, num_beams=1)


def generate_batch(model, tokenizer, prompts_ids: list[list[int]], sampling: Sampling | None = None,
                   streamer=None) -> list[tuple[str, str]]:
    """Generate one answer per prompt in a single left-padded batch: [(text, finish_reason), ...].

    finish_reason is `stop` (a stop token was generated; it is not part of the text) or `length`
    (max_new_tokens ran out). The text is the answer only, never the prompt.

    Args:
        prompts_ids: token ids per prompt, e.g. from `template.encode_prompt`.
        sampling: decoding settings (default: greedy, 512 new tokens).
        streamer: a transformers streamer (TextStreamer, ...); batch size 1 only.
    """
    return [(tokenizer.decode(ids, skip_special_tokens=True), reason)
            for ids, reason in generate_ids(model, tokenizer, prompts_ids, sampling, streamer)]


@torch.inference_mode()
def generate_ids(model, tokenizer, prompts_ids: list[list[int]], sampling: Sampling | None = None,
                 streamer=None) -> list[tuple[list[int], str]]:
    """`generate_batch` before decoding: [(answer token ids without the stop token, finish_reason), ...]."""
    sampling = (sampling or Sampling()).check()
    config = generation_config(tokenizer, sampling)
    width = max(len(p) for p in prompts_ids)
    # left padding: every prompt ends at the same column, where generation starts; the attention mask
    # hides the padding and generate() derives position ids from it, so each row matches its unpadded run
    input_ids = torch.tensor([[config.pad_token_id] * (width - len(p)) + p for p in prompts_ids])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts_ids])
    device = next(model.parameters()).device
    limit = min(len(tokenizer), model.get_output_embeddings().weight.shape[0])
    with attention_kernels(device):
        output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                generation_config=config, logits_processor=LogitsProcessorList([VocabLimit(limit)]),
                                streamer=streamer)
    stops = set(config.eos_token_id)
    results = []
    for row in output[:, width:].tolist():  # finished rows are padded with pad (= <|endoftext|>, a stop id)
        end = next((i for i, token in enumerate(row) if token in stops), None)
        results.append((row, "length") if end is None else (row[:end], "stop"))
    return results


def attention_kernels(device: torch.device):
    """On CUDA, SDPA without the cuDNN backend: cuDNN builds a plan per new shape (~3 s the first time, then
    ~0.15 s more per 64-token generation of a new batch shape, measured on an H200) and decoding changes the
    shape every step; the flash / memory-efficient kernels have no such cost."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) its last assistant turn: what the model must answer."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else list(messages)


def predict_samples(model, tokenizer, samples, chat_template, sampling: Sampling, batch_size: int = 16,
                    progress: bool = True) -> list[tuple[str, str]]:
    """Answers for `data.Sample`s, in input order. Batches are formed from length-sorted prompts so rows of
    a batch need little padding. Greedy answers do not depend on batch_size in fp32; in bf16 a batched matmul
    may round differently and flip a near-tie (common in a random-init model, rare in a trained one);
    sampled answers depend on it."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise UserError(f"batch_size: must be >= 1, got {batch_size}")
    prompts = [encode_prompt(prompt_messages(s.messages), tokenizer, chat_template, s.tools) for s in samples]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: OOM shows up at once
    results: list = [None] * len(prompts)
    with tqdm(total=len(prompts), desc="predict", unit="ex", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            for i, result in zip(batch, generate_batch(model, tokenizer, [prompts[i] for i in batch], sampling)):
                results[i] = result
            bar.update(len(batch))
    return results


# ------------------------------------------------------------------------------------------------- chat

CHAT_HELP = "commands: /reset (clear history), /system TEXT (new system prompt, clears history), /exit"


def chat_loop(model, tokenizer, chat_template, sampling: Sampling, system: str | None = None,
              read=input) -> list[dict]:
    """The conversation loop behind `qwen-sft chat`; returns the history when the input ends or on /exit."""
    from transformers import TextStreamer

    interactive = sys.stdin.isatty()
    max_context = getattr(model.config, "max_position_embeddings", None) or 32768
    history: list[dict] = []
    print(CHAT_HELP, file=sys.stderr)
    while True:
        try:
            line = read("user> " if interactive else "").strip()
        except EOFError:
            return history
        if not line:
            continue
        if line == "/exit":
            return history
        if line == "/reset":
            history = []
            print("(history cleared)", file=sys.stderr)
            continue
        if line == "/system" or line.startswith("/system "):
            system, history = line[len("/system"):].strip() or None, []
            print(f"(system prompt: {system or chat_template.default_system!r}; history cleared)", file=sys.stderr)
            continue
        if line.startswith("/"):
            print(f"unknown command {line.split()[0]}; {CHAT_HELP}", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        prompt = fit_context(history, system, tokenizer, chat_template, max_context - sampling.max_new_tokens)
        print("assistant: ", end="", flush=True)
        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)  # ends with a newline
        (answer, _), = generate_batch(model, tokenizer, [prompt], sampling, streamer=streamer)
        history.append({"role": "assistant", "content": answer})


def fit_context(history: list[dict], system: str | None, tokenizer, chat_template, budget: int) -> list[int]:
    """Prompt ids for the conversation, dropping the oldest exchanges while it is longer than `budget`."""
    head = [{"role": "system", "content": system}] if system else []
    while True:
        ids = encode_prompt(head + history, tokenizer, chat_template)
        if len(ids) <= budget or len(history) <= 1:
            return ids
        del history[:2]  # oldest user + assistant pair
        print("(context full: dropped the oldest exchange)", file=sys.stderr)


def sampling_from(args, max_new_tokens: int | None = None) -> Sampling:
    """The decoding settings of a command's sampling section (`config.SamplingArgs`); unset keys: greedy.

    Raises:
        UserError: a setting this decoder does not support.
    """
    unsupported = [k for k in ("min_p", "presence_penalty", "frequency_penalty") if getattr(args, k) is not None]
    if unsupported:
        raise UserError(f"{', '.join(unsupported)}: not supported by this decoder")
    return Sampling(max_new_tokens=max_new_tokens or args.max_new_tokens, temperature=args.temperature or 0.0,
                    top_p=args.top_p or 1.0, top_k=args.top_k or 0,
                    repetition_penalty=args.repetition_penalty or 1.0).check()
