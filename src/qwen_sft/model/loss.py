"""Chunked ("fused") linear + cross-entropy: the LM loss without full-vocab logits.

Qwen's output layer maps H -> 151936. Materialising B×T×V fp32 logits (and their gradient) is the
largest tensor in a training step, and most of it is wasted: prompt and pad positions are not trained.
`chunked_cross_entropy` therefore

1. shifts (position t predicts labels[t+1]) and keeps only the N trained rows of the hidden states,
2. walks those rows in chunks of `chunk_size`, and each chunk's vocabulary in tiles of ~4K columns
   (on CPU; a GPU takes the whole vocabulary as one tile):
   pass 1, per tile: logits = h @ W_tile.T, then (while the tile is still in cache) its row max m_t,
   E_t = exp(logits - m_t) in place (as exp2, see below) and its row sum s_t. E_t is kept (in the
   matmul dtype).
   From the tiles' (m_t, s_t) comes the row's logsumexp, lse, and the loss lse - logit[target].
   pass 2, per tile: grad_h += exp(m_t - lse) * (E_t @ W_tile) -- the softmax normalisation is a
   per-row scale applied to the small (rows × H) product, never a pass over the (rows × tile) block.
   The "- onehot" part of (softmax - onehot) is one gather: grad_h -= W[target].
   If the weight (bias) is trainable: grad_W_tile += E_t.T @ (exp(m_t - lse) * h), grad_W[target] -= h.
3. hands the stored gradients to autograd in backward, scaled by grad_output.

Why tiles: a (rows × V) fp32 block is hundreds of MB; every elementwise pass over it (max, subtract,
exp, sum, divide, cast) is a trip to DRAM that costs about as much as the matmul itself when H is small
(the tiny model's H = 256). Per tile the passes run in L2/L3, E is written once and read once (by the
matmul), and no (rows × V) fp32 copy is made for bf16 inputs.

Peak extra memory is ~chunk_size × V values of the matmul dtype instead of B×T×V fp32, and the FLOPs
are the minimum: 2·N·V·H for the logits, 2·N·V·H for grad_hidden, plus 2·N·V·H for grad_weight only
when it is trained. Same idea as Liger-Kernel's FusedLinearCrossEntropy and Apple's Cut Cross-Entropy,
in plain torch.
"""

import torch
from torch import Tensor

from qwen_sft.template.encode import IGNORE_INDEX

LOG2E, LN2 = 1.4426950408889634, 0.6931471805599453
VOCAB_TILE = 4096  # columns per tile on CPU: a (rows × tile) fp32 block of 128-512 rows stays in L2/L3


