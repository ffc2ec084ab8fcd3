"""Properties over arbitrary conversations (hypothesis), for every template: Unicode content with leading and
trailing whitespace and newlines, special-token text typed into messages, tool calls, reasoning.

  prefix      the prompt ids are a prefix of the training ids whenever the prompt text is a prefix of the
              training text (always, for the generation prompt each template uses by default)
  published   the rendering equals what the family's published Jinja renders (qwen_sft/template/chat_templates/)
  content     content never becomes a control id: the only added-token ids are the template's markers,
              and the ids decode back to the rendered text
  tokenizer   the ids equal the family tokenizer's own ids for the rendered text, cut where answers start
"""

import unicodedata

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qwen_sft.export.merge import chat_template_jinja
from qwen_sft.template.encode import encode_example, encode_pieces, encode_prompt, pieces, render
from qwen_sft.template.registry import TEMPLATES, get_template

NAMES = list(TEMPLATES)
WHITESPACE = ["\n", "\n\n", " ", "  ", "\t", "\r\n", " \n", "\n ", "\u3000", "\u00a0"]
SPECIAL_TEXT = ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<think>", "</think>",
                "<tool_response>", "</tool_response>", "<|fim_prefix|>", "<|vision_start|>"]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
CONTENT = st.lists(st.one_of(TEXT, st.sampled_from(WHITESPACE), st.sampled_from(["hi", "你好", "x = 1", "😀"])),
                   max_size=5).map("".join)
ANY_CONTENT = st.lists(st.one_of(CONTENT, st.sampled_from(SPECIAL_TEXT)), max_size=4).map("".join)
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a word up",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def conversations(draw, template, content=CONTENT):
    """A conversation ending in an assistant answer, in the shapes data.py produces for `template`."""
    messages = [{"role": "system", "content": draw(content)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(content)})
        if template.tools and draw(st.booleans()):
            calls = [{"type": "function", "function": {"name": "lookup", "arguments": {"q": draw(content)}}}
                     for _ in range(draw(st.integers(1, 2)))]
            messages.append(_assistant(draw, template, content, tool_calls=calls))
            messages += [{"role": "tool", "content": draw(content)} for _ in range(draw(st.integers(1, 2)))]
        messages.append(_assistant(draw, template, content))
    tools = TOOLS if template.tools and draw(st.booleans()) else None
    return messages, tools


def _assistant(draw, template, content, **extra) -> dict:
    message = {"role": "assistant", "content": draw(content), **extra}
    if template.thinking and draw(st.booleans()):
        message["reasoning_content"] = draw(content)
    return message


def _prompt(messages):
    return messages[:max(i for i, m in enumerate(messages) if m["role"] == "assistant")]


def _case(name, family_tokenizer):
    template = get_template(name)
    return template, family_tokenizer(template.tokenizer_family)


@pytest.mark.parametrize("name", NAMES)
def test_prompt_ids_are_a_prefix_of_training_ids(family_tokenizer, name):
    template, tokenizer = _case(name, family_tokenizer)

    @PROPERTY
    @given(conversations(template, ANY_CONTENT), st.booleans())
    def check(conversation, thinking):
        messages, tools = conversation
        prompt = _prompt(messages)
        text = render(messages, template, tools=tools)
        prompt_text = render(prompt, template, True, tools, enable_thinking=thinking)
        if thinking:  # the default generation prompt always is a prefix of the text
            assert text.startswith(prompt_text)
        ids = encode_example(messages, tokenizer, template, tools=tools).input_ids
        prompt_ids = encode_prompt(prompt, tokenizer, template, tools, enable_thinking=thinking)
        assert (ids[:len(prompt_ids)] == prompt_ids) == text.startswith(prompt_text)

    check()


@pytest.mark.parametrize("name", NAMES)
def test_rendering_equals_the_published_template(family_tokenizer, name):
    template, tokenizer = _case(name, family_tokenizer)
    # the published template (qwen1.5 / qwen2 / qwen2.5 / qwen3 tokenizers carry it) and the one merge writes
    jinjas = [chat_template_jinja(template)] + [tokenizer.chat_template] * (name != "qwen1.5-sft-legacy")
    assert (jinjas[0] == jinjas[-1]) == (template.official is not None or name == "qwen1.5-sft-legacy")

    @PROPERTY
    @given(conversations(template, ANY_CONTENT), st.booleans(), st.booleans())
    def check(conversation, generation, thinking):
        messages, tools = conversation
        messages = _prompt(messages) if generation else messages
        ours = render(messages, template, generation, tools, enable_thinking=thinking)
        for jinja in jinjas:
            assert ours == tokenizer.apply_chat_template(messages, tools=tools, chat_template=jinja, tokenize=False,
                                                         add_generation_prompt=generation, enable_thinking=thinking)

    check()


@pytest.mark.parametrize("name", NAMES)
def test_content_never_becomes_a_control_id(family_tokenizer, name):
    template, tokenizer = _case(name, family_tokenizer)
    added = tokenizer.get_added_vocab()

    @PROPERTY
    @given(conversations(template, ANY_CONTENT))
    def check(conversation):
        messages, tools = conversation
        items = pieces(messages, template, tools=tools)
        ids = encode_example(messages, tokenizer, template, tools=tools).input_ids
        markers = [added[p.text] for p in items if p.marker and p.text in added]
        assert [i for i in ids if i in added.values()] == markers
        assert tokenizer.decode(ids) == unicodedata.normalize("NFC", "".join(p.text for p in items))

    check()


@pytest.mark.parametrize("name", NAMES)
def test_ids_equal_the_tokenizers_own_where_answers_start(family_tokenizer, name):
    template, tokenizer = _case(name, family_tokenizer)
    added = tokenizer.get_added_vocab()

    @PROPERTY
    @given(conversations(template, CONTENT))  # no added-token text in content: there ours differ by design
    def check(conversation):
        messages, tools = conversation
        items = pieces(messages, template, tools=tools)
        text, cuts, at = "".join(p.text for p in items), [0], 0
        assume(sum(text.count(t) for t in added) == sum(p.marker and p.text in added for p in items))
        for piece in items:
            cuts.append(at) if piece.new_run else None
            at += len(piece.text)
        theirs = [i for a, b in zip(cuts, [*cuts[1:], len(text)])
                  for i in tokenizer(text[a:b], add_special_tokens=False).input_ids]
        assert encode_pieces(items, tokenizer)[0] == theirs

    check()
