"""Forward passes over a `SlotCache`: batched prefill and one decoding step, logits only where needed.

The model is split into its decoder (`get_decoder()`) and output layer (`get_output_embeddings()`), so the
output layer runs only on the rows that are sampled: each prompt's last token at prefill, the live rows at a
decoding step (never full-vocabulary logits for every position). A peft model works unchanged: its LoRA
layers are modules inside the decoder.

Masks are passed as `{layer_type: 4-D additive mask}`, which transformers' decoders (Qwen2, Qwen3, ...) use
as they are. Prefill rows are right-padded and start at position 0, so plain causal attention is exact for
every real token (padding only sees itself and earlier tokens, and its outputs are discarded): no mask at all,
and SDPA takes its causal kernel. A decoding row at position p sees keys [0, p] of its own slot: additive
mask 0 / finfo.min (never -inf, so a row whose keys are all masked gives numbers, not NaN).

On CPU, a bf16/fp16 model keeps its cache in fp32 and decodes attention in fp32: torch's CPU SDPA is 5-6x
slower in bf16 than in fp32 for decoding shapes (32 rows x 120 keys: 1.7 vs 0.27 ms per layer, measured
here), and upcasting the stored bf16 values loses nothing. The model's attention implementation is switched
to `CPU_ATTENTION` (sdpa with the query upcast to the keys' dtype) only for the engine's own forwards.
"""

from __future__ import annotations

import contextlib

import torch

from qwen_sft.generation.kv_cache import SlotCache

CPU_ATTENTION = "qwen_sft_sdpa_upcast"
GREEDY_TILE = 32768  # output-layer rows per tile in `greedy`


