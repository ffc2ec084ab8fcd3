"""The generation engine: same tokens as transformers' `generate` (tiny fp32, Qwen2 / Qwen3 / GQA), slot cache
joins and leaves without touching other rows, batched prefill, the sampler against reference implementations,
logprobs, n, seeds, the incremental detokeniser, checkpoint defaults."""

import math
import random

import pytest
import torch
from transformers import GenerationConfig

from qwen_sft.generation import Batch, Request, SamplingParams, from_generation_config, generate
from qwen_sft.generation.detokenize import IncrementalDetokenizer
from qwen_sft.generation.sampler import Sampler, apply_penalties, top_k_top_p
from qwen_sft.model.load import load_model, load_tokenizer
from qwen_sft.template.encode import encode_prompt, stop_token_ids
from qwen_sft.template.registry import get_template
from qwen_sft.utils.errors import UserError

QUESTIONS = ["你好", "类型#裙*版型#显瘦*颜色#黑色*裙型#直筒裙", "How do I wash a wool sweater without shrinking it?", "x"]


@pytest.fixture(scope="module")
def fp32(tiny_path):
    return load_model(tiny_path, dtype="fp32"), load_tokenizer(tiny_path)


def prompts(tokenizer, texts=QUESTIONS):
    return [encode_prompt([{"role": "user", "content": t}], tokenizer, get_template("qwen")) for t in texts]


def hf_greedy(model, prompt_ids, max_new_tokens, stops):
    """The reference: transformers' own generate, one prompt at a time, greedy, padded vocab rows masked."""
    from transformers import LogitsProcessorList, SuppressTokensLogitsProcessor

    limit = 151646
    vocab = model.config.vocab_size
    suppress = SuppressTokensLogitsProcessor(list(range(limit, vocab)), device="cpu")
    out = model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=max_new_tokens,
                         eos_token_id=stops, pad_token_id=stops[-1], logits_processor=LogitsProcessorList([suppress]),
                         top_k=None, top_p=None, temperature=None)
    ids = out[0, len(prompt_ids):].tolist()
    end = next((i for i, t in enumerate(ids) if t in stops), None)
    return ids if end is None else ids[:end]


def test_greedy_equals_transformers_generate(fp32):
    model, tokenizer = fp32
    ps = prompts(tokenizer)
    stops = stop_token_ids(tokenizer)
    ours = generate(model, tokenizer, ps, SamplingParams(max_new_tokens=12), stops)
    assert [c.token_ids for c in ours] == [hf_greedy(model, p, 12, stops) for p in ps]
    assert all(c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in ours)


def tiny_variant(kind: str, tokenizer):
    """A random tiny model of another architecture: Qwen3 (q/k norms, head_dim) or Qwen2 with GQA."""
    torch.manual_seed(0)
    common = dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
    if kind == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3ForCausalLM(Qwen3Config(head_dim=32, **common)).eval()
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(**common)).eval()


@pytest.mark.parametrize("kind", ["qwen3", "qwen2-gqa"])
def test_other_architectures_match_transformers(kind, tokenizer):
    model = tiny_variant(kind, tokenizer)
    ps = prompts(tokenizer)
    stops = stop_token_ids(tokenizer)
    ours = generate(model, tokenizer, ps, SamplingParams(max_new_tokens=8), stops)
    assert [c.token_ids for c in ours] == [hf_greedy(model, p, 8, stops) for p in ps]


def test_join_and_leave_do_not_touch_other_rows(fp32):
    model, tokenizer = fp32
    ps = prompts(tokenizer)
    batch = Batch(model, tokenizer, stop_token_ids(tokenizer), max_rows=4)
    batch.cache.reserve(4, 256)  # storage that needs no growth: joining and leaving must not reallocate
    pointers = [t.data_ptr() for t in batch.cache.keys + batch.cache.values]
    first = Request(ps[0], SamplingParams(max_new_tokens=50), lambda e: None)
    batch.submit(first)
    for _ in range(3):
        batch.step()
    row = batch.rows[0]
    written = len(row.token_ids) - 1  # positions stored so far

    def snapshot():
        return [t[0, :, :written].clone() for t in batch.cache.keys + batch.cache.values]

    before = snapshot()
    others = [Request(p, SamplingParams(max_new_tokens=50), lambda e: None) for p in ps[1:]]
    for request in others:
        batch.submit(request)
    batch.step()  # three rows join (prefilled together)
    assert batch.live == 4 and batch.prefills == 2
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot()))
    others[0].cancelled = True
    batch.step()  # one leaves
    assert batch.live == 3 and batch.rows[1] is None
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot()))
    assert [t.data_ptr() for t in batch.cache.keys + batch.cache.values] == pointers
    for request in [first] + others:
        request.cancelled = True
    batch.step()
    assert not batch.busy and batch.cache.keys == []  # idle: storage released


