"""The argument tree: typed parsing, one error for every problem, help generated from the fields, and every
command's keys unambiguous."""

import importlib

import pytest

from qwen_sft.cli import COMMANDS, main
from qwen_sft.config.parse import load_config, parse_args
from qwen_sft.config.schema import TRAIN, to_dict
from qwen_sft.utils.errors import UserError

from helpers import ROOT


def test_values_are_parsed_by_the_keys_declared_type():
    cfg = load_config(None, ["--data", "x.jsonl", "--output_dir", "0001", "--resume", "no", "--packing",
                             "--lora.targets", "q_proj,v_proj", "--max_length", "512", "--learning_rate", "5e-5",
                             "--save_total_limit", "null"])
    assert cfg.train.output_dir == "0001" and cfg.train.resume == "no"  # strings stay strings
    assert cfg.data.packing is True  # a boolean key alone means true
    assert cfg.lora.targets == ["q_proj", "v_proj"] and cfg.data.max_length == 512
    assert cfg.train.learning_rate == 5e-5 and cfg.train.save_total_limit is None
    assert load_config(None, ["--data", "x", "--packing", "false"]).data.packing is False
    assert load_config(None, ["--data", "x", "--no-packing"]).data.packing is False
    assert load_config(None, {"data": "x", "data-format": "alpaca"}).data.data_format == "alpaca"  # - or _


def test_learning_rate_default_depends_on_the_method():
    assert load_config(None, {"data": "x"}).train.learning_rate == 2e-4
    assert load_config(None, {"data": "x", "finetuning": "full"}).train.learning_rate == 1e-5
    assert load_config(None, {"data": "x", "finetuning": "full", "learning_rate": 1e-3}).train.learning_rate == 1e-3


def test_every_problem_in_one_error_before_anything_loads():
    with pytest.raises(UserError) as err:
        load_config(None, ["--learing_rate", "1", "--max_length", "-3", "--loss", "x", "--optim", "adamw_torch"])
    message = str(err.value)
    for part in ("unknown key 'learing_rate' (did you mean 'learning_rate'?)", "max_length: must be >= 1",
                 "loss: 'x' is not one of all, assistant, last", "data: required"):
        assert part in message, message
    with pytest.raises(UserError, match="optim: nope is not a valid OptimizerNames"):
        load_config(None, ["--data", "x", "--optim", "nope"])  # a pass-through key, checked by TrainingArguments


def test_passthrough_keys_are_typed_and_kept():
    cfg = load_config(None, ["--data", "x", "--report_to", "none", "--dataloader_num_workers", "2",
                             "--torch_compile", "false"])
    assert cfg.train.extra == {"report_to": "none", "dataloader_num_workers": 2, "torch_compile": False}
    assert to_dict(cfg)["dataloader_num_workers"] == 2


def test_yaml_lora_section_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: a.jsonl\nlora:\n  r: 4\n  targets: [q_proj]\nmax_length: 64\n")
    cfg = load_config(path, ["--lora.r", "16"])
    assert (cfg.lora.r, cfg.lora.targets, cfg.data.max_length) == (16, ["q_proj"], 64)


def test_help_lists_every_key_once_with_type_and_default(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for key in TRAIN.keys():  # noqa: SIM118 - Command.keys() is a method, not a dict's
        assert out.count(f"--{key} ") == 1, key
    assert "--learning_rate FLOAT" in out and "(default: 2e-4 for LoRA/DoRA, 1e-5 for full)" in out
    assert "--data STR" in out and "(required)" in out and "(default: None)" not in out
    for line in out.splitlines():
        assert line.count("(default:") <= 1, line


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_and_unambiguous_keys(name, capsys):
    command = importlib.import_module(COMMANDS[name]).COMMAND
    keys = list(command.keys())
    assert len(keys) == len(set(keys)), f"{name}: a key appears in two sections"
    assert main([name, "--help"]) == 0
    assert f"usage: qwen-sft {name}" in capsys.readouterr().out
    for required in command.required:
        assert required in keys


def test_command_lines_are_parsed_exactly():
    predict = importlib.import_module(COMMANDS["predict"]).COMMAND
    cfg = parse_args(["--data", "d.jsonl", "--output", "p.jsonl", "--max-new-tokens", "8", "--temperature", "0.7"],
                     predict)
    assert (cfg.data.data, cfg.command.output, cfg.sampling.max_new_tokens, cfg.sampling.temperature) == (
        "d.jsonl", "p.jsonl", 8, 0.7)
    with pytest.raises(UserError, match="unknown key 'dat'"):  # no prefix matching (argparse's `--data` trap)
        parse_args(["--dat", "d.jsonl", "--output", "p"], predict)
    with pytest.raises(UserError, match="unknown key 'learning_rate'"):  # a train key is not a predict key
        parse_args(["--data", "d", "--output", "p", "--learning_rate", "1"], predict)


def test_choices_come_from_the_library():
    import dataclasses

    from qwen_sft.config.schema import DataArgs, ModelArgs
    from qwen_sft.data.records import FORMATS
    from qwen_sft.template.encode import Loss
    from qwen_sft.template.registry import TEMPLATE_NAMES

    choices = {f.name: f.metadata["choices"] for cls in (DataArgs, ModelArgs) for f in dataclasses.fields(cls)}
    assert choices["template"] == TEMPLATE_NAMES
    assert choices["loss"] == tuple(mode.value for mode in Loss)
    assert choices["data_format"] == ("auto", *FORMATS)


@pytest.mark.parametrize("command", ["train", "check", "preview", "predict", "eval", "chat", "serve", "merge"])
def test_a_data_file_given_as_the_config_says_to_use_data(command, tmp_path, capsys):
    jsonl = ROOT / "data" / "advertise_gen" / "train.jsonl"
    array = tmp_path / "records.json"
    array.write_text('[{"instruction": "q", "output": "a"}]')
    renamed = tmp_path / "records.txt"  # JSON lines under another name: YAML cannot read them
    renamed.write_text(jsonl.read_text(encoding="utf-8").splitlines()[0] + "\n{\"instruction\": \"q\"}\n")
    for path in (jsonl, array, renamed):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert f"this is a data file, not a config; pass it as --data {path}" in err, err
        assert err.count("\n") == 1
