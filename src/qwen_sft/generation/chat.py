"""The conversation loop behind `qwen-sft chat`: history, /commands, a context that keeps the newest exchanges."""

from __future__ import annotations

import sys

from qwen_sft.generation.engine import stream
from qwen_sft.generation.sampler import SamplingParams
from qwen_sft.template.encode import encode_prompt, stop_token_ids

CHAT_HELP = "commands: /reset (clear history), /system TEXT (new system prompt, clears history), /exit"


def chat_loop(model, tokenizer, chat_template, sampling: SamplingParams, system: str | None = None,
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
        turn = sampling.replace(seed=None if sampling.seed is None else sampling.seed + len(history))  # own stream
        for piece in stream(model, tokenizer, prompt, turn, stop_token_ids(tokenizer)):
            print(piece, end="", flush=True)
            pieces.append(piece)
        print(flush=True)
        history.append({"role": "assistant", "content": "".join(pieces)})


def fit_context(history: list[dict], system: str | None, tokenizer, chat_template, budget: int) -> list[int]:
    """Prompt ids for the conversation, dropping the oldest exchanges while it is longer than `budget`."""
    head = [{"role": "system", "content": system}] if system else []
    while True:
        ids = encode_prompt(head + history, tokenizer, chat_template)
        if len(ids) <= budget or len(history) <= 1:
            return ids
        del history[:2]  # oldest user + assistant pair
        print("(context full: dropped the oldest exchange)", file=sys.stderr)
