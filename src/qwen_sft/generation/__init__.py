"""The one generation engine, used by predict, chat, eval and serve (docs/serving.md, "How the batching works").

sampler.py     `SamplingParams` and the batched sampler (temperature, top-p/k, min-p, penalties, seeds, logprobs)
detokenize.py  incremental text and stop strings
kv_cache.py    the slot KV cache: a request joins or leaves without copying the others
runner.py      the model's prefill and decode forwards
batch.py       continuous batching with batched prefill of arrivals
engine.py      the synchronous API (`generate`, `stream`) and the asyncio front door (`AsyncEngine`)
predict.py     answers for data records (`predict_samples`) and a command's sampling keys (`sampling_from`)
chat.py        the `qwen-sft chat` conversation loop
"""

from qwen_sft.generation.batch import Batch, Delta, Event, Failed, Finished, Request
from qwen_sft.generation.engine import AsyncEngine, Completion, GenerationError, QueueFull, generate, stream
from qwen_sft.generation.sampler import SamplingParams, TokenLogprob, from_generation_config

__all__ = ["AsyncEngine", "Batch", "Completion", "Delta", "Event", "Failed", "Finished", "GenerationError",
           "QueueFull", "Request", "SamplingParams", "TokenLogprob", "from_generation_config", "generate", "stream"]
