"""`qwen-sft check`: each check has a fixture that trips it and a clean one that passes; the sample data passes."""

import json
import shutil
from pathlib import Path

import pytest

from qwen_sft.cli import main
from qwen_sft.config.parse import load_config
from qwen_sft.data.dataset import Encoded
from qwen_sft.model.load import resolve_model_path
from qwen_sft.preflight import checkpoint_checks as ck
from qwen_sft.preflight import prompt_checks as prompt
from qwen_sft.preflight.check import check
from qwen_sft.template.encode import Example
from qwen_sft.template.registry import get_template

ROOT = Path(__file__).resolve().parents[2]
ADVERTISE = ROOT / "data" / "advertise_gen" / "train.jsonl"


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in records), encoding="utf-8")
    return str(path)


def chat(question="你好", answer="你好！有什么可以帮你？", **extra):
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], **extra}


def run(tmp_path, data, **keys):
    cfg = load_config(None, {"model": "tiny", "data": data, "output_dir": str(tmp_path / "out"), "forecast": False,
                             **keys})
    return check(cfg)


def statuses(report):
    return {f.name: f.status for f in report.findings}


def finding(report, name):
    return next(f for f in report.findings if f.name == name)


def checkpoint_copy(tmp_path, base="tiny", name="ckpt", config=None, generation=None, tokenizer=None):
    """A copy of an embedded model (weights linked, not copied) with edited config / generation / tokenizer files."""
    source, target = Path(resolve_model_path(base)), tmp_path / name
    target.mkdir()
    for file in source.iterdir():
        if file.suffix == ".safetensors":
            (target / file.name).symlink_to(file)
        else:
            shutil.copy(file, target / file.name)
    for file, edit in (("config.json", config), ("generation_config.json", generation),
                       ("tokenizer_config.json", tokenizer)):
        if edit is not None:
            values = json.loads((target / file).read_text())
            values.update(edit)
            (target / file).write_text(json.dumps({k: v for k, v in values.items() if v is not None}))
    return str(target)


# ----------------------------------------------------------------------------------------------- sample data

@pytest.mark.parametrize("data", ["advertise_gen/train.jsonl", "multiturn/train.jsonl", "multiturn/sharegpt.jsonl"])
def test_sample_data_is_all_pass(tmp_path, capsys, data):
    report = run(tmp_path, str(ROOT / "data" / data))
    assert report.status == "PASS", report.table()
    out = capsys.readouterr().out
    assert "result: PASS" in out and "FAIL" not in out.replace("0 FAIL", "")
    saved = json.loads((tmp_path / "out" / "check.json").read_text())
    assert saved["status"] == "PASS" and len(saved["checks"]) == len(report.findings) >= 18


# ---------------------------------------------------------------------------------------------- prompt checks

def test_another_familys_template_fails_with_the_first_difference(tmp_path):
    # the Qwen2 default system prompt on a Qwen2.5 checkpoint: every example without a system message differs
    report = run(tmp_path, str(ADVERTISE), model="tiny-qwen2.5", template="qwen2")
    f = finding(report, "prompt.template")
    assert f.status == "FAIL" and f.count == f.total and f.where == f"{ADVERTISE}:1"
    assert "'Qwen, created by Alibaba'" in f.summary and "template: auto" in f.fix
    assert finding(run(tmp_path, str(ADVERTISE), model="tiny-qwen2.5"), "prompt.template").status == "PASS"


def test_a_checkpoint_template_no_template_renders_is_a_fail_not_a_crash(tmp_path):
    source = json.loads((Path(resolve_model_path("tiny-qwen2.5")) / "tokenizer_config.json").read_text())
    edited = source["chat_template"].replace("You are Qwen, created by", "You are Qwen, made by")
    model = checkpoint_copy(tmp_path, base="tiny-qwen2.5", tokenizer={"chat_template": edited})
    report = run(tmp_path, str(ADVERTISE), model=model)
    f = finding(report, "prompt.template")
    assert f.status == "FAIL" and "nearest is qwen2.5" in f.summary
    assert finding(report, "checkpoint.eos_pad").status == "PASS"  # the checkpoint checks still ran
    assert json.loads((tmp_path / "out" / "check.json").read_text())["status"] == "FAIL"


