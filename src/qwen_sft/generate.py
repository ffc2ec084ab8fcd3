"""`qwen-sft predict` and `qwen-sft chat`, and `generate_batch`; decoding itself is `qwen_sft.generation`'s engine.

Prompts are rendered by `template.encode_prompt`, the function training uses, so the model sees at
inference exactly the prefix it was trained on. Generation stops at <|im_end|> or <|endoftext|>
(`template.stop_token_ids`) and never emits a padded vocabulary row: Qwen checkpoints have 151936 or
152064 output rows but the tokenizer only 151646 tokens; the rows past it were never trained.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import yaml

from qwen_sft.data import load_samples
from qwen_sft.errors import UserError
from qwen_sft.generation import Completion, SamplingParams, from_generation_config
from qwen_sft.generation import generate as engine_generate
from qwen_sft.generation import stream as engine_stream
from qwen_sft.model import load_model
from qwen_sft.template import encode_prompt, get_template, stop_token_ids

log = logging.getLogger(__name__)
DEFAULT_TEMPLATE = "qwen"


Sampling = SamplingParams  # the former name, kept for callers (evaluate, scripts): same first five fields


# ---------------------------------------------------------------------------------------------- loading

def run_config_of(path: str | Path | None) -> dict:
    """The `run_config.yaml` that `train` writes beside an adapter / full model, or {}."""
    file = Path(path) / "run_config.yaml" if path else None
    if file is None or not file.is_file():
        return {}
    return yaml.safe_load(file.read_text(encoding="utf-8")) or {}


def resolve_base(model: str | None, adapter: str | None) -> str:
    """The base model: as given, else the one the adapter was trained on, else `tiny`.

    Raises:
        UserError: an adapter that names no base model.
    """
    if model:
        return model
    if adapter is None:
        return "tiny"
    base = run_config_of(adapter).get("model")  # what the user trained with (`tiny`, a hub id, a dir)
    if not base and (Path(adapter) / "adapter_config.json").is_file():
        base = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"adapter {adapter}: cannot tell which base model it belongs to; pass --model")
    return base


def resolve_template(template: str | None, model: str | None, adapter: str | None) -> str:
    """--template, else the `template` training used (adapter's, then model dir's run_config.yaml), else qwen."""
    return template or run_config_of(adapter).get("template") or run_config_of(model).get("template") \
        or DEFAULT_TEMPLATE


def load_for_inference(model: str | None, adapter: str | None, template: str | None, dtype: str = "auto"):
    """(model, tokenizer, Template) for the CLI commands; the base defaults as in `resolve_base`."""
    base = resolve_base(model, adapter)
    chat_template = get_template(resolve_template(template, base, adapter))  # fail on a bad name before loading
    loaded, tokenizer = load_model(base, adapter=adapter, dtype=dtype)
    log.info("model %s%s, template %s", base, f" + adapter {adapter}" if adapter else "", chat_template.name)
    return loaded, tokenizer, chat_template


# ------------------------------------------------------------------------------------------- generation

def generate_batch(model, tokenizer, prompts_ids: list[list[int]], sampling: Sampling | None = None,
                   max_batch: int | None = None) -> list[tuple[str, str]]:
    """One answer per prompt: [(text, finish_reason), ...], by the generation engine (`qwen_sft.generation`).

    finish_reason is `stop` (a stop token was generated, or a stop string: neither is part of the text) or
    `length` (max_new_tokens ran out). The text is the answer only, never the prompt.

    Args:
        prompts_ids: token ids per prompt, e.g. from `template.encode_prompt`.
        sampling: decoding settings (default: greedy, 512 new tokens); `n` must be 1.
        max_batch: most rows decoded together (default: all prompts at once).
    """
    return [(c.text, c.finish_reason) for c in _complete(model, tokenizer, prompts_ids, sampling, max_batch)]


def generate_ids(model, tokenizer, prompts_ids: list[list[int]], sampling: Sampling | None = None,
                 max_batch: int | None = None) -> list[tuple[list[int], str]]:
    """`generate_batch` before decoding: [(answer token ids without the stop token, finish_reason), ...]."""
    return [(c.token_ids, c.finish_reason) for c in _complete(model, tokenizer, prompts_ids, sampling, max_batch)]


def _complete(model, tokenizer, prompts_ids, sampling, max_batch, on_finish=None) -> list[Completion]:
    sampling = (sampling or Sampling()).check()
    if sampling.n != 1:
        raise UserError(f"n: generate_batch answers each prompt once, got n={sampling.n}")
    return engine_generate(model, tokenizer, prompts_ids, sampling, stop_token_ids(tokenizer), max_batch=max_batch,
                           on_finish=on_finish)


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) its last assistant turn: what the model must answer."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else list(messages)


def predict_samples(model, tokenizer, samples, chat_template, sampling: Sampling, batch_size: int = 16,
                    progress: bool = True) -> list[tuple[str, str]]:
    """Answers for `data.Sample`s, in input order, decoded with continuous batching (at most `batch_size` rows;
    a row that finishes is replaced by the next prompt at once). Greedy answers do not depend on batch_size in
    fp32; in bf16 a batched matmul may round differently and flip a near-tie (common in a random-init model,
    rare in a trained one). Sampled answers are seeded per prompt (`sampling.seed`, prompt index), so they do
    not depend on it either (up to the same rounding)."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise UserError(f"batch_size: must be >= 1, got {batch_size}")
    prompts = [encode_prompt(prompt_messages(s.messages), tokenizer, chat_template) for s in samples]
    with tqdm(total=len(prompts), desc="predict", unit="ex", disable=not progress) as bar:
        done = _complete(model, tokenizer, prompts, sampling, batch_size, on_finish=lambda _: bar.update(1))
    return [(c.text, c.finish_reason) for c in done]


