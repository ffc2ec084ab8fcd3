"""Where records come from: a JSON array or JSONL file, a `datasets.save_to_disk` directory, or a hub dataset name.

Each record comes with where it was found ("file:line" or "file[index]"); a line that is not JSON comes as a
`BadRecord`, so the caller reports it like any other bad record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from qwen_sft.utils.errors import UserError


class BadRecord(ValueError):
    """A record-level problem; `load_samples` adds the file and line."""


def read_records(source: str | Path) -> Iterator[tuple[str, object]]:
    """Yield (where, record) from a file, a save_to_disk directory or a hub dataset."""
    path = Path(source)
    if path.is_dir():
        yield from _read_saved_dataset(path)
    elif path.is_file():
        yield from _read_json_file(path)
    elif _looks_like_hub_name(str(source)):
        yield from _read_hub_dataset(str(source))
    else:
        raise UserError(f"{source}: no such file or directory")


def _read_json_file(path: Path) -> Iterator[tuple[str, object]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a leading BOM is accepted and dropped
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: invalid UTF-8 (byte {err.start}); save the file as UTF-8") from None
    if not text.strip():
        raise UserError(f"{path}: empty file")
    if text.lstrip().startswith("["):  # a JSON array
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
        for i, record in enumerate(records):
            yield f"{path}[{i}]", record
        return
    for lineno, line in enumerate(text.splitlines(), start=1):  # splitlines: CRLF is fine
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            record = BadRecord(f"invalid JSON: {err.msg} (column {err.colno})")
        yield f"{path}:{lineno}", record


def _read_saved_dataset(path: Path) -> Iterator[tuple[str, object]]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: a directory, but not one written by datasets.save_to_disk") from None
    if isinstance(dataset, datasets.DatasetDict):
        dataset = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
    for i, record in enumerate(dataset):
        yield f"{path}[{i}]", record


def _looks_like_hub_name(name: str) -> bool:
    parts = name.split(":")[0].split("/")
    return len(parts) == 2 and all(parts) and not name.endswith((".json", ".jsonl"))


def _read_hub_dataset(name: str) -> Iterator[tuple[str, object]]:
    import datasets

    repo, _, split = name.partition(":")
    try:
        dataset = datasets.load_dataset(repo, split=split or "train")
    except Exception as err:  # the hub client raises many types; the user needs the one line
        raise UserError(f"{name}: not a local file and could not be loaded from the hub "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    for i, record in enumerate(dataset):
        yield f"{name}[{i}]", record