class ModelRunner:
    def __init__(self, model, vocab_limit: int):
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the wrapped model
        self.decoder = lm.get_decoder()
        self.head = lm.get_output_embeddings()
        config = lm.config
        self.layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
        self.sliding_window = getattr(config, "sliding_window", None)
        self.num_layers = config.num_hidden_layers
        self.kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.max_positions = getattr(config, "max_position_embeddings", None)
        first = next(model.parameters())
        self.device, self.dtype = first.device, first.dtype
        self.config = config
        upcast = (self.device.type == "cpu" and self.dtype in (torch.bfloat16, torch.float16)
                  and getattr(config, "_attn_implementation", None) == "sdpa")
        self.kv_dtype = torch.float32 if upcast else self.dtype
        self.attention = CPU_ATTENTION if upcast else None
        if upcast:
            _register_cpu_attention()
        self.vocab_limit = min(vocab_limit, self.head.weight.shape[0])
        # a plain Linear: multiply by the first `vocab_limit` rows only (a contiguous view), skipping the
        # padded rows that must never come out anyway; anything else (a LoRA-wrapped head) runs as a module
        self.plain_head = type(self.head) is torch.nn.Linear

    def new_cache(self, max_slots: int) -> SlotCache:
        return SlotCache(self.num_layers, self.kv_heads, self.head_dim, self.kv_dtype, self.device, max_slots)

    def prefill(self, cache: SlotCache, prompts: list[list[int]], slots: list[int]) -> torch.Tensor:
        """Run the prompts (right-padded, one per slot), store their keys/values; [prompts, hidden] states at each
        prompt's last token (for `logits` / `greedy`)."""
        width = max(len(p) for p in prompts)
        cache.reserve(max(slots) + 1, width)
        ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts], device=self.device)
        positions = torch.arange(width, device=self.device).expand(len(prompts), width)
        cache.plan_prefill(torch.tensor(slots, device=self.device))
        masks = dict.fromkeys(self.layer_types)
        if "sliding_attention" in self.layer_types and self.sliding_window and width > self.sliding_window:
            masks["sliding_attention"] = self._prefill_window_mask(width)
        hidden = self._forward(ids, positions, masks, cache)
        last = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        return hidden[torch.arange(len(prompts), device=self.device), last]

    def decode(self, cache: SlotCache, tokens: list[int], positions: list[int], live: list[int]) -> torch.Tensor:
        """One step for slots [0, len(tokens)): token t_i at position p_i in slot i. [len(live), hidden] states of
        the `live` slots (the others are holes: dummy rows)."""
        rows, kv_len = len(tokens), max(positions) + 1
        cache.reserve(rows, kv_len)
        ids = torch.tensor(tokens, device=self.device)[:, None]
        pos = torch.tensor(positions, device=self.device)
        cache.plan_decode(rows, pos, kv_len)
        keys = torch.arange(kv_len, device=self.device)
        visible = keys[None, :] <= pos[:, None]  # [rows, kv_len]
        masks = {"full_attention": None}
        if "sliding_attention" in self.layer_types and self.sliding_window:
            masks["sliding_attention"] = self._additive(visible & (keys[None, :] > pos[:, None] - self.sliding_window))
        masks["full_attention"] = self._additive(visible)
        masks = {kind: masks[kind] for kind in self.layer_types}
        hidden = self._forward(ids, pos[:, None], masks, cache)[:, 0]
        if len(live) < rows:
            hidden = hidden[torch.tensor(live, device=self.device)]
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Output layer on [rows, hidden] states: [rows, vocab_limit]."""
        if self.plain_head:
            bias = self.head.bias[: self.vocab_limit] if self.head.bias is not None else None
            return torch.nn.functional.linear(hidden, self.head.weight[: self.vocab_limit], bias)
        return self.head(hidden)[:, : self.vocab_limit]

    def greedy(self, hidden: torch.Tensor) -> list[int]:
        """argmax of `logits(hidden)` per row, computed a vocabulary tile at a time: the [rows, vocab] logits never
        exist at once, and each tile's max runs while it is still in cache (CPU, 128 rows: 92 -> 76 ms)."""
        if not self.plain_head:
            return self.logits(hidden).max(-1).indices.tolist()
        weight, bias = self.head.weight, self.head.bias
        best_value = best_index = None
        for start in range(0, self.vocab_limit, GREEDY_TILE):
            end = min(start + GREEDY_TILE, self.vocab_limit)
            tile = torch.nn.functional.linear(hidden, weight[start:end], bias[start:end] if bias is not None else None)
            value, index = tile.max(-1)  # the first maximum, as argmax; strict > below keeps the earlier tile's
            if best_value is None:
                best_value, best_index = value, index
            else:
                better = value > best_value
                best_value = torch.where(better, value, best_value)
                best_index = torch.where(better, index + start, best_index)
        return best_index.tolist()

    def _forward(self, ids, positions, masks, cache) -> torch.Tensor:
        with attention_kernels(self.device), self._attention_implementation():
            out = self.decoder(input_ids=ids, attention_mask=masks, position_ids=positions, past_key_values=cache,
                               use_cache=True)
        return out.last_hidden_state

    @contextlib.contextmanager
    def _attention_implementation(self):
        if self.attention is None:
            yield
            return
        saved = self.config._attn_implementation
        self.config._attn_implementation = self.attention  # read by every attention layer at each call
        try:
            yield
        finally:
            self.config._attn_implementation = saved

    def _additive(self, visible: torch.Tensor) -> torch.Tensor:
        """[rows, kv] booleans -> [rows, 1, 1, kv] additive mask in the cache's dtype (what attention computes in)."""
        zero = torch.zeros((), dtype=self.kv_dtype, device=self.device)
        blocked = torch.tensor(torch.finfo(self.kv_dtype).min, dtype=self.kv_dtype, device=self.device)
        return torch.where(visible, zero, blocked)[:, None, None, :]

    def _prefill_window_mask(self, width: int) -> torch.Tensor:
        q = torch.arange(width, device=self.device)[:, None]
        k = torch.arange(width, device=self.device)[None, :]
        visible = (k <= q) & (k > q - self.sliding_window)
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        blocked = torch.tensor(torch.finfo(self.dtype).min, dtype=self.dtype, device=self.device)
        return torch.where(visible, zero, blocked)[None, None]


def attention_kernels(device: torch.device):
    """On CUDA, SDPA without the cuDNN backend: cuDNN builds a plan per new shape (~3 s the first time, then
    ~0.15 s more per 64-token generation of a new batch shape, measured on an H200) and decoding changes the
    shape every step; the flash / memory-efficient kernels have no such cost."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _sdpa_upcast(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa attention with the query (and mask) cast to the keys' dtype, the output cast back.
    With equal dtypes it is plain sdpa, so another caller of the model meanwhile computes what it always did."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.dtype == key.dtype:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    mask = attention_mask.to(key.dtype) if attention_mask is not None and attention_mask.is_floating_point() \
        else attention_mask
    out, weights = sdpa_attention_forward(module, query.to(key.dtype), key, value, mask, **kwargs)
    return out.to(query.dtype), weights


def _register_cpu_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(CPU_ATTENTION, _sdpa_upcast)
