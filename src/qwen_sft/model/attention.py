"""Packed rows without a dense mask: a transformers attention implementation over per-example segments.

`PackedCollator(varlen=True)` puts every example of a micro-batch into one row and passes their boundaries as
`cu_seq_lens_q/k` (int32 cumulative lengths over the flattened batch) and `max_length_q/k` (ints): the names
transformers' flash-attention path reads, so they reach every attention layer through the model's **kwargs.
`VARLEN` is registered with transformers' AttentionInterface but not with its AttentionMaskInterface, so
`masking_utils.create_causal_mask` returns None for it at once: no [B,1,L,L] mask is built, and position_ids are
never scanned for restarts (`find_packed_sequence_indices` reads a device value: a host sync every forward).

What runs:
- CUDA, bf16/fp16, torch >= 2.10: `torch.nn.attention.varlen.varlen_attn` (flash kernel) on (tokens, heads,
  head_dim) q/k/v, causal, grouped-query attention inside the kernel (no repeated keys/values);
- otherwise (CPU, fp32): causal sdpa on each example's segment, one at a time -- also the numerical reference;
- no boundaries given (a forward outside training, e.g. generation): transformers' sdpa with the mask it got.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qwen_sft.utils.errors import UserError

VARLEN = "qwen_sft_varlen"  # the transformers attn_implementation name
KERNEL_DTYPES = (torch.bfloat16, torch.float16)  # what the flash kernel computes in

try:  # torch >= 2.10
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None


def attention_implementation(choice: str, packing: bool, dtype: torch.dtype, device: str) -> str | None:
    """transformers' `attn_implementation` for the `attention` key (None: transformers' default, sdpa).

    `auto` is varlen where it pays and is exact: packed rows on CUDA in bf16/fp16 with the kernel available;
    elsewhere it keeps transformers' default (on CPU sdpa with the block-diagonal mask is the measured fast path).
    """
    if choice == "auto":
        fast = packing and device == "cuda" and dtype in KERNEL_DTYPES and varlen_attn is not None
        return register_varlen() if fast else None
    return register_varlen() if choice == "varlen" else choice


def check_attention(choice: str, packing: bool) -> None:
    """Raises: UserError for `attention: varlen` without packing (padded batches need a padding mask)."""
    if choice == "varlen" and not packing:
        raise UserError("attention: varlen needs packing: true (it takes each example's boundaries from the packed "
                        "rows; padded batches need the mask sdpa/eager build); set packing: true or attention: auto")


def check_model(config) -> None:
    """Raises: UserError for varlen on a model with sliding-window layers (only full causal attention is done)."""
    if getattr(config, "_attn_implementation", None) == VARLEN and "sliding_attention" in (
            getattr(config, "layer_types", None) or ()):
        raise UserError("attention: varlen does not do sliding-window attention, which this model's config turns "
                        "on (use_sliding_window); use attention: sdpa")


def register_varlen() -> str:
    """Register `varlen_attention` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_attention)
    return VARLEN


def varlen_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     sliding_window: int | None = None, cu_seq_lens_q: torch.Tensor | None = None,
                     cu_seq_lens_k: torch.Tensor | None = None, max_length_q: int | None = None,
                     max_length_k: int | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """The attention function transformers calls: q (B, Hq, L, D), k/v (B, Hkv, L, D) → ((B, L, Hq, D), None).

    With `cu_seq_lens_q` every segment [cu[i], cu[i+1]) of the flattened B·L tokens attends causally to itself
    only; without it, this is transformers' sdpa.
    """
    if cu_seq_lens_q is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if sliding_window is not None:
        raise ValueError("qwen_sft_varlen attention does no sliding window; load the model with sdpa")
    batch, heads, length, head_dim = query.shape
    cu_seq_lens_k = cu_seq_lens_q if cu_seq_lens_k is None else cu_seq_lens_k
    q, k, v, cu_q, cu_k = kernel_inputs(query, key, value, cu_seq_lens_q, cu_seq_lens_k)
    if q.is_cuda and torch.is_autocast_enabled("cuda"):  # fp32 weights under autocast (full fine-tuning): RoPE
        q, k, v = (t.to(torch.get_autocast_dtype("cuda")) for t in (q, k, v))  # made q/k fp32; sdpa would cast too
    if q.is_cuda and q.dtype in KERNEL_DTYPES and varlen_attn is not None and not dropout:
        out = kernel_attention(q, k, v, cu_q, cu_k, max_length_q, max_length_k or max_length_q, scaling)
    else:
        out = segment_attention(q, k, v, cu_seq_lens_q, scaling, dropout)
    return out.reshape(batch, length, heads, head_dim), None


def kernel_inputs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq_lens_q: torch.Tensor,
                  cu_seq_lens_k: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """transformers' (B, H, L, D) q/k/v as the (B·L, H, D) contiguous tensors varlen kernels take, and the
    boundaries as int32 on the tensors' device (a no-op when the Trainer already moved them there)."""
    flat = [t.transpose(1, 2).reshape(-1, t.shape[1], t.shape[3]).contiguous() for t in (query, key, value)]
    bounds = [c.to(device=query.device, dtype=torch.int32, non_blocking=True) for c in (cu_seq_lens_q, cu_seq_lens_k)]
    return (*flat, *bounds)


def kernel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                     max_q: int, max_k: int, scaling: float | None) -> torch.Tensor:
    """PyTorch's varlen flash kernel on `kernel_inputs`' tensors → (T, Hq, D): causal (window (-1, 0)), each
    key/value head shared by Hq / Hkv query heads inside the kernel (no repeated copies)."""
    return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=scaling, window_size=(-1, 0),
                       enable_gqa=k.shape[1] != q.shape[1])


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seq_lens: torch.Tensor,
                      scaling: float | None, dropout: float = 0.0) -> torch.Tensor:
    """Causal sdpa on each segment of (T, H, D) tensors separately → (T, Hq, D): what varlen_attn computes.

    Reads the boundaries on the host (free for the CPU tensors the collator makes; a sync per layer on CUDA,
    where this runs only for fp32)."""
    bounds = cu_seq_lens.tolist()
    gqa = k.shape[1] != q.shape[1]
    outs = [F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1),
                                           dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa)
            for a, b in zip(bounds, bounds[1:]) if b > a]
    return torch.cat(outs, dim=1).transpose(0, 1)