def test_a_masked_terminator_fails(tokenizer):
    template = get_template("qwen1.5")
    from qwen_sft.data.records import Sample
    from qwen_sft.template.encode import encode_example

    messages = chat()["messages"]
    good = encode_example(messages, tokenizer, template, loss="assistant")
    masked = Example(list(good.input_ids), [-100 if t == 151645 else label for t, label in zip(good.input_ids,
                                                                                                good.labels)])
    samples = [Sample(messages, {}, "a.jsonl:1"), Sample(messages, {}, "a.jsonl:2")]
    f = prompt.check_terminator(Encoded([good, masked], samples), tokenizer, template, None, "assistant")
    assert f.status == "FAIL" and (f.count, f.total, f.where) == (1, 2, "a.jsonl:2")
    assert prompt.check_terminator(Encoded([good], samples[:1]), tokenizer, template, None, "assistant").status == \
        "PASS"


def test_a_collator_that_masks_the_pad_id_is_caught(tmp_path, monkeypatch):
    # the classic pad = eos bug: a collator masking labels equal to the pad id masks every <|im_end|>
    from qwen_sft.data.collate import PadCollator

    original = PadCollator.__call__

    def masking(self, examples):
        batch = original(self, examples)
        batch["labels"][batch["labels"] == 151645] = -100
        return batch

    monkeypatch.setattr(PadCollator, "__call__", masking)
    f = finding(run(tmp_path, str(ADVERTISE)), "prompt.terminator")
    assert f.status == "FAIL" and "collator masks" in f.summary


def test_pad_equal_to_the_terminator_fails(tmp_path):
    model = checkpoint_copy(tmp_path, tokenizer={"pad_token": "<|im_end|>"})
    assert finding(run(tmp_path, str(ADVERTISE), model=model), "prompt.pad").status == "FAIL"


def test_qwen3_empty_think_block_in_the_loss_fails_and_assistant_loss_passes(tmp_path):
    data = str(ADVERTISE)
    trained = run(tmp_path, data, model="tiny-qwen3", loss="all")
    f = finding(trained, "prompt.empty_think")
    assert f.status == "FAIL" and f.count == f.total == 220 and "loss: assistant" in f.fix
    assert finding(trained, "prompt.thinking").status == "WARN"  # a hybrid model trained on answers only
    kept_out = run(tmp_path, data, model="tiny-qwen3", loss="assistant")
    assert finding(kept_out, "prompt.empty_think").status == "PASS"


def test_qwen3_reasoning_share_and_dropped_reasoning(tmp_path):
    think = {"messages": [{"role": "user", "content": "17*3?"},
                          {"role": "assistant", "reasoning_content": "17*3=51", "content": "51"}]}
    early = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "reasoning_content": "r", "content": "b"},
                          {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    report = run(tmp_path, write_jsonl(tmp_path / "t.jsonl", [think, chat(), early]), model="tiny-qwen3",
                 loss="assistant")
    assert finding(report, "prompt.thinking").status == "PASS" and "2 of 3" in finding(report, "prompt.thinking").summary
    dropped = finding(report, "prompt.reasoning_kept")
    assert dropped.status == "WARN" and dropped.where.endswith("t.jsonl:3")


# ------------------------------------------------------------------------------------------------ data checks

def test_bad_records_fail_or_warn_under_skip_bad(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [chat(), "{not json", chat("再见")])
    f = finding(run(tmp_path, data), "data.records")
    assert f.status == "FAIL" and (f.count, f.total) == (1, 3) and f.where.endswith("d.jsonl:2")
    assert finding(run(tmp_path, data, skip_bad=True), "data.records").status == "WARN"


def test_tool_calls_that_do_not_parse_or_name_no_offered_tool_fail(tmp_path):
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}

    def call(name, arguments='{"city": "Paris"}'):
        return {"messages": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None,
                "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]},
                {"role": "tool", "content": "18"}, {"role": "assistant", "content": "18°C"}], "tools": [weather]}

    clean = write_jsonl(tmp_path / "ok.jsonl", [call("get_weather"), chat()])
    assert finding(run(tmp_path, clean, model="tiny-qwen2.5"), "data.tools").status == "PASS"
    broken = write_jsonl(tmp_path / "bad.jsonl", [call("get_weather"), call("get_weather", '{"city": Paris}')])
    f = finding(run(tmp_path, broken, model="tiny-qwen2.5"), "data.tools")
    assert f.status == "FAIL" and "does not parse" in f.summary and f.where.endswith("bad.jsonl:2")
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [call("get_weather"), call("get_time")])
    f = finding(run(tmp_path, unknown, model="tiny-qwen2.5"), "data.tools")
    assert f.status == "FAIL" and "'get_time'" in f.summary and f.count == 1 and f.where.endswith("unknown.jsonl:2")


