import random

import pytest
import torch
import torch.nn.functional as F
import transformers

from qwen_sft.data.collate import PackedCollator, PadCollator, pack_examples


def tiny_qwen2(attn_implementation):
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4,
                                      attn_implementation=attn_implementation)
    return transformers.Qwen2ForCausalLM(config).double().eval()  # eval: no dropout; fp64: tight comparisons


def examples():
    g = torch.Generator().manual_seed(1)
    out = []
    for n, prompt in [(5, 2), (9, 0), (7, 3)]:  # example 1 trains every token, incl. its first label
        ids = torch.randint(0, 1000, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def token_losses(model, batch):
    """Per-label losses (B, T): entry j is the loss of predicting labels[:, j] from position j - 1."""
    # use_cache=False as in training: with a KV cache transformers 5 ignores packed position_ids
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    labels = batch["labels"]
    tok = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")  # 0 where -100
    return F.pad(tok, (1, 0))


def loss_and_grads(model, per_example):
    grads = torch.autograd.grad(per_example.sum(), list(model.parameters()))
    return per_example.detach(), grads


# eager attention does its softmax in fp32 even for an fp64 model, hence its looser tolerance
@pytest.mark.parametrize("attn_implementation,tol", [("sdpa", 1e-10), ("eager", 1e-6)])
def test_unpadded_padded_and_packed_agree(attn_implementation, tol):
    model, exs = tiny_qwen2(attn_implementation), examples()
    lengths = [len(e["input_ids"]) for e in exs]

    # (a) one example at a time, no padding
    single = torch.stack([token_losses(model, PadCollator(0)([e])).sum() for e in exs])
    ref_loss, ref_grads = loss_and_grads(model, single)

    # (b) one right-padded batch
    padded = token_losses(model, PadCollator(pad_id=0, pad_to_multiple_of=8)([exs[1], exs[0], exs[2]]))
    pad_loss, pad_grads = loss_and_grads(model, padded.sum(1)[[1, 0, 2]])

    # (c) one packed row, as the trainer gets it: a DataLoader batch holding one bin
    batch = PackedCollator()([exs])
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, sum(lengths))
    packed = token_losses(model, batch)[0]
    pack_loss, pack_grads = loss_and_grads(model, torch.stack([t.sum() for t in packed.split(lengths)]))

    for loss, grads in [(pad_loss, pad_grads), (pack_loss, pack_grads)]:
        torch.testing.assert_close(loss, ref_loss, rtol=tol, atol=tol)
        for (name, _), a, b in zip(model.named_parameters(), grads, ref_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=10 * tol, atol=tol, msg=name)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_no_attention_across_example_boundaries(attn_implementation):
    model, exs = tiny_qwen2(attn_implementation), examples()
    batch = PackedCollator()(exs)
    first = slice(0, len(exs[0]["input_ids"]))
    rest = slice(first.stop, None)
    perturbed = batch["input_ids"].clone()
    perturbed[0, first] = (perturbed[0, first] + 1) % 1000

    def hidden(input_ids, **overrides):
        kwargs = {k: v for k, v in batch.items() if k != "labels"} | {"input_ids": input_ids} | overrides
        with torch.no_grad():
            return model.model(**kwargs, use_cache=False).last_hidden_state[0]

    a, b = hidden(batch["input_ids"]), hidden(perturbed)
    torch.testing.assert_close(a[rest], b[rest], rtol=0, atol=1e-12)  # later examples never see example 0
    assert not torch.allclose(a[first], b[first])
    # control: with one running position range the same perturbation does leak (so the check has teeth)
    plain = torch.arange(perturbed.shape[1])[None]
    assert not torch.allclose(hidden(batch["input_ids"], position_ids=plain)[rest],
                              hidden(perturbed, position_ids=plain)[rest])


def test_packed_collator_layout():
    exs = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]}]
    batch = PackedCollator()([[exs[0]], [exs[1]]])  # a batch of two bins becomes one row too
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, 5]]
    assert PackedCollator()(exs)["input_ids"].tolist() == [[1, 2, 3, 4, 5]]  # flat list of examples
    with pytest.raises(ValueError, match="no tokens"):
        PackedCollator()([])


def test_pad_collator():
    exs = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    batch = PadCollator(pad_id=9, pad_to_multiple_of=4)(exs)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 9], [4, 9, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100], [4, -100, -100, -100]]
    with pytest.raises(ValueError, match="example 0: 2 input_ids but 1 labels"):
        PadCollator(0)([{"input_ids": [1, 2], "labels": [1]}])


def test_pack_examples_keeps_every_example_once_within_budget():
    rng = random.Random(0)
    exs = [{"input_ids": [0] * n, "labels": [0] * n} for n in (rng.randint(1, 64) for _ in range(500))]
    bins = pack_examples(exs, max_length=64)
    assert sorted(id(e) for b in bins for e in b) == sorted(id(e) for e in exs)
    assert all(sum(len(e["input_ids"]) for e in b) <= 64 for b in bins)
    total = sum(len(e["input_ids"]) for e in exs)
    assert len(bins) <= 1.1 * total / 64 + 1  # near-optimal fill
    assert [[id(e) for e in b] for b in pack_examples(exs, 64)] == [[id(e) for e in b] for b in bins]


def test_pack_examples_small_case_and_errors():
    exs = [{"input_ids": [0] * n, "labels": [0] * n} for n in (3, 6, 2, 5, 4)]
    bins = pack_examples(exs, max_length=10)
    assert [[len(e["input_ids"]) for e in b] for b in bins] == [[6, 4], [5, 3, 2]]
    assert pack_examples([], 10) == []
    with pytest.raises(ValueError, match="example 1 has 6 tokens, more than max_length=5"):
        pack_examples(exs, max_length=5)
