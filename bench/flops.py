"""Model FLOPs of LoRA training on a Qwen2-architecture model, counted honestly (shared by the benchmarks).

Per token, for a weight of shape (in, out):
  frozen  (base weights, embeddings / output layer):  forward 2*in*out + input-gradient 2*in*out = 4*in*out
  trained (LoRA A: in x r, B: r x out):              forward + input-gradient + weight-gradient  = 6*in*out
The output layer (H x V) is frozen: 4*H*V per *trained* token (untrained positions need no logits); every
other term counts per *non-pad* token. Attention scores (QK^T and PV) are per sequence: causal, forward
2 products * 2*d * L(L+1)/2 multiply-adds per layer, backward twice that (both operands are activations).
Not counted (no matmul): norms, rotary, activations, softmaxes, dropout, the optimizer.
"""

from __future__ import annotations

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linear_shapes(config) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of one decoder layer."""
    h, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}


def flops_per_token(config, lora_r: int = 8, targets=LORA_TARGETS) -> dict[str, int]:
    """FLOPs per token by group: attention projections, MLP, LoRA (per non-pad token), output layer (per
    trained token)."""
    shapes, layers = linear_shapes(config), config.num_hidden_layers
    attention = sum(4 * i * o for name, (i, o) in shapes.items() if name in ("q_proj", "k_proj", "v_proj", "o_proj"))
    mlp = sum(4 * i * o for name, (i, o) in shapes.items() if name in ("gate_proj", "up_proj", "down_proj"))
    lora = sum(6 * lora_r * (i + o) for name, (i, o) in shapes.items() if name in targets)
    return {"attention_proj": layers * attention, "mlp": layers * mlp, "lora": layers * lora,
            "output_layer": 4 * config.vocab_size * config.hidden_size}


def attention_flops(config, seq_lengths) -> int:
    """Causal QK^T and PV of whole sequences (each packed example is its own sequence), forward + backward."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d = config.num_attention_heads * head_dim
    return 3 * config.num_hidden_layers * sum(2 * d * n * (n + 1) for n in seq_lengths)


def useful_flops(config, non_pad: int, trained: int, seq_lengths, lora_r: int = 8) -> int:
    """The FLOPs a step (or run) needs: body per non-pad token, output layer per trained token, attention."""
    per = flops_per_token(config, lora_r)
    body = per["attention_proj"] + per["mlp"] + per["lora"]
    return non_pad * body + trained * per["output_layer"] + attention_flops(config, seq_lengths)