def test_new_requests_are_prefilled_together_and_holes_are_packed(fp32):
    model, tokenizer = fp32
    ps = prompts(tokenizer)
    stops = stop_token_ids(tokenizer)
    batch = Batch(model, tokenizer, stops, max_rows=8)
    events = {i: [] for i in range(8)}
    requests = [Request(ps[i % 4], SamplingParams(max_new_tokens=3 if i < 6 else 9), events[i].append)
                for i in range(8)]
    for request in requests:
        batch.submit(request)
    batch.step()
    assert batch.prefills == 1 and batch.live == 8
    while batch.busy:
        batch.step()
    alone = generate(model, tokenizer, [ps[2], ps[3]], SamplingParams(max_new_tokens=9), stops)
    for i, expected in zip((6, 7), alone):  # the last rows were moved into the first holes on the way
        assert [t for e in events[i] for t in getattr(e, "token_ids", ())] == expected.token_ids


def test_sampling_seeded_per_row_n_and_batch_independent(fp32):
    model, tokenizer = fp32
    ps = prompts(tokenizer)
    stops = stop_token_ids(tokenizer)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, top_p=0.9, top_k=50, seed=11, n=3)
    alone = generate(model, tokenizer, ps[:1], params, stops)
    assert len(alone) == 3 and len({tuple(c.token_ids) for c in alone}) == 3  # n choices differ
    again = generate(model, tokenizer, ps[:1], params, stops)
    assert [c.token_ids for c in again] == [c.token_ids for c in alone]
    crowded = generate(model, tokenizer, ps, params, stops)[:3]  # other prompts in the batch: same answers
    assert [c.token_ids for c in crowded] == [c.token_ids for c in alone]
    other_seed = generate(model, tokenizer, ps[:1], params.replace(seed=12), stops)
    assert [c.token_ids for c in other_seed] != [c.token_ids for c in alone]


def test_logprobs_are_the_models_log_softmax(fp32):
    model, tokenizer = fp32
    p = prompts(tokenizer)[0]
    done, = generate(model, tokenizer, [p], SamplingParams(max_new_tokens=3, logprobs=True, top_logprobs=3),
                     stop_token_ids(tokenizer))
    with torch.no_grad():
        logits = model(torch.tensor([p + done.token_ids])).logits[0, len(p) - 1:-1, :151646]
    reference = logits.log_softmax(-1)
    for step, lp in enumerate(done.logprobs):
        assert lp.token_id == done.token_ids[step]
        assert math.isclose(lp.logprob, float(reference[step, lp.token_id]), abs_tol=1e-4)
        best = reference[step].topk(3)
        assert [t for t, _ in lp.top] == best.indices.tolist()
        assert lp.top[0][0] == lp.token_id  # greedy: the chosen token is the most likely one


class FakeRow:
    def __init__(self, params, token_ids, prompt_len):
        self.params, self.token_ids, self.prompt_len, self.rng = params, token_ids, prompt_len, random.Random(0)


def test_penalties_match_reference_implementations():
    from transformers import RepetitionPenaltyLogitsProcessor

    torch.manual_seed(0)
    vocab = 50
    logits = torch.randn(3, vocab) * 3
    histories = [[1, 2, 2, 7, 9, 9, 9], [3, 4, 5], [0, 0, 1, 49]]
    rep = [FakeRow(SamplingParams(repetition_penalty=1.3), h, 2) for h in histories]
    expected = torch.cat([RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([h]), logits[i:i + 1].clone())
                          for i, h in enumerate(histories)])
    assert torch.allclose(apply_penalties(logits.clone(), rep), expected)

    rows = [FakeRow(SamplingParams(presence_penalty=0.5, frequency_penalty=0.25 * i), h, 2)
            for i, h in enumerate(histories)]
    expected = logits.clone()
    for i, row in enumerate(rows):  # OpenAI: mu[j] - c[j] * frequency - (c[j] > 0) * presence, answer tokens only
        for token in set(row.token_ids[2:]):
            count = row.token_ids[2:].count(token)
            expected[i, token] -= count * row.params.frequency_penalty + row.params.presence_penalty
    assert torch.allclose(apply_penalties(logits.clone(), rows), expected)


@pytest.mark.parametrize("top_k,top_p,min_p", [(5, 1.0, 0.0), (0, 0.7, 0.0), (10, 0.5, 0.0), (0, 1.0, 0.2),
                                               (0, 0.999, 0.0)])
