"""The tokenised-data cache: a rerun reads the encoding back instead of tokenising; any change is a new key."""

import json

import pytest

from qwen_sft.data import cache as data_cache
from qwen_sft.data import dataset
from qwen_sft.data.dataset import load_examples
from qwen_sft.template.registry import get_template
from qwen_sft.utils.errors import UserError

QWEN = get_template("qwen1.5")


def write(path, answers):
    path.write_text("".join(json.dumps({"instruction": f"问{i}", "output": a}, ensure_ascii=False) + "\n"
                            for i, a in enumerate(answers)), encoding="utf-8")
    return str(path)


@pytest.fixture
def encodes(monkeypatch):
    """Counts the calls that really tokenise."""
    calls = []
    original = dataset.encode_samples
    monkeypatch.setattr(dataset, "encode_samples", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_a_rerun_reads_the_cache_and_gets_the_same_examples(tmp_path, tokenizer, encodes, monkeypatch):
    monkeypatch.setenv("QWEN_SFT_CACHE", str(tmp_path / "cache"))
    data = write(tmp_path / "d.jsonl", ["短。", "很长的回答。" * 20, "好。"])
    first = load_examples(data, tokenizer, QWEN, loss="assistant", max_length=32, cache=True)
    second = load_examples(data, tokenizer, QWEN, loss="assistant", max_length=32, cache=True)
    assert len(encodes) == 1
    assert [(e.input_ids, e.labels, e.truncated) for e in second.examples] == \
        [(e.input_ids, e.labels, e.truncated) for e in first.examples]
    assert [s.where for s in second.samples] == [s.where for s in first.samples]
    assert second.truncated == first.truncated == [f"{data}:2"]
    assert len(list((tmp_path / "cache" / "tokenized").glob("*.npz"))) == 1


@pytest.mark.parametrize("change", ["file", "max_length", "loss", "template", "tokenizer"])
def test_any_input_that_changes_the_encoding_is_a_new_key(tmp_path, tokenizer, family_tokenizer, change):
    data = write(tmp_path / "d.jsonl", ["短。", "好。"])
    args = dict(fmt="auto", loss="all", max_length=64)
    before = data_cache.cache_key(data, tokenizer, QWEN, **args)
    other_tokenizer, template = tokenizer, QWEN
    if change == "file":
        write(tmp_path / "d.jsonl", ["短。", "好！"])
    elif change == "template":
        template = get_template("qwen2")
    elif change == "tokenizer":
        other_tokenizer = family_tokenizer("qwen2.5")
    else:
        args[change] = {"max_length": 65, "loss": "assistant"}[change]
    assert data_cache.cache_key(data, other_tokenizer, template, **args) != before
    assert data_cache.cache_key(str(tmp_path / "hub/name"), tokenizer, QWEN, **args) is None  # not a local file


def test_untrainable_examples_cached_under_skip_bad_still_stop_a_run_without_it(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("QWEN_SFT_CACHE", str(tmp_path / "cache"))
    data = write(tmp_path / "d.jsonl", ["短。", "好。"])
    (tmp_path / "d.jsonl").write_text((tmp_path / "d.jsonl").read_text() + json.dumps(
        {"instruction": "问" * 80, "output": "答"}, ensure_ascii=False) + "\n")
    kept = load_examples(data, tokenizer, QWEN, loss="assistant", max_length=30, skip_bad=True, cache=True)
    assert len(kept.examples) == 2 and len(kept.skipped) == 1
    with pytest.raises(UserError, match="d.jsonl:3: nothing left to train"):
        load_examples(data, tokenizer, QWEN, loss="assistant", max_length=30, cache=True)


def test_an_unreadable_entry_is_tokenised_again(tmp_path, tokenizer, encodes, monkeypatch):
    monkeypatch.setenv("QWEN_SFT_CACHE", str(tmp_path / "cache"))
    data = write(tmp_path / "d.jsonl", ["短。", "好。"])
    load_examples(data, tokenizer, QWEN, cache=True)
    for entry in (tmp_path / "cache" / "tokenized").glob("*.npz"):
        entry.write_bytes(b"truncated by a crash")
    again = load_examples(data, tokenizer, QWEN, cache=True)
    assert len(encodes) == 2 and len(again.examples) == 2


def test_old_entries_are_pruned(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("QWEN_SFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data_cache, "MAX_ENTRIES", 2)
    data = write(tmp_path / "d.jsonl", ["短。", "好。"])
    for max_length in (60, 61, 62):
        load_examples(data, tokenizer, QWEN, max_length=max_length, cache=True)
    assert len(list((tmp_path / "cache" / "tokenized").glob("*.npz"))) == 2


def test_a_mix_is_cached_and_its_seed_matters_only_when_it_draws(tmp_path, tokenizer, encodes, monkeypatch):
    from qwen_sft.data.mix import DataSource

    monkeypatch.setenv("QWEN_SFT_CACHE", str(tmp_path / "cache"))
    a, b = write(tmp_path / "a.jsonl", ["一。", "二。", "三。"]), write(tmp_path / "b.jsonl", ["四。", "五。"])
    mix = [DataSource(path=a), DataSource(path=b, samples=5)]  # b repeated: 2 + 2 + 1 drawn with the seed
    first = load_examples(mix, tokenizer, QWEN, seed=1, cache=True)
    second = load_examples(mix, tokenizer, QWEN, seed=1, cache=True)
    assert len(encodes) == 1 and len(second.examples) == 8
    assert [s.where for s in second.samples] == [s.where for s in first.samples]
    assert [e.input_ids for e in second.examples] == [e.input_ids for e in first.examples]
    args = dict(fmt="auto", loss="all", max_length=None)
    assert data_cache.cache_key(mix, tokenizer, QWEN, seed=1, **args) != data_cache.cache_key(mix, tokenizer, QWEN,
                                                                                               seed=2, **args)
    whole = [DataSource(path=a), DataSource(path=b)]  # every record once: the seed picks nothing
    assert data_cache.cache_key(whole, tokenizer, QWEN, seed=1, **args) == data_cache.cache_key(whole, tokenizer, QWEN,
                                                                                                 seed=2, **args)
