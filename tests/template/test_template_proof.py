"""`template: auto` picks the template a checkpoint's chat template proves; a mismatch stops with one line."""

import logging

import pytest

from qwen_sft.export.merge import chat_template_jinja
from qwen_sft.model.load import load_tokenizer, resolve_model_path
from qwen_sft.template.proof import TemplateMismatch, resolve_template, verify_against_checkpoint
from qwen_sft.template.registry import get_template
from qwen_sft.template.tokenizer import build_tokenizer, official_chat_template
from qwen_sft.utils.errors import UserError


@pytest.mark.parametrize("family", ["qwen1.5", "qwen2", "qwen2.5", "qwen3"])
def test_auto_proves_each_family(family_tokenizer, family):
    tokenizer = family_tokenizer(family)
    assert resolve_template("auto", tokenizer).name == family
    assert resolve_template(None, tokenizer).name == family


def test_auto_recognises_what_merge_writes_for_the_legacy_template():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = chat_template_jinja(get_template("qwen1.5-sft-legacy"))
    assert resolve_template("auto", tokenizer).name == "qwen1.5-sft-legacy"


def test_auto_from_checkpoint_dirs(tiny_path):
    assert resolve_template("auto", load_tokenizer(tiny_path)).name == "qwen1.5"
    assert resolve_template("auto", load_tokenizer(resolve_model_path("tiny-qwen3"))).name == "qwen3"


def test_markers_follow_the_tokenizer():
    # Qwen2.5's template on a tokenizer without <tool_call> as an added token: HF tokenises the marker as
    # text, and so does qwen-sft; the proof (text and ids) still holds
    tokenizer = build_tokenizer("qwen1.5")
    tokenizer.chat_template = official_chat_template("qwen2.5")
    verify_against_checkpoint(get_template("qwen2.5"), tokenizer)


def test_a_checkpoint_template_that_differs_stops_auto_with_one_line():
    tokenizer = build_tokenizer("qwen2.5")
    tokenizer.chat_template = tokenizer.chat_template.replace("You are Qwen, created by", "You are Qwen, made by")
    with pytest.raises(UserError) as err:
        resolve_template("auto", tokenizer)
    message = str(err.value)
    assert "\n" not in message
    assert "nearest is qwen2.5" in message and "at character 33" in message
    assert "'made by Alibaba Cloud. Y'" in message and "'created by Alibaba Cloud'" in message
    assert "pass --template qwen2.5" in message


def test_a_named_template_overrides_the_proof_with_a_warning(caplog):
    tokenizer = build_tokenizer("qwen2.5")
    tokenizer.chat_template = official_chat_template("qwen2")
    with caplog.at_level(logging.WARNING):
        assert resolve_template("qwen2.5", tokenizer).name == "qwen2.5"
    assert "differ in the 'one turn, no system' conversation at character 27" in caplog.text
    assert "using qwen2.5 as asked" in caplog.text


def test_the_proof_covers_tools_and_thinking():
    tokenizer = build_tokenizer("qwen3")
    template = tokenizer.chat_template
    tokenizer.chat_template = template.replace("<tool_response>\\n", "<tool_response>")
    with pytest.raises(TemplateMismatch, match="'tools, system, parallel calls'"):
        verify_against_checkpoint(get_template("qwen3"), tokenizer)
    tokenizer.chat_template = template.replace("'<think>\\n\\n</think>\\n\\n'", "'<think>\\n</think>\\n\\n'")
    with pytest.raises(TemplateMismatch, match=r"'one turn, no system \(prompt, enable_thinking=False\)'"):
        verify_against_checkpoint(get_template("qwen3"), tokenizer)


def test_the_proof_compares_ids_too():
    tokenizer = build_tokenizer("qwen2")
    tokenizer.add_tokens(["Paris"])  # the checkpoint's tokenizer now splits text that qwen-sft keeps whole
    with pytest.raises(TemplateMismatch, match="give different ids for the same text"):
        verify_against_checkpoint(get_template("qwen2.5"), _with(tokenizer, official_chat_template("qwen2.5")))


def test_a_template_that_raises_is_a_mismatch():
    tokenizer = _with(build_tokenizer(), "{{ raise_exception('no tools here') }}")
    with pytest.raises(TemplateMismatch, match="fails on the 'one turn, no system' conversation"):
        verify_against_checkpoint(get_template("qwen1.5"), tokenizer)


def test_without_a_chat_template_auto_goes_by_added_tokens(family_tokenizer):
    for family, expected in (("qwen1.5", "qwen1.5"), ("qwen2.5", "qwen2.5"), ("qwen3", "qwen3")):
        assert resolve_template("auto", _with(build_tokenizer(family), None)).name == expected


def _with(tokenizer, chat_template):
    tokenizer.chat_template = chat_template
    return tokenizer
