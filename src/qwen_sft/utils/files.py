"""File helpers every stage shares: the cache dir, all-or-nothing writes, JSON lines."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def cache_dir() -> Path:
    """Where built artefacts live (tokenizer, `tiny`): $QWEN_SFT_CACHE, or ~/.cache/qwen-sft when unset or empty."""
    return Path(os.environ.get("QWEN_SFT_CACHE") or Path.home() / ".cache" / "qwen-sft")


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `target` to fill; on success it replaces `target` in one rename.

    A crash or an exception leaves `target` as it was (absent or complete), never half-written.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp"))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Written under a temporary name and renamed: an interrupted run never leaves a half file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> list[dict]:
    """Every JSON line of `path` ([] when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
