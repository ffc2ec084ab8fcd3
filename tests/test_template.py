"""One rendering for training and inference; exactly which tokens each loss mode trains."""

import pytest

from qwen_sft.errors import UserError
from qwen_sft.template import IGNORE_INDEX, encode_example, encode_prompt, get_template, render
from spec_reference import LOGGED_PROMPTS

QWEN = get_template("qwen")
LEGACY = get_template("qwen1.5-sft-legacy")
CONVERSATION = [
    {"role": "user", "content": "这条裙子是什么材质？"},
    {"role": "assistant", "content": "纯棉的。"},
    {"role": "user", "content": "Can I machine-wash it?"},
    {"role": "assistant", "content": "Yes, at 30°C."},
]


@pytest.mark.parametrize("instruction,ids", LOGGED_PROMPTS, ids=[f"prompt{i}" for i in range(5)])
def test_legacy_prompt_reproduces_spec_ids(tokenizer, instruction, ids):
    assert encode_prompt([{"role": "user", "content": instruction}], tokenizer, LEGACY) == ids


def test_qwen_matches_the_tokenizers_chat_template(tokenizer):
    for messages in (CONVERSATION, [{"role": "system", "content": "Be brief."}, *CONVERSATION]):
        assert render(messages, QWEN) == tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = messages[:-1]
        assert render(prompt, QWEN, add_generation_prompt=True) == tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("template", [QWEN, LEGACY], ids=lambda t: t.name)
def test_prompt_is_a_prefix_of_the_training_ids(tokenizer, template):
    # the bug the spec's original had: inference must see exactly what training saw before the answer
    example = encode_example(CONVERSATION, tokenizer, template)
    prompt = encode_prompt(CONVERSATION[:-1], tokenizer, template)
    assert example.input_ids[: len(prompt)] == prompt
    answer = tokenizer(CONVERSATION[-1]["content"], add_special_tokens=False).input_ids
    assert example.input_ids[len(prompt):] == answer + [151645, 198]


def test_qwen_piecewise_ids_equal_whole_text_ids(tokenizer):
    example = encode_example(CONVERSATION, tokenizer, QWEN)
    assert example.input_ids == tokenizer(render(CONVERSATION, QWEN), add_special_tokens=False).input_ids


def _trained_text(tokenizer, example):
    """The trained tokens, decoded span by span, so a test reads as text rather than ids."""
    spans, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label != IGNORE_INDEX:
            assert label == token  # labels are the token itself (the shift happens in the loss)
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


def test_loss_all_trains_every_token(tokenizer):
    example = encode_example(CONVERSATION, tokenizer, QWEN, loss="all")
    assert example.labels == example.input_ids


def test_loss_assistant_trains_each_answer_and_its_im_end(tokenizer):
    example = encode_example(CONVERSATION, tokenizer, QWEN, loss="assistant")
    assert _trained_text(tokenizer, example) == ["纯棉的。<|im_end|>", "Yes, at 30°C.<|im_end|>"]


def test_loss_last_trains_only_the_last_answer(tokenizer):
    example = encode_example(CONVERSATION, tokenizer, QWEN, loss="last")
    assert _trained_text(tokenizer, example) == ["Yes, at 30°C.<|im_end|>"]
    # and exactly the positions: the last answer's tokens + <|im_end|>, then the untrained newline
    n_answer = len(tokenizer("Yes, at 30°C.", add_special_tokens=False).input_ids)
    trained = [i for i, label in enumerate(example.labels) if label != IGNORE_INDEX]
    end = len(example.input_ids) - 1  # the final "\n"
    assert trained == list(range(end - n_answer - 1, end))


def test_legacy_assistant_mode_trains_answer_after_the_unnewlined_prompt(tokenizer):
    example = encode_example(CONVERSATION[:2], tokenizer, LEGACY, loss="assistant")
    assert _trained_text(tokenizer, example) == ["纯棉的。<|im_end|>"]
    assert tokenizer.decode(example.input_ids).endswith("<|im_start|>assistant纯棉的。<|im_end|>\n")


def test_truncation_keeps_the_closing_im_end(tokenizer):
    long_answer = [{"role": "user", "content": "介绍一下"}, {"role": "assistant", "content": "很长的回答。" * 50}]
    full = encode_example(long_answer, tokenizer, QWEN, loss="assistant")
    cut = encode_example(long_answer, tokenizer, QWEN, loss="assistant", max_length=40)
    assert not full.truncated and cut.truncated
    assert len(cut.input_ids) == 40
    assert cut.input_ids[-1] == 151645 and cut.labels[-1] == 151645
    assert cut.input_ids[:39] == full.input_ids[:39]


def test_truncation_inside_the_prompt_leaves_no_trained_tokens_in_assistant_mode(tokenizer):
    cut = encode_example(CONVERSATION[:2], tokenizer, QWEN, loss="assistant", max_length=8)
    assert cut.truncated and len(cut.input_ids) == 8 and cut.num_trained == 0


def test_unknown_template_and_loss_are_user_errors(tokenizer):
    with pytest.raises(UserError, match="unknown template"):
        get_template("llama")
    with pytest.raises(UserError, match="unknown loss mode"):
        encode_example(CONVERSATION, tokenizer, QWEN, loss="output")
