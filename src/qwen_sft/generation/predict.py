"""Answers for data: `generate_batch`, `predict_samples`, and `sampling_from` (a command's keys + the checkpoint's
defaults); the decoding itself is the engine (`engine.py`), the one `chat` and `serve` run too.

Prompts are rendered by `template.encode_prompt`, the function training uses, so the model sees at
inference exactly the prefix it was trained on. Generation stops at <|im_end|> or <|endoftext|>
(`template.stop_token_ids`) and never emits a padded vocabulary row: Qwen checkpoints have 151936 or
152064 output rows but the tokenizer only 151646 tokens; the rows past it were never trained.
"""

from __future__ import annotations

from qwen_sft.generation.engine import Completion, generate
from qwen_sft.generation.sampler import SamplingParams, from_generation_config
from qwen_sft.template.encode import encode_prompt, stop_token_ids
from qwen_sft.utils.errors import UserError


def generate_batch(model, tokenizer, prompts_ids: list[list[int]], sampling: SamplingParams | None = None,
                   max_batch: int | None = None) -> list[tuple[str, str]]:
    """One answer per prompt: [(text, finish_reason), ...].

    finish_reason is `stop` (a stop token or stop string: neither is part of the text) or `length`
    (max_new_tokens ran out). The text is the answer only, never the prompt.

    Args:
        prompts_ids: token ids per prompt, e.g. from `template.encode_prompt`.
        sampling: decoding settings (default: greedy, 512 new tokens); `n` must be 1.
        max_batch: most rows decoded together (default: all prompts at once).

    Raises:
        UserError: bad settings.
    """
    return [(c.text, c.finish_reason) for c in _complete(model, tokenizer, prompts_ids, sampling, max_batch)]


def generate_ids(model, tokenizer, prompts_ids: list[list[int]], sampling: SamplingParams | None = None,
                 max_batch: int | None = None) -> list[tuple[list[int], str]]:
    """`generate_batch` before decoding: [(answer token ids without the stop token, finish_reason), ...]."""
    return [(c.token_ids, c.finish_reason) for c in _complete(model, tokenizer, prompts_ids, sampling, max_batch)]


def _complete(model, tokenizer, prompts_ids, sampling, max_batch, on_finish=None) -> list[Completion]:
    sampling = (sampling or SamplingParams()).check()
    if sampling.n != 1:
        raise UserError(f"n: these functions answer each prompt once, got n={sampling.n}")
    return generate(model, tokenizer, prompts_ids, sampling, stop_token_ids(tokenizer), max_batch=max_batch,
                           on_finish=on_finish)


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) its last assistant turn: what the model must answer."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else list(messages)


def predict_samples(model, tokenizer, samples, chat_template, sampling: SamplingParams, batch_size: int = 16,
                    progress: bool = True) -> list[tuple[str, str]]:
    """Answers for `data.Sample`s, in input order, decoded with continuous batching: at most `batch_size` rows,
    and a row that finishes is replaced by the next prompt at once. Greedy answers do not depend on batch_size in
    fp32; in bf16 a batched matmul may round differently and flip a near-tie (common in a random-init model, rare
    in a trained one). Sampled answers are seeded per prompt (`sampling.seed`, prompt index), so they do not
    depend on it either (up to the same rounding).

    Raises:
        UserError: batch_size < 1 or bad settings.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise UserError(f"batch_size: must be >= 1, got {batch_size}")
    prompts = [encode_prompt(prompt_messages(s.messages), tokenizer, chat_template, s.tools) for s in samples]
    with tqdm(total=len(prompts), desc="predict", unit="ex", disable=not progress) as bar:
        done = _complete(model, tokenizer, prompts, sampling, batch_size, on_finish=lambda _: bar.update(1))
    return [(c.text, c.finish_reason) for c in done]


def sampling_from(args, max_new_tokens: int | None = None, generation_config=None) -> SamplingParams:
    """The decoding settings of a command's sampling section (`config.SamplingArgs`).

    Keys left unset take the checkpoint's generation_config.json values when `generation_config` is given
    (chat), else stay greedy / off (predict and eval, which must be deterministic).

    Args:
        args: the sampling section; None values = unset.
        max_new_tokens: overrides args.max_new_tokens.
        generation_config: the model's `GenerationConfig`, for checkpoint defaults.

    Raises:
        UserError: out-of-range settings.
    """
    base = from_generation_config(generation_config) if generation_config is not None else SamplingParams()
    given = {k: v for k, v in vars(args).items() if v is not None and k in SamplingParams.__dataclass_fields__}
    given.setdefault("seed", 0)  # unset: still reproducible, as torch.manual_seed(seed or 0) made it before
    return base.replace(**{**given, "max_new_tokens": max_new_tokens or args.max_new_tokens}).check()
