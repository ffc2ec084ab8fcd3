"""A slot KV cache: each sequence owns one row ("slot") of preallocated storage for its whole life.

Per layer, keys and values live in `[slots, kv_heads, capacity, head_dim]` tensors. A sequence joining takes
a free slot and writes its own positions; one leaving just marks its slot free. Nothing else moves, unlike a
left-padded batch cache, where every join or leave re-pads or re-indexes every other row's keys and values.

Decoding runs over the slot range [0, high) as one batch: a view of the storage, no gather. A free slot
inside that range (a "hole") runs as a dummy row whose output is discarded; `Batch` fills holes first and
packs the range when it is less than half used.

Storage grows by doubling (slots up to the batch limit, capacity up to the longest sequence), copying the
old contents once (amortised: a handful of times per busy period), and is released when the engine goes
idle, so memory returns to the baseline between bursts.

transformers calls `update(key_states, value_states, layer_idx)` from every attention layer (duck typing,
as for its own `Cache` classes); `plan_prefill` / `plan_decode` say beforehand where those states go.
"""

from __future__ import annotations

import torch


class SlotCache:
    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device,
                 max_slots: int, min_capacity: int = 128):
        self.num_layers, self.kv_heads, self.head_dim = num_layers, kv_heads, head_dim
        self.dtype, self.device = dtype, torch.device(device)
        self.max_slots, self.min_capacity = max_slots, min_capacity
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.free = list(range(max_slots))  # sorted: the lowest free slot is taken first, keeping [0, high) dense
        self._plan: tuple | None = None

    # ---- slots ----
    @property
    def slots(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def allocate(self) -> int:
        """Take the lowest free slot. Raises IndexError when all `max_slots` are in use."""
        return self.free.pop(0)

    def release_slot(self, slot: int) -> None:
        """The slot's contents are left as they are: the next owner overwrites what it reads."""
        self.free.append(slot)
        self.free.sort()

    def reserve(self, slots: int, length: int) -> None:
        """Make room for slot indices < `slots` and positions < `length` (doubling; copies only when growing)."""
        want_slots = self.slots or 1
        while want_slots < slots:
            want_slots *= 2
        want_capacity = self.capacity or self.min_capacity
        while want_capacity < length:
            want_capacity *= 2
        want_slots = min(max(want_slots, slots), self.max_slots)
        if want_slots == self.slots and want_capacity == self.capacity:
            return
        shape = (want_slots, self.kv_heads, want_capacity, self.head_dim)
        grown_k, grown_v = [], []
        for old_k, old_v in zip(self.keys or [None] * self.num_layers, self.values or [None] * self.num_layers):
            # zeros, not empty: masked keys still enter q.k (then + finfo.min), and a NaN from stale memory
            # would survive the mask and poison the row
            new_k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            new_v = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if old_k is not None:
                new_k[: old_k.shape[0], :, : old_k.shape[2]] = old_k
                new_v[: old_v.shape[0], :, : old_v.shape[2]] = old_v
            grown_k.append(new_k)
            grown_v.append(new_v)
        self.keys, self.values = grown_k, grown_v

    def move(self, source: int, target: int, length: int) -> None:
        """Copy one slot's first `length` positions to another (packing a sparse slot range; n > 1 siblings)."""
        for k, v in zip(self.keys, self.values):
            k[target, :, :length] = k[source, :, :length]
            v[target, :, :length] = v[source, :, :length]

    def clear(self) -> None:
        """Drop the storage (the engine is idle); the next `reserve` starts small again."""
        self.keys, self.values = [], []
        self.free = list(range(self.max_slots))
        self._plan = None

    # ---- one forward ----
    def plan_prefill(self, slots: torch.Tensor) -> None:
        """Next forward: right-padded prompts, row i written to `slots[i]` from position 0."""
        self._plan = ("prefill", slots)

    def plan_decode(self, rows: int, positions: torch.Tensor, kv_len: int) -> None:
        """Next forward: one token for each slot in [0, rows), at `positions` ([rows]); attend to [0, kv_len)."""
        # where each (row, head)'s new vector goes in the storage seen as [slots * kv_heads * capacity, head_dim]:
        # one index_copy_ per layer (a scatter_ over the 4-D view was ~100x slower on CPU bf16)
        heads = torch.arange(self.kv_heads, device=positions.device)
        rows_ = torch.arange(rows, device=positions.device)
        flat = ((rows_[:, None] * self.kv_heads + heads[None, :]) * self.capacity + positions[:, None]).reshape(-1)
        self._plan = ("decode", rows, flat, kv_len)

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Store this layer's new keys/values ([rows, kv_heads, q_len, head_dim]); return what attention reads."""
        if self._plan[0] == "prefill":
            slots = self._plan[1]
            length = key.shape[2]
            self.keys[layer_idx][:, :, :length].index_copy_(0, slots, key.to(self.dtype))
            self.values[layer_idx][:, :, :length].index_copy_(0, slots, value.to(self.dtype))
            return key, value  # a fresh prompt attends only to itself: no read back
        _, rows, flat, kv_len = self._plan
        k, v = self.keys[layer_idx], self.values[layer_idx]
        k.view(-1, self.head_dim).index_copy_(0, flat, key.reshape(-1, self.head_dim).to(self.dtype))
        v.view(-1, self.head_dim).index_copy_(0, flat, value.reshape(-1, self.head_dim).to(self.dtype))
        return k[:rows, :, :kv_len], v[:rows, :, :kv_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always passed explicitly; nothing may infer them from the cache

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)
