"""Chunked ("fused") linear + cross-entropy: the LM loss without full-vocab logits.

Qwen's output layer maps H -> 151936. Materialising B×T×V fp32 logits (and their gradient) is the
largest tensor in a training step, and most of it is wasted: prompt and pad positions are not trained.
`chunked_cross_entropy` therefore

1. shifts (position t predicts labels[t+1]) and keeps only the N trained rows of the hidden states,
2. walks those rows in chunks of `chunk_size`; per chunk it computes the logits, the loss, and
   right away the gradients (softmax - onehot) @ W and, if the weight is trainable, its transpose
   product with h, then drops the logits,
3. hands the stored gradients to autograd in backward, scaled by grad_output.

Peak extra memory is ~chunk_size × V floats instead of B×T×V, and the FLOPs are the minimum:
2·N·V·H for the logits, 2·N·V·H for grad_hidden, plus 2·N·V·H for grad_weight only when it is trained.
Same idea as Liger-Kernel's FusedLinearCrossEntropy and Apple's Cut Cross-Entropy, in plain torch.
"""

import torch
from torch import Tensor

IGNORE_INDEX = -100


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropy of (h @ W.T + b) against targets, gradients computed in forward."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk_size, grad_enabled):
        # needs_input_grad is set even under no_grad, hence the explicit grad_enabled flag
        need_h, need_w, need_b = (n and grad_enabled for n in ctx.needs_input_grad[:3])
        grad_h = torch.empty_like(h) if need_h else None
        # grads accumulate over chunks in the parameter's own dtype, as autograd would return them
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b else None
        acc = torch.promote_types(h.dtype, torch.float32)  # softmax in fp32 at least (fp64 stays fp64)
        loss = torch.zeros((), dtype=acc, device=h.device)

        # autocast is resolved by the caller; inside, the matmuls run in the inputs' dtype
        with torch.autocast(h.device.type, enabled=False):
            for start in range(0, h.shape[0], chunk_size):
                h_c, t_c = h[start : start + chunk_size], targets[start : start + chunk_size]
                logits = torch.nn.functional.linear(h_c, weight, bias).to(acc)  # bf16 matmul, fp32 softmax
                target = logits.gather(1, t_c[:, None])
                # logsumexp by hand, in place: one chunk×V buffer is the whole working set
                top = logits.amax(dim=-1, keepdim=True)
                probs = logits.sub_(top).exp_()
                total = probs.sum(dim=-1, keepdim=True)
                loss += (top + total.log() - target).sum()
                if need_h or need_w or need_b:
                    # d(sum CE)/d(logits) = softmax - onehot
                    g = probs.div_(total)
                    g[torch.arange(len(t_c), device=g.device), t_c] -= 1.0
                    g = g.to(h.dtype)
                    if need_h:
                        grad_h[start : start + chunk_size] = g @ weight
                    if need_w:
                        torch.addmm(grad_w, g.t(), h_c, out=grad_w)  # out= form: FLOP counters see it
                    if need_b:
                        grad_b += g.sum(0)
                    del g
                del logits, probs  # free this chunk's buffers before the next chunk allocates its own
        ctx.save_for_backward(grad_h, grad_w, grad_b)
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
        chunk_size: trained rows per output-layer pass; peak extra memory ~ chunk_size × V fp32.
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


def count_trained_tokens(labels: Tensor, ignore_index: int = IGNORE_INDEX) -> int:
    """Number of positions that carry loss after the causal shift, i.e. labels[:, 1:] != ignore_index."""
    return int((labels[:, 1:] != ignore_index).sum())