def test_filters_match_transformers_warpers(top_k, top_p, min_p):
    from transformers import LogitsProcessorList, MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(1)
    logits = torch.randn(4, 3000) * 2
    warpers = LogitsProcessorList(([TopKLogitsWarper(top_k)] if top_k else []) +
                                  ([TopPLogitsWarper(top_p)] if top_p < 1 else []) +
                                  ([MinPLogitsWarper(min_p)] if min_p else []))
    expected = torch.isfinite(warpers(None, logits.clone()))
    params = [SamplingParams(temperature=1.0, top_k=top_k, top_p=top_p, min_p=min_p)] * 4
    if top_k or top_p < 1:
        values, ids = top_k_top_p(logits.clone(), params)
    else:
        values, ids = logits.clone(), torch.arange(3000).expand(4, 3000)
    if min_p:
        values = values.masked_fill(values < values.max(-1, keepdim=True).values + math.log(min_p), -math.inf)
    kept = torch.zeros_like(expected).scatter_(1, ids, torch.isfinite(values))
    assert torch.equal(kept, expected)


def test_sampler_draws_follow_the_distribution():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    row = FakeRow(SamplingParams(temperature=1.0), [], 0)
    counts = [0] * 4
    sampler = Sampler(vocab_limit=4)
    for _ in range(4000):
        counts[sampler.sample(probs.log(), [row])[0][0]] += 1
    assert counts[3] == 0 and abs(counts[0] / 4000 - 0.5) < 0.03 and abs(counts[1] / 4000 - 0.3) < 0.03


def test_incremental_detokenizer_equals_full_decode_and_cuts_stop_strings(tokenizer):
    text = "你好，世界! Hello there 🤖 — naïve café. 类型#裙*版型#显瘦\n\n"
    ids = tokenizer.encode(text * 3)
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.push(t) for t in ids] + [detok.finish()]
    assert "".join(pieces) == tokenizer.decode(ids)
    assert all("\ufffd" not in p for p in pieces)  # half characters are held back, not emitted
    stop = IncrementalDetokenizer(tokenizer, stop=("café.", "never"))
    out = "".join(stop.push(t) for t in ids if not stop.stopped) + stop.finish()
    assert out == text[: text.index("café.")] and stop.stopped
    # a stop string straddling tokens is never partly emitted
    streamed = IncrementalDetokenizer(tokenizer, stop=("there 🤖",))
    emitted = [streamed.push(t) for t in ids]
    assert "".join(emitted) == text[: text.index("there 🤖")] and not any("there" in e for e in emitted)


def test_checkpoint_defaults_and_checks():
    qwen_chat = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05,
                                 max_new_tokens=300)
    params = from_generation_config(qwen_chat, SamplingParams(temperature=1.0))
    assert (params.temperature, params.top_p, params.top_k, params.repetition_penalty, params.max_new_tokens) == (
        0.7, 0.8, 20, 1.05, 300)
    assert from_generation_config(GenerationConfig(do_sample=False), SamplingParams(temperature=1.0)).temperature == 1.0
    with pytest.raises(UserError) as err:
        SamplingParams(temperature=-1, top_p=0, n=0, presence_penalty=3).check()
    for name in ("temperature", "top_p", "n", "presence_penalty"):
        assert name in str(err.value)


def test_bf16_on_cpu_decodes_attention_in_fp32_and_restores_the_model(tiny_path):
    model, tokenizer = load_model(tiny_path, dtype="bf16"), load_tokenizer(tiny_path)
    ps = prompts(tokenizer)
    batch = Batch(model, tokenizer, stop_token_ids(tokenizer), max_rows=4)
    assert batch.cache.dtype == torch.float32 and batch.runner.attention is not None
    with torch.inference_mode():
        hidden = batch.runner.prefill(batch.cache, ps[:2], [0, 1])
        ours = batch.runner.logits(hidden).float()
        reference = torch.stack([model(torch.tensor([p])).logits[0, -1, :151646].float() for p in ps[:2]])
    assert model.config._attn_implementation == "sdpa"  # switched for the engine's forwards only
    assert (ours - reference).abs().max() < 0.05  # bf16 rounding, not a different computation
    done = generate(model, tokenizer, ps, SamplingParams(max_new_tokens=4), stop_token_ids(tokenizer))
    assert all(len(c.token_ids) == 4 and max(c.token_ids) < 151646 for c in done)


def test_peft_adapter_matches_transformers_generate(tmp_path, tiny_path):
    from peft import PeftModel

    from helpers import make_adapter

    adapter = make_adapter(tmp_path / "adapter", tiny_path, targets=("q_proj", "v_proj", "down_proj"))
    model, tokenizer = load_model(tiny_path, adapter=str(adapter), dtype="fp32"), load_tokenizer(tiny_path)
    assert isinstance(model, PeftModel)
    ps, stops = prompts(tokenizer)[:2], stop_token_ids(tokenizer)
    ours = generate(model, tokenizer, ps, SamplingParams(max_new_tokens=6), stops)
    assert [c.token_ids for c in ours] == [hf_greedy(model, p, 6, stops) for p in ps]