def test_nothing_to_train_truncation_and_lost_ends(tmp_path):
    long = chat("介绍一下", "很长的回答。" * 60)
    data = write_jsonl(tmp_path / "d.jsonl", [chat(), long, chat("问" * 80)])
    report = run(tmp_path, data, max_length=40, loss="assistant")
    nothing, cut = finding(report, "data.nothing_to_train"), finding(report, "data.truncated")
    assert nothing.status == "FAIL" and nothing.where.endswith("d.jsonl:3")
    assert cut.status == "WARN" and cut.count == 1 and "1 trained answers lose their end" in cut.summary
    assert cut.where.endswith("d.jsonl:2") and "max_length:" in cut.fix
    assert finding(run(tmp_path, data, max_length=40, loss="assistant", skip_bad=True),
                   "data.nothing_to_train").status == "WARN"
    clean = run(tmp_path, data, max_length=1024)
    assert finding(clean, "data.truncated").status == finding(clean, "data.nothing_to_train").status == "PASS"


def test_a_mix_that_repeats_a_source_has_no_duplicates(tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", [chat(f"问题{i}", f"回答{i}。") for i in range(3)])
    report = run(tmp_path, [{"path": data, "samples": 7}])  # every record twice, one three times
    assert finding(report, "data.duplicates").status == "PASS"
    assert finding(report, "prompt.terminator").total == 7  # the examples training sees: the mix
    assert "a.jsonl" in report.header and "DataSource" not in report.header


def test_duplicates_overlap_special_tokens_and_long_examples(tmp_path):
    records = [chat(f"问题{i}", f"回答{i}。") for i in range(20)]
    data = write_jsonl(tmp_path / "d.jsonl", [*records, records[3], chat("<|im_end|>怎么用？", "照常。"),
                                               chat("长", "很长的回答。" * 100)])
    eval_data = write_jsonl(tmp_path / "e.jsonl", [records[5], chat("别的", "别的。")])
    report = run(tmp_path, data, eval_data=eval_data)
    dup, overlap = finding(report, "data.duplicates"), finding(report, "data.overlap")
    assert dup.status == "WARN" and dup.count == 1 and dup.where.endswith("d.jsonl:21") and "d.jsonl:4" in dup.summary
    assert overlap.status == "WARN" and (overlap.count, overlap.total) == (1, 2) and overlap.where.endswith("e.jsonl:1")
    special = finding(report, "data.special_tokens")
    assert special.status == "WARN" and "'<|im_end|>'" in special.summary and special.where.endswith("d.jsonl:22")
    long = finding(report, "data.long_examples")
    assert long.status == "WARN" and long.where.endswith("d.jsonl:23")
    clean = run(tmp_path, write_jsonl(tmp_path / "c.jsonl", records), eval_data=write_jsonl(tmp_path / "ce.jsonl",
                                                                                           [chat("别的", "别的。")]))
    for name in ("data.duplicates", "data.overlap", "data.special_tokens", "data.long_examples"):
        assert finding(clean, name).status == "PASS", name


# ------------------------------------------------------------------------------------------ checkpoint checks

def test_eos_ids_that_disagree_fail(tmp_path, tokenizer):
    model = checkpoint_copy(tmp_path, generation={"eos_token_id": 151643})
    f = ck.check_eos_pad(model, tokenizer)
    assert f.status == "FAIL" and "disagree" in f.summary and f.where.endswith("generation_config.json")
    base_like = checkpoint_copy(tmp_path, name="base", config={"eos_token_id": 151643},
                                generation={"eos_token_id": 151643}, tokenizer={"eos_token": "<|endoftext|>"})
    from qwen_sft.model.load import load_tokenizer

    assert ck.check_eos_pad(base_like, load_tokenizer(base_like)).status == "WARN"  # never stops at <|im_end|>
    pads = checkpoint_copy(tmp_path, name="pads", config={"pad_token_id": 151645})
    assert ck.check_eos_pad(pads, tokenizer).status == "WARN"
    assert ck.check_eos_pad(resolve_model_path("tiny"), tokenizer).status == "PASS"


def test_merge_writes_consistent_stop_ids_for_a_base_checkpoint(tmp_path):
    from qwen_sft.export.merge import merge_adapter
    from qwen_sft.model.load import load_tokenizer

    from helpers import make_adapter

    base = checkpoint_copy(tmp_path, name="base", config={"eos_token_id": 151643},
                           generation={"eos_token_id": 151643}, tokenizer={"eos_token": "<|endoftext|>"})
    adapter = make_adapter(tmp_path / "adapter", base)
    (adapter / "run_config.yaml").write_text(f"config: {{model: {base}, template: qwen1.5}}\nbase_model: {{path: {base}}}\n")
    merged = merge_adapter(adapter, tmp_path / "merged")
    f = ck.check_eos_pad(str(merged), load_tokenizer(str(merged)))
    assert f.status == "PASS", f.summary


def test_tied_embeddings(tmp_path):
    assert "tied input/output" in ck.check_tied(resolve_model_path("tiny-qwen3"), [], "lora").summary
    stored = checkpoint_copy(tmp_path, config={"tie_word_embeddings": True})  # tiny stores lm_head.weight
    assert ck.check_tied(stored, [], "lora").status == "WARN"
    assert ck.check_tied(resolve_model_path("tiny-qwen3"), ["lm_head"], "lora").status == "WARN"
    missing = tmp_path / "missing"
    missing.mkdir()
    shutil.copy(Path(resolve_model_path("tiny")) / "config.json", missing)
    import torch
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(2, 2)}, str(missing / "model.safetensors"))
    assert ck.check_tied(str(missing), [], "lora").status == "FAIL"
    assert ck.check_tied(resolve_model_path("tiny"), [], "lora").status == "PASS"


