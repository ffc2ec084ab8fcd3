import pytest
import torch
import torch.nn.functional as F
import transformers
from torch.utils.flop_counter import FlopCounterMode

from qwen_sft.model.loss import chunked_cross_entropy


def count_trained_tokens(labels):
    return int((labels[:, 1:] != -100).sum())

V, H = 97, 16


def naive(hidden, weight, labels, bias=None):
    logits = F.linear(hidden, weight, bias)[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="sum")


def make(dtype, B=3, T=11, seed=0, weight_grad=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g, dtype=dtype, requires_grad=True)
    weight = (torch.randn(V, H, generator=g, dtype=dtype) / H**0.5).requires_grad_(weight_grad)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :4] = -100  # a prompt
    labels[2, 7:] = -100  # padding
    return hidden, weight, labels


def grads(loss, *tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t.requires_grad])


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1024])  # 7 does not divide N = 23
def test_matches_naive(dtype, tol, chunk_size):
    hidden, weight, labels = make(dtype)
    bias = torch.randn(V, dtype=dtype, requires_grad=True)
    assert count_trained_tokens(labels) == 23
    ours = chunked_cross_entropy(hidden, weight, labels, bias=bias, chunk_size=chunk_size)
    ref = naive(hidden, weight, labels, bias)
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=tol, atol=tol)
    for a, b in zip(grads(ours, hidden, weight, bias), grads(ref, hidden, weight, bias), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_mean_and_grad_scaling():
    hidden, weight, labels = make(torch.float64)
    n = count_trained_tokens(labels)
    ours = chunked_cross_entropy(hidden, weight, labels, reduction="mean", chunk_size=5) * 3.0
    ref = naive(hidden, weight, labels) / n * 3.0
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads(ours, hidden, weight), grads(ref, hidden, weight), strict=True):
        torch.testing.assert_close(a, b)


def test_frozen_weight_costs_the_flop_minimum():
    hidden, weight, labels = make(torch.float32, weight_grad=False)
    n = count_trained_tokens(labels)
    with FlopCounterMode(display=False) as counter:
        loss = chunked_cross_entropy(hidden, weight, labels, chunk_size=8)
        loss.backward()
    assert weight.grad is None
    assert counter.get_total_flops() == 2 * (2 * n * V * H)  # logits + grad_hidden, on trained rows only

    weight.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        chunked_cross_entropy(hidden, weight, labels, chunk_size=8).backward()
    assert counter.get_total_flops() == 3 * (2 * n * V * H)  # + grad_weight


def test_no_grad_computes_only_the_loss():
    hidden, weight, labels = make(torch.float32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        loss = chunked_cross_entropy(hidden, weight, labels)
    assert counter.get_total_flops() == 2 * count_trained_tokens(labels) * V * H
    torch.testing.assert_close(loss, naive(hidden, weight, labels).detach())


def test_bf16_close_to_fp32():
    hidden, weight, labels = make(torch.float32, B=4, T=64)
    ref = naive(hidden, weight, labels)
    ref_grads = grads(ref, hidden, weight)
    h16, w16 = hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16().requires_grad_()
    ours = chunked_cross_entropy(h16, w16, labels, chunk_size=32)
    naive16 = naive(h16, w16, labels)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=0)  # softmax in fp32: better than a bf16 naive loss
    for a, b, c in zip(grads(ours, h16, w16), ref_grads, grads(naive16, h16, w16), strict=True):
        assert a.dtype == torch.bfloat16
        err, naive_err = (a.float() - b).norm() / b.norm(), (c.float() - b).norm() / b.norm()
        assert err < 1e-2 and err < 2 * naive_err  # bf16 rounding, no worse than autograd in bf16


def test_autocast_matches_plain_linear_under_autocast():
    hidden, weight, labels = make(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = chunked_cross_entropy(hidden, weight, labels)
        ref = naive(hidden, weight, labels)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-2, atol=0)
    gh, gw = grads(ours, hidden, weight)
    assert gh.dtype == gw.dtype == torch.float32  # casts happen in autograd, grads land in the param dtype


def test_all_ignored_gives_zero_and_backward_works():
    hidden, weight, labels = make(torch.float32)
    labels[:] = -100
    labels[:, 0] = 5  # position 0 is never predicted
    for reduction in ("sum", "mean"):
        loss = chunked_cross_entropy(hidden, weight, labels, reduction=reduction)
        assert loss.item() == 0.0
        gh, gw = grads(loss, hidden, weight)
        assert not gh.any() and not gw.any()


def test_second_backward_is_refused():
    hidden, weight, labels = make(torch.float32)
    loss = chunked_cross_entropy(hidden, weight, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="single backward"):
        loss.backward()


def test_bad_arguments():
    hidden, weight, labels = make(torch.float32)
    with pytest.raises(ValueError, match="reduction"):
        chunked_cross_entropy(hidden, weight, labels, reduction="none")
    with pytest.raises(ValueError, match="shapes"):
        chunked_cross_entropy(hidden, weight, labels[:, 1:])
    with pytest.raises(ValueError, match="dtypes"):
        chunked_cross_entropy(hidden, weight.double(), labels)


def test_matches_transformers_qwen2_loss_and_grads():
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4)
    model = transformers.Qwen2ForCausalLM(config)  # fp32: transformers' loss upcasts logits to fp32 anyway
    input_ids = torch.randint(0, 1000, (2, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0  # right padding
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :3] = -100  # prompt

    ref = model(input_ids, attention_mask=attention_mask, labels=labels).loss
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    hidden = model.model(input_ids, attention_mask=attention_mask).last_hidden_state
    ours = chunked_cross_entropy(hidden, model.lm_head.weight, labels, chunk_size=5) / count_trained_tokens(labels)
    torch.testing.assert_close(ours, ref)
    for (name, _), a, b in zip(model.named_parameters(), torch.autograd.grad(ours, list(model.parameters())),
                               ref_grads, strict=True):
        torch.testing.assert_close(a, b, msg=name)