def vocab_tiles(vocab: int, target: int | None = None) -> list[tuple[int, int]]:
    """Near-equal [start, end) column tiles of about `target` (default VOCAB_TILE) columns.

    Widths are multiples of 16 (aligned rows) but not of 512: a power-of-two row stride maps a tile's
    rows onto the same cache sets, which was measured to slow the tile matmuls several-fold on CPU.
    """
    target = target or VOCAB_TILE
    width = -(-vocab // -(-vocab // target))  # ceil(vocab / number of tiles)
    width = -(-width // 16) * 16
    if width % 512 == 0:
        width += 16
    return [(start, min(start + width, vocab)) for start in range(0, vocab, width)]


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropy of (h @ W.T + b) against targets, gradients computed in forward."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk_size, grad_enabled):
        # needs_input_grad is set even under no_grad, hence the explicit grad_enabled flag
        need_h, need_w, need_b = (n and grad_enabled for n in ctx.needs_input_grad[:3])
        need_grad = need_h or need_w or need_b
        acc = torch.promote_types(h.dtype, torch.float32)  # softmax in fp32 at least (fp64 stays fp64)
        n_rows, vocab = h.shape[0], weight.shape[0]
        # GPUs: one tile, the whole vocabulary: ~15 kernel launches per chunk instead of ~450 (launches, not
        # cache misses, are what a GPU step of this loss waits on)
        tiles = vocab_tiles(vocab, None if h.device.type == "cpu" else vocab)
        grad_h = torch.zeros(h.shape, dtype=acc, device=h.device) if need_h else None
        # the weight's gradient accumulates in its own dtype, as autograd would return it (no V×H fp32 copy)
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros(vocab, dtype=acc, device=h.device) if need_b else None
        loss = torch.zeros((), dtype=acc, device=h.device)
        # balanced chunks of at most chunk_size rows (817 rows / 256 -> 4 × 205, not 3 × 256 + 49)
        rows = -(-n_rows // -(-n_rows // chunk_size)) if n_rows else 0
        # E of one chunk, tile after tile, each tile a contiguous (n × width) block; in fp32/fp64 the
        # logits are computed right where E is kept, otherwise in a tile-sized scratch (+ an fp32 one)
        in_place = need_grad and h.dtype == acc
        store = torch.empty(rows * vocab, dtype=h.dtype, device=h.device) if need_grad else None
        width = max(end - start for start, end in tiles)
        scratch = None if in_place else torch.empty(rows * width, dtype=h.dtype, device=h.device)
        scratch32 = torch.empty(rows * width, dtype=acc, device=h.device) if h.dtype != acc else None

        # autocast is resolved by the caller; inside, the matmuls run in the inputs' dtype
        with torch.autocast(h.device.type, enabled=False):
            for first in range(0, n_rows, max(rows, 1)):
                h_c, t_c = h[first : first + rows], targets[first : first + rows]
                n = h_c.shape[0]
                # Exponentials are taken base 2 (exp2 is ~4x cheaper than exp on CPU): in fp32/fp64 the
                # log2(e) factor is folded into the (n × H) hidden rows, so the logits come out scaled.
                h_mm = h_c * LOG2E if scratch32 is None else h_c
                tile_max = torch.empty((len(tiles), n, 1), dtype=acc, device=h.device)  # log2 units
                tile_sum = torch.empty((len(tiles), n, 1), dtype=acc, device=h.device)
                for k, (start, end) in enumerate(tiles):
                    w = end - start
                    logits = store[n * start : n * end].view(n, w) if in_place else scratch[: n * w].view(n, w)
                    if bias is None:
                        torch.mm(h_mm, weight[start:end].t(), out=logits)
                    else:
                        b = bias[start:end] * LOG2E if scratch32 is None else bias[start:end]
                        torch.addmm(b, h_mm, weight[start:end].t(), out=logits)
                    if scratch32 is None:  # fp32 / fp64: E = 2^(logits2 - max) in place
                        tile_max[k] = logits.amax(dim=1, keepdim=True)
                        e = logits.sub_(tile_max[k]).exp2_()
                    else:  # bf16: the subtraction and exponential in fp32, E rounded once into the store
                        e = scratch32[: n * w].view(n, w).copy_(logits)
                        top = e.amax(dim=1, keepdim=True)
                        e.sub_(top).mul_(LOG2E).exp2_()
                        tile_max[k] = top * LOG2E
                        if need_grad:
                            store[n * start : n * end].view(n, w).copy_(e)
                    torch.sum(e, dim=1, keepdim=True, out=tile_sum[k])
                top = tile_max.amax(dim=0)
                lse2 = top + (tile_sum * (tile_max - top).exp2()).sum(dim=0).log2()  # (n, 1), log2 units
                # the target's logit, recomputed as one dot product per row (N×H, no pass over the tiles)
                target_logit = (h_c.to(acc) * weight[t_c].to(acc)).sum(-1, keepdim=True)
                if bias is not None:
                    target_logit += bias[t_c].to(acc)[:, None]
                lse = lse2 * LN2
                loss += (lse - target_logit).sum()
                if not need_grad:
                    continue
                scale = (tile_max - lse2).exp2_()  # (tiles, n, 1): softmax = E_t * scale_t
                for k, (start, end) in enumerate(tiles):
                    e = store[n * start : n * end].view(n, end - start)
                    if need_h:
                        part = torch.mm(e, weight[start:end])  # (n, H)
                        grad_h[first : first + n].addcmul_(part, scale[k])
                    if need_w:
                        hs = (h_c.to(acc) * scale[k]).to(h.dtype)
                        # out= form: FLOP counters see it
                        torch.addmm(grad_w[start:end], e.t(), hs, out=grad_w[start:end])
                    if need_b:
                        grad_b[start:end] += (e.to(acc) * scale[k]).sum(0)
                # the "- onehot" of softmax - onehot
                if need_h:
                    grad_h[first : first + n] -= weight[t_c].to(acc)
                if need_w:
                    grad_w.index_add_(0, t_c, h_c.to(grad_w.dtype), alpha=-1)
                if need_b:
                    grad_b.index_add_(0, t_c, torch.ones(n, dtype=acc, device=h.device), alpha=-1)
        ctx.save_for_backward(grad_h.to(h.dtype) if need_h else None, grad_w,
                              grad_b.to(bias.dtype) if need_b else None)
        ctx.used = False
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.used:  # the stored grads are scaled in place below, so a second pass would be wrong
            raise RuntimeError("chunked_cross_entropy supports a single backward pass (no retain_graph reuse)")
        ctx.used = True
        grads = [g.mul_(grad_output) if g is not None else None for g in ctx.saved_tensors]
        return *grads, None, None, None


def chunked_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "sum",
) -> Tensor:
    """Causal-LM cross-entropy of `hidden @ weight.T (+ bias)` without materialising all logits.

    Args:
        hidden: (B, T, H) final-norm hidden states (any float dtype). Position t predicts labels[t+1].
        weight: (V, H) output-layer weight; its gradient is computed only if it requires grad.
        labels: (B, T) token ids, `ignore_index` where not trained (the shift happens here).
        bias: optional (V,) output-layer bias.
        chunk_size: trained rows per output-layer pass; peak extra memory ~ chunk_size × V values of
            the matmul dtype (plus one ~8K-column tile in fp32).
        ignore_index: label value that is not trained.
        reduction: "sum" (the summed token loss, for token-normalised accumulation) or "mean".

    Returns:
        A 0-d tensor, fp32 (fp64 for fp64 inputs). With no trained tokens it is 0 (also for "mean")
        and still backpropagates (zero gradients).

    Raises:
        ValueError: on shape/dtype mismatches, chunk_size < 1 or an unknown reduction.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden.shape[:-1] != labels.shape or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"shapes do not fit: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, "
                         f"labels {tuple(labels.shape)}; expected (B, T, H), (V, H), (B, T)")

    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):  # do what autocast would do to F.linear, once, up front
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise ValueError(f"hidden ({hidden.dtype}) and lm_head ({weight.dtype}) dtypes differ; cast one of them")

    targets = labels[:, 1:]
    keep = targets != ignore_index  # untrained and pad positions never reach the output layer
    h = hidden[:, :-1][keep]  # (N, H); autograd scatters grad_h back into (B, T, H)
    loss = _LinearCrossEntropy.apply(h, weight, bias, targets[keep], chunk_size, torch.is_grad_enabled())
    if reduction == "mean" and h.shape[0] > 0:
        loss = loss / h.shape[0]
    return loss
