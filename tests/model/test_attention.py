"""Varlen attention (attention.py): packed examples attend per segment with no mask, and give the loss and
gradients of the padded and the mask-packed paths; the `attention` key; a `train` run with it."""

import pytest
import torch
import transformers

from qwen_sft.data.collate import VARLEN, PackedCollator, PadCollator, varlen_boundaries
from qwen_sft.model.attention import (
    attention_implementation,
    check_attention,
    kernel_attention,
    kernel_inputs,
    register_varlen,
    segment_attention,
    varlen_attention,
    varlen_attn,
)
from qwen_sft.model.training import use_chunked_loss
from qwen_sft.utils.errors import UserError

from helpers import config, logged

LENGTHS = (5, 9, 1, 7)  # a one-token example: a segment with nothing to attend to but itself


def gqa_model():
    """A 2-layer random Qwen2 with 4 query heads sharing 2 key/value heads, its forward returning summed token
    losses as in training (fp32, no dropout: exact comparisons)."""
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
    model = transformers.Qwen2ForCausalLM(config)
    model.config.use_cache = False
    use_chunked_loss(model, chunk_size=8)
    return model


def examples():
    g = torch.Generator().manual_seed(1)
    out = []
    for n in LENGTHS:
        ids = torch.randint(0, 1000, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] + ids[1:]})  # first label -100, as packing makes it
    return out


def count_segment_attention(monkeypatch) -> list:
    """A list that gets an entry each time the per-segment (CPU) varlen path runs."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        return segment_attention(*args, **kwargs)

    monkeypatch.setattr("qwen_sft.model.attention.segment_attention", counted)
    return calls


def loss_and_grads(model, batch):
    batch = {k: v for k, v in batch.items() if k not in ("num_trained", "seq_lengths")}  # the trainer pops them
    loss = model(**batch).loss
    return loss.detach(), torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])


def test_varlen_matches_padded_and_packed_loss_and_gradients():
    model, exs = gqa_model(), examples()
    padded = loss_and_grads(model, PadCollator(pad_id=0)(exs))
    packed = loss_and_grads(model, PackedCollator()([exs]))  # one row, block-diagonal mask from position_ids
    per_bin = loss_and_grads(model, PackedCollator(per_bin=True)([exs[:2], exs[2:]]))
    model.set_attn_implementation(register_varlen())
    batch = PackedCollator(varlen=True, per_bin=True)([exs[:2], exs[2:]])  # varlen: one row whatever per_bin says
    assert batch["input_ids"].shape == (1, sum(LENGTHS)) and "attention_mask" not in batch
    varlen = loss_and_grads(model, batch)
    for other in (padded, packed, per_bin):
        torch.testing.assert_close(varlen[0], other[0], rtol=1e-5, atol=1e-6)
        for (name, _), a, b in zip(model.named_parameters(), varlen[1], other[1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_varlen_builds_no_mask_and_reads_no_position_ids(monkeypatch):
    """The host syncs the dense path has: transformers' packed-sequence scan of position_ids, and the mask."""
    from transformers import masking_utils

    def refuse(*args, **kwargs):
        raise AssertionError("varlen must not scan position_ids for packed sequences")

    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", refuse)
    model = gqa_model()
    model.set_attn_implementation(register_varlen())
    seen = count_segment_attention(monkeypatch)
    model(**{k: v for k, v in PackedCollator(varlen=True)(examples()).items() if k not in ("num_trained", "seq_lengths")})
    assert len(seen) == 2  # each layer took the per-segment path


def test_collator_boundaries():
    exs = examples() + [{"input_ids": [], "labels": []}]  # an empty example is no segment
    batch = PackedCollator(varlen=True)([exs[:1], exs[1:]])
    assert batch["cu_seq_lens_q"].dtype == torch.int32 and batch["cu_seq_lens_q"].device.type == "cpu"
    assert batch["cu_seq_lens_q"].tolist() == [0, 5, 14, 15, 22] and batch["cu_seq_lens_k"] is batch["cu_seq_lens_q"]
    assert batch["max_length_q"] == batch["max_length_k"] == 9 and isinstance(batch["max_length_q"], int)
    assert batch["position_ids"].tolist() == [[*range(5), *range(9), 0, *range(7)]]
    assert "cu_seq_lens_q" not in PackedCollator()(exs)
    assert varlen_boundaries([3])["cu_seq_lens_q"].tolist() == [0, 3]