def write_jsonl(path: str | Path, records) -> None:
    """Written to a temporary name and renamed: an interrupted run never leaves a half file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def predict(*, data: str | None = None, output: str | None = None, model: str | None = None,
            adapter: str | None = None, template: str | None = None, data_format: str = "auto",
            max_new_tokens: int = 512, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
            repetition_penalty: float = 1.0, batch_size: int = 16, seed: int = 42, dtype: str = "auto") -> int:
    """Generate an answer for every record of a data file; write them as JSONL (input record + prediction).

    Args:
        data: JSON / JSONL data file; the prompt is each conversation up to its last (possibly empty) answer.
        output: JSONL to write: each input record plus `prediction` and `finish_reason` (stop | length).
        model: base model dir, hub id or `tiny` (default: the adapter's base, else tiny).
        adapter: LoRA / DoRA adapter dir written by `qwen-sft train`.
        template: qwen | qwen1.5-sft-legacy (default: the one the adapter was trained with, else qwen).
        data_format: auto | alpaca | sharegpt | messages.
        max_new_tokens: at most this many generated tokens per answer.
        temperature: 0 = greedy (deterministic); > 0 samples.
        top_p: nucleus sampling threshold (1 = off).
        top_k: sample from the k most likely tokens (0 = off).
        repetition_penalty: > 1 discourages repeats (1 = off).
        batch_size: prompts generated together.
        seed: random seed for sampling (each prompt draws from its own stream derived from it).
        dtype: auto | bf16 | fp32.
    """
    if not data or not output:
        raise UserError("predict needs --data FILE and --output FILE.jsonl")
    sampling = Sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed=seed).check()
    samples = load_samples(data, fmt=data_format, require_answer=False)
    loaded, tokenizer, chat_template = load_for_inference(model, adapter, template, dtype)
    results = predict_samples(loaded, tokenizer, samples, chat_template, sampling, batch_size)
    write_jsonl(output, ({**s.record, "prediction": text, "finish_reason": reason}
                         for s, (text, reason) in zip(samples, results)))
    stopped = sum(reason == "stop" for _, reason in results)
    print(f"wrote {len(results)} predictions to {output} ({stopped} stopped, {len(results) - stopped} hit "
          f"max_new_tokens={max_new_tokens})", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------- chat

CHAT_HELP = "commands: /reset (clear history), /system TEXT (new system prompt, clears history), /exit"


def chat(*, model: str | None = None, adapter: str | None = None, template: str | None = None,
         system: str | None = None, max_new_tokens: int = 512, temperature: float | None = None,
         top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
         seed: int = 42, dtype: str = "auto") -> int:
    """Talk to a model: multi-turn, answers streamed as they are generated; /reset, /system TEXT, /exit.

    Reads one user turn per line, from the terminal or a pipe (`printf 'hi\\n/exit\\n' | qwen-sft chat`).
    Answers go to stdout (one `assistant: ...` line each); prompts and notices to stderr. Sampling settings not
    given take the checkpoint's generation_config.json values (Qwen chat models: temperature 0.7, top_p 0.8,
    ...), else greedy.

    Args:
        model: base model dir, hub id or `tiny` (default: the adapter's base, else tiny).
        adapter: LoRA / DoRA adapter dir written by `qwen-sft train`.
        template: qwen | qwen1.5-sft-legacy (default: the one the adapter was trained with, else qwen).
        system: system prompt (default: the template's).
        max_new_tokens: at most this many generated tokens per answer.
        temperature: 0 = greedy (deterministic); > 0 samples (default: the checkpoint's, else 0).
        top_p: nucleus sampling threshold (1 = off; default: the checkpoint's, else 1).
        top_k: sample from the k most likely tokens (0 = off; default: the checkpoint's, else 0).
        repetition_penalty: > 1 discourages repeats (1 = off; default: the checkpoint's, else 1).
        seed: random seed for sampling.
        dtype: auto | bf16 | fp32.
    """
    loaded, tokenizer, chat_template = load_for_inference(model, adapter, template, dtype)
    given = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "repetition_penalty": repetition_penalty}
    checkpoint = from_generation_config(getattr(loaded, "generation_config", None))
    sampling = checkpoint.replace(max_new_tokens=max_new_tokens, seed=seed,
                                  **{k: v for k, v in given.items() if v is not None}).check()
    chat_loop(loaded, tokenizer, chat_template, sampling, system=system)
    return 0


def chat_loop(model, tokenizer, chat_template, sampling: Sampling, system: str | None = None,
              read=input) -> list[dict]:
    """The conversation loop behind `qwen-sft chat`; returns the history when the input ends or on /exit."""
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
        pieces = []
        for piece in engine_stream(model, tokenizer, prompt, sampling.replace(seed=_turn_seed(sampling, history)),
                                   stop_token_ids(tokenizer)):
            print(piece, end="", flush=True)
            pieces.append(piece)
        print(flush=True)
        history.append({"role": "assistant", "content": "".join(pieces)})


def _turn_seed(sampling: Sampling, history: list[dict]) -> int | None:
    """A different stream per turn (one seed for the session, as torch.manual_seed once used to give)."""
    return None if sampling.seed is None else sampling.seed + len(history)


def fit_context(history: list[dict], system: str | None, tokenizer, chat_template, budget: int) -> list[int]:
    """Prompt ids for the conversation, dropping the oldest exchanges while it is longer than `budget`."""
    head = [{"role": "system", "content": system}] if system else []
    while True:
        ids = encode_prompt(head + history, tokenizer, chat_template)
        if len(ids) <= budget or len(history) <= 1:
            return ids
        del history[:2]  # oldest user + assistant pair
        print("(context full: dropped the oldest exchange)", file=sys.stderr)
