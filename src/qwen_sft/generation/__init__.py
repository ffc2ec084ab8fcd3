"""One generation engine for predict, chat, eval and serve (see docs/inference.md, "How generation works").

sampler.py (SamplingParams, Sampler) · detokenize.py (incremental text, stop strings) · kv_cache.py (slot
cache) · runner.py (prefill / decode forwards) · batch.py (continuous batching) · engine.py (synchronous API,
worker thread + asyncio front door).
"""

from qwen_sft.generation.batch import Batch, Delta, Event, Failed, Finished, Request
from qwen_sft.generation.engine import AsyncEngine, Completion, GenerationError, QueueFull, generate, stream
from qwen_sft.generation.sampler import SamplingParams, TokenLogprob, from_generation_config

__all__ = ["AsyncEngine", "Batch", "Completion", "Delta", "Event", "Failed", "Finished", "GenerationError",
           "QueueFull", "Request", "SamplingParams", "TokenLogprob", "from_generation_config", "generate", "stream"]