def test_dtype(tmp_path):
    from qwen_sft.config.schema import ModelArgs

    tiny = resolve_model_path("tiny")
    assert ck.check_dtype(ModelArgs(dtype="fp16"), tiny).status == "FAIL"
    assert ck.check_dtype(ModelArgs(dtype="fp16", allow_fp16=True), tiny).status == "WARN"
    assert ck.check_dtype(ModelArgs(dtype="fp32"), tiny).status == "PASS"


def test_sampling_defaults_a_server_would_ignore(tmp_path):
    assert ck.check_sampling(resolve_model_path("tiny-qwen2.5")).status == "PASS"
    greedy_but = checkpoint_copy(tmp_path, generation={"do_sample": False, "temperature": 0.7})
    assert "do_sample" in ck.check_sampling(greedy_but).summary
    beams = checkpoint_copy(tmp_path, name="beams", generation={"num_beams": 4})
    f = ck.check_sampling(beams)
    assert f.status == "WARN" and "num_beams" in f.summary


# ------------------------------------------------------------------------------------------- command and train

def test_check_command_exits_1_on_a_fail_and_prints_one_screen(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [chat(), "{oops"])
    code = main(["check", "--data", data, "--output_dir", str(tmp_path / "o"), "--no-forecast"])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL  data.records" in out and "d.jsonl:2" in out and "fix:" in out
    assert len(out.splitlines()) < 30


def test_train_stops_on_a_fail_before_loading_the_model_unless_forced(tmp_path, monkeypatch):
    from qwen_sft.train import recipe as train_module
    from qwen_sft.utils.errors import UserError

    loaded = []
    monkeypatch.setattr(train_module, "load_for_training", lambda *a, **k: loaded.append(1) or 1 / 0)
    cfg = load_config(None, dict(model="tiny-qwen3", data=str(ADVERTISE), loss="all", output_dir=str(tmp_path / "o"),
                                 forecast=False))
    with pytest.raises(UserError, match=r"check: 1 FAIL \(prompt.empty_think\).*force: true"):
        train_module.train(cfg)
    assert not loaded and json.loads((tmp_path / "o" / "check.json").read_text())["status"] == "FAIL"
    cfg.train.force = True
    with pytest.raises(ZeroDivisionError):  # past the check: the model loads
        train_module.train(cfg)
    assert loaded


def test_dry_run_checks_and_forecasts_then_stops(tmp_path):
    from qwen_sft.train.recipe import train

    from helpers import small_data

    out = tmp_path / "o"
    train(load_config(None, dict(model="tiny", data=small_data(tmp_path, 8), output_dir=str(out), max_length=64,
                                 per_device_train_batch_size=2, max_steps=3, dry_run=True, dtype="fp32")))
    saved = json.loads((out / "check.json").read_text())
    assert saved["forecast"]["memory"]["peak"] > 0 and saved["forecast"]["time"]["steps"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["check.json"]
