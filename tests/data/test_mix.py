"""Data mixing (`sources.py`): lists of sources, weights and sample counts, per-source reports, config errors."""

import json
import logging
import random

import pytest

from qwen_sft.config.parse import load_config, parse_args
from qwen_sft.config.schema import TRAIN, to_dict
from qwen_sft.data.mix import DataSource, load_mixed, mix_counts, pick
from qwen_sft.utils.errors import UserError


def write(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def alpaca(tmp_path, n, name="a.jsonl"):
    return write(tmp_path / name, [{"instruction": f"{name} q{i}", "output": f"{name} a{i}"} for i in range(n)])


def sharegpt(tmp_path, n, name="b.jsonl"):
    return write(tmp_path / name, [{"conversations": [{"from": "human", "value": f"{name} q{i}"},
                                                      {"from": "gpt", "value": f"{name} a{i}"}]} for i in range(n)])


def questions(samples):
    return [s.messages[-2]["content"] for s in samples]


def test_mix_counts_follow_the_documented_rules():
    plain, s = DataSource("a"), DataSource
    assert mix_counts([10, 20], [plain, s("b")]) == [10, 20]  # plain entries: everything, once
    assert mix_counts([10, 20], [plain, s("b", samples=5)]) == [10, 5]
    assert mix_counts([10, 20], [plain, s("b", samples=50)]) == [10, 50]  # more than it has: repeated
    # beside unweighted entries a weight is a share of the whole: 0.3 of (7 + x) = x -> x = 3
    assert mix_counts([7, 100], [plain, s("b", weight=0.3)]) == [7, 3]
    assert mix_counts([7, 2], [plain, s("b", weight=0.3)]) == [7, 3]  # even when that repeats examples
    # only weights: normalised; the largest mix that repeats nothing (b, 20 examples at 2/3, bounds it at 30)
    assert mix_counts([100, 20], [s("a", weight=1), s("b", weight=2)]) == [10, 20]
    assert mix_counts([100, 20], [s("a", weight=0.5), s("b", weight=0.5)]) == [20, 20]


def test_pick_is_seeded_ordered_and_repeats_only_past_the_size():
    assert pick(5, 5, random.Random(0)) == [0, 1, 2, 3, 4]
    sub = pick(100, 10, random.Random(1))
    assert sub == sorted(sub) and len(set(sub)) == 10 and sub == pick(100, 10, random.Random(1))
    assert sub != pick(100, 10, random.Random(2))
    over = pick(4, 10, random.Random(0))
    assert over[:8] == [0, 1, 2, 3] * 2 and len(set(over[8:])) == 2


def test_load_mixed_formats_per_source_report_and_determinism(tmp_path):
    a, b = alpaca(tmp_path, 10), sharegpt(tmp_path, 4)
    value = [DataSource(a, samples=3), DataSource(b, samples=6)]
    samples, origin, reports = load_mixed(value, seed=5)
    assert origin == [0] * 3 + [1] * 6
    assert [r.format for r in reports] == ["alpaca", "sharegpt"]
    assert [(r.records, r.used, r.repeated) for r in reports] == [(10, 3, 0), (4, 6, 2)]
    again, _, _ = load_mixed(value, seed=5)
    assert questions(again) == questions(samples)  # same seed, same mix
    other, _, _ = load_mixed(value, seed=6)
    assert questions(other) != questions(samples)
    # a source's picks do not depend on the other sources
    alone, _, _ = load_mixed([DataSource(a, samples=3)], seed=5)
    assert questions(alone) == questions(samples)[:3]


def test_single_source_is_unchanged(tmp_path):
    a = alpaca(tmp_path, 6)
    samples, origin, reports = load_mixed(a)
    assert questions(samples) == [f"a.jsonl q{i}" for i in range(6)] and reports[0].used == 6


def test_errors_name_the_source(tmp_path):
    a = alpaca(tmp_path, 3)
    bad = write(tmp_path / "bad.jsonl", [{"instruction": "q", "output": "a"}, {"conversations": "x"}])
    with pytest.raises(UserError, match=r"bad.jsonl:2: .*mixed formats"):
        load_mixed([DataSource(a), DataSource(bad)])
    with pytest.raises(UserError, match=r"missing.jsonl: no such file"):
        load_mixed([DataSource(a), DataSource(str(tmp_path / "missing.jsonl"), weight=0.2)])


def test_config_accepts_lists_and_names_each_problem(tmp_path):
    cfg = parse_args(["--data", "a.jsonl,b.jsonl"], TRAIN)  # comma = several sources on the command line
    assert [s.path for s in cfg.data.data] == ["a.jsonl", "b.jsonl"]
    assert parse_args(["--data", "a.jsonl"], TRAIN).data.data == "a.jsonl"  # one source stays a plain string
    cfg = load_config(None, {"data": ["a.jsonl", {"path": "b.jsonl", "weight": 0.3}, {"path": "c", "samples": 10}],
                             "eval_data": [{"path": "d.jsonl", "samples": 5}]})
    assert cfg.data.data[1] == DataSource("b.jsonl", weight=0.3)
    assert to_dict(cfg)["data"] == [{"path": "a.jsonl"}, {"path": "b.jsonl", "weight": 0.3}, {"path": "c", "samples": 10}]
    assert load_config(None, {"data": to_dict(cfg)["data"]}).data.data == cfg.data.data  # run_config.yaml re-reads
    with pytest.raises(UserError) as err:
        load_config(None, {"data": ["a.jsonl", {"path": "b", "weight": -1}, {"weight": 1, "samples": 2}, 3,
                                    {"path": "e", "sample": 3}]})
    message = str(err.value)
    for part in ("data[1].weight: must be > 0", "data[2].path: required", "data[2]: give weight or samples, not both",
                 "data[3]: expected a path", "data[4]: unknown key 'sample'"):
        assert part in message, message
    assert "data: required" not in message
    with pytest.raises(UserError, match=r"data: the weights add up to 1\.2"):
        load_config(None, {"data": ["a.jsonl", {"path": "b", "weight": 0.6}, {"path": "c", "weight": 0.6}]})


def test_train_reports_each_source(tmp_path, caplog):
    from qwen_sft.train.recipe import train

    from helpers import config, small_data

    caplog.set_level(logging.INFO, logger="qwen_sft.data.mix")
    a = small_data(tmp_path, 6, "a.jsonl")
    b = sharegpt(tmp_path, 3)
    out = train(config(tmp_path, data=[a, {"path": b, "samples": 4}], max_steps=1, per_device_train_batch_size=2))
    report = json.loads((out / "data_report.json").read_text())
    assert [(r["source"], r["format"], r["records"], r["used"], r["repeated"], r["examples"])
            for r in report["train"]] == [(a, "alpaca", 6, 6, 0, 6), (b, "sharegpt", 3, 4, 1, 4)]
    assert "data mix of 10 examples" in caplog.text