def test_kernel_inputs_are_flat_contiguous_with_int32_boundaries():
    """What the CUDA branch hands varlen_attn: (B·L, H, D) contiguous q/k/v and int32 boundaries on their device."""
    q = torch.randn(1, 4, 21, 8)
    k, v = torch.randn(1, 2, 21, 8), torch.randn(1, 2, 21, 8)
    cu = torch.tensor([0, 5, 14, 21])  # int64: converted
    fq, fk, fv, cu_q, cu_k = kernel_inputs(q, k, v, cu, cu)
    assert fq.shape == (21, 4, 8) and fk.shape == fv.shape == (21, 2, 8)
    assert all(t.is_contiguous() for t in (fq, fk, fv))
    assert torch.equal(fq[6, 3], q[0, 3, 6]) and torch.equal(fk[20, 1], k[0, 1, 20])
    assert cu_q.dtype == cu_k.dtype == torch.int32 and cu_q.device == q.device and cu_q.tolist() == cu.tolist()
    # the reference on these tensors = causal attention of each segment on its own (GQA: head h uses kv h // 2)
    out = segment_attention(fq, fk, fv, cu_q, scaling=None)
    alone = torch.nn.functional.scaled_dot_product_attention(q[:, :, 5:14], k[:, :, 5:14].repeat_interleave(2, 1),
                                                             v[:, :, 5:14].repeat_interleave(2, 1), is_causal=True)
    torch.testing.assert_close(out[5:14], alone[0].transpose(0, 1))


@pytest.mark.skipif(varlen_attn is None, reason="torch < 2.10 has no varlen_attn")
def test_kernel_call_on_meta_tensors():
    """The CUDA branch's call, run on meta tensors (varlen_attn's shape-only implementation): its arguments pass the
    kernel's own checks (GQA included), and gradients come back in the inputs' shapes."""
    q = torch.empty(1, 8, 21, 64, dtype=torch.bfloat16, device="meta", requires_grad=True)
    k, v = (torch.empty(1, 2, 21, 64, dtype=torch.bfloat16, device="meta", requires_grad=True) for _ in range(2))
    cu = torch.tensor([0, 5, 14, 21], dtype=torch.int32)
    flat_q, flat_k, flat_v, cu_q, cu_k = kernel_inputs(q, k, v, cu, cu)
    out = kernel_attention(flat_q, flat_k, flat_v, cu_q, cu_k, 9, 9, scaling=0.125)
    assert out.shape == (21, 8, 64) and out.dtype == torch.bfloat16
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape


def test_without_boundaries_it_is_sdpa():
    """A forward with no boundaries (e.g. generating with a model loaded for training) is transformers' sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = gqa_model().model.layers[0].self_attn
    q, k, v = torch.randn(1, 4, 6, 16), torch.randn(1, 2, 6, 16), torch.randn(1, 2, 6, 16)
    ours, _ = varlen_attention(module, q, k, v, None, scaling=0.25)
    torch.testing.assert_close(ours, sdpa_attention_forward(module, q, k, v, None, scaling=0.25)[0])


def test_the_attention_key():
    kernel = VARLEN if varlen_attn is not None else None
    assert attention_implementation("auto", True, torch.bfloat16, "cuda") == kernel
    for args in ((True, torch.bfloat16, "cpu"), (True, torch.float32, "cpu"), (False, torch.bfloat16, "cuda"),
                 (True, torch.float32, "cuda")):  # CPU keeps its measured default; fp32 is not a flash dtype
        assert attention_implementation("auto", *args) is None, args
    assert attention_implementation("varlen", True, torch.float32, "cpu") == VARLEN
    assert attention_implementation("eager", True, torch.float32, "cpu") == "eager"
    with pytest.raises(UserError, match="packing: true"):
        check_attention("varlen", packing=False)
    check_attention("varlen", packing=True)


def test_train_with_varlen_attention(tmp_path, monkeypatch):
    """Two steps of `train` with packing and attention: varlen (CPU: the per-segment path; the forecast's micro-run
    too): the same losses as the default packed run."""
    calls = count_segment_attention(monkeypatch)
    varlen = train_losses(tmp_path / "varlen", attention="varlen")
    assert calls, "the varlen path did not run"
    default = train_losses(tmp_path / "sdpa", forecast=False)
    assert len(varlen) == 2 and varlen == pytest.approx(default, rel=1e-5), (varlen, default)


def train_losses(tmp_path, **options):
    from qwen_sft.train.recipe import train

    out = train(config(tmp_path, max_steps=2, packing=True, **options))
    return [r["loss"] for r in logged(out) if "loss" in r]


def test_varlen_without_packing_is_refused(tmp_path):
    from qwen_sft.train.recipe import train

    with pytest.raises(UserError, match="attention: varlen needs packing"):
        train(config(tmp_path, attention="varlen"))
