"""Tokenised-data cache: a rerun or a resume of `train` (and `check`) does not tokenise the same data again.

An entry holds what `dataset.encode_samples` made of one data source: each example's ids, labels and truncated
flag, which sample it came from, and the lists of truncated and skipped examples. Its key hashes everything
the encoding depends on, so a changed input is a new key and a stale entry is never read:

  data       for each source of the mix: the bytes of the file (of every file, for a save_to_disk dir), its
             entry (path as given, weight, samples, format); the seed when a weight or samples draws with it.
             Hub and ModelScope data sets are not cached (no local bytes to hash; they have their own caches)
  options    fmt, loss, max_length
  tokenizer  its serialised backend: vocabulary, merges, added tokens
  template   its definition (name, family, default system prompt, separators, ...)
  code       ENCODE_VERSION and the source of the modules that read, encode and store data

The records are still read (a second or so per 50k), so the examples come back with their samples; only
the tokenisation, the slow part, is skipped. Entries live in `files.cache_dir()/tokenized/`; each is written
under a temporary name and renamed, so processes that read it together (torchrun) see a whole entry or
none; the least recently used beyond MAX_ENTRIES are deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

from qwen_sft.data.mix import as_sources
from qwen_sft.template.encode import Example
from qwen_sft.template.render import Template
from qwen_sft.utils.files import cache_dir

log = logging.getLogger(__name__)

ENCODE_VERSION = 1  # bump when the encoding changes in a way the hashed sources below do not show
# the modules whose code decides what an entry holds, relative to the package root
ENCODING_SOURCES = ("data/records.py", "data/mix.py", "data/tools.py", "template/tokenizer.py", "template/render.py",
                    "template/registry.py", "template/encode.py", "data/dataset.py", "data/cache.py")
MAX_ENTRIES = 16
_TOKENIZER_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def entries_dir() -> Path:
    return cache_dir() / "tokenized"


def cache_key(source, tokenizer, template: Template, *, fmt: str, loss: str, max_length: int | None,
              seed: int = 0) -> str | None:
    """The key of `source` (one source or a mix, see sources.py) encoded with these settings, or None when it
    cannot be cached (a source that is not a local file or directory)."""
    parts = [f"v{ENCODE_VERSION}", _code_hash(), fmt, loss, str(max_length), tokenizer_hash(tokenizer), repr(template)]
    sources = as_sources(source)
    for entry in sources:
        data = _data_hash(Path(entry.path))
        if data is None:
            return None
        parts += [repr(entry), data]
    if any(entry.weight is not None or entry.samples is not None for entry in sources):
        parts.append(f"seed {seed}")  # a weighted or sampled mix picks with the seed
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:40]


def load(key: str, samples: list) -> dict | None:
    """The cached encoding of `samples` as `dataset.Encoded`'s fields, or None (no entry, or one that does not
    fit: it was written for a different number of records)."""
    path = entries_dir() / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as entry:
            arrays = {name: entry[name] for name in entry.files}
        meta = json.loads(str(arrays["meta"]))
        if meta["n_samples"] != len(samples):
            return None
    except (OSError, ValueError, KeyError):  # absent, or unreadable: tokenise again
        return None
    with contextlib.suppress(OSError):  # a failure only makes it older for the pruning
        os.utime(path)  # recently used: kept by the pruning
    offsets, ids, labels = arrays["offsets"].tolist(), arrays["ids"], arrays["labels"]
    # per-example slices: never one list of every token at once (that would double the peak memory)
    examples = [Example(input_ids=ids[a:b].tolist(), labels=labels[a:b].tolist(), truncated=bool(cut))
                for a, b, cut in zip(offsets, offsets[1:], arrays["truncated"].tolist())]
    log.info("tokenised data read from the cache (%s): %d examples", path.name, len(examples))
    return {"examples": examples, "samples": [samples[i] for i in arrays["kept"].tolist()],
            "truncated": meta["truncated"], "skipped": meta["skipped"]}


def store(key: str, samples: list, encoded) -> None:
    """Write `encoded` (a `dataset.Encoded` of `samples`) under `key`; a failure only costs a re-tokenisation."""
    index = {id(sample): i for i, sample in enumerate(samples)}
    lengths = [len(e.input_ids) for e in encoded.examples]
    arrays = {
        "ids": np.fromiter((t for e in encoded.examples for t in e.input_ids), np.int32, sum(lengths)),
        "labels": np.fromiter((t for e in encoded.examples for t in e.labels), np.int32, sum(lengths)),
        "offsets": np.cumsum([0, *lengths], dtype=np.int64),
        "truncated": np.array([e.truncated for e in encoded.examples], dtype=bool),
        "kept": np.array([index[id(s)] for s in encoded.samples], dtype=np.int64),
        "meta": np.array(json.dumps({"n_samples": len(samples), "truncated": encoded.truncated,
                                     "skipped": encoded.skipped}, ensure_ascii=False)),
    }
    directory = entries_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{key}.", suffix=".tmp", delete=False) as f:
            np.savez(f, **arrays)
        os.replace(f.name, directory / f"{key}.npz")  # readers see the whole entry or none
    except OSError as err:
        log.warning("tokenised-data cache not written (%s): the next run tokenises again", err)
        return
    _prune(directory)


def tokenizer_hash(tokenizer) -> str:
    """A hash of what the tokenizer encodes with (its backend without runtime padding/truncation settings)."""
    cached = _TOKENIZER_HASHES.get(tokenizer)
    if cached is not None and cached[1] == len(tokenizer):
        return cached[0]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {"vocab": sorted(tokenizer.get_vocab().items())}
    spec.update(truncation=None, padding=None)  # set at run time (generation pads left); no effect on encode
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()
    _TOKENIZER_HASHES[tokenizer] = (digest, len(tokenizer))
    return digest


def _data_hash(path: Path) -> str | None:
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else "").encode("utf-8") + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _code_hash() -> str:
    here = Path(__file__).parents[1]  # the qwen_sft package
    digest = hashlib.sha256()
    for name in ENCODING_SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def _prune(directory: Path) -> None:
    """Delete the least recently used entries beyond MAX_ENTRIES, and temporary files a killed writer left."""
    entries = sorted((p for p in directory.glob("*.npz") if _age(p) >= 0), key=_age)
    for old in [*entries[MAX_ENTRIES:], *(p for p in directory.glob(".*.tmp") if _age(p) > 3600)]:
        old.unlink(missing_ok=True)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:  # deleted meanwhile by another process
        return -1.0
