"""Data sources: one or several files, directories or hub names, mixed into one set, with a report of what each gave.

`data` (and `eval_data`) is one source or a list. Each entry is a path or dataset name (see `data.load_samples`;
`modelscope://owner/name[:split]` fetches from ModelScope, see `hub.py`), or a mapping that adds how much of it to use:

  a.jsonl                          every example, once (the record format is detected per source)
  {path: b.jsonl, samples: 1000}   exactly 1000 examples: a seeded random subset without repetition when the source
                                   has more; when it has fewer, every example as often as fits, plus a random rest
  {path: c.jsonl, weight: 0.3}     this source's share of the mixed set (LLaMA-Factory's interleave_probs):
                                   - beside unweighted entries, the weights are shares of the whole mix (they must add
                                     up to < 1) and the unweighted entries fill the rest: weight 0.3 next to a source
                                     of 700 examples takes 300 (repeating examples if it has fewer);
                                   - when every entry has a weight, they are normalised, and the mix is the largest one
                                     that repeats no example (one source is used whole, the others in proportion).

The mix keeps source order, and each source's picks keep file order (the trainer's sampler shuffles); a source's
picks depend only on the seed and that source, so adding another source does not change them. Every source's
format, records read, examples used and repetitions are logged, and `train` writes them to data_report.json.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from qwen_sft.data.records import FORMATS, Sample, detect_format, load_samples
from qwen_sft.utils.errors import UserError
from qwen_sft.utils.modelscope import download_dataset, modelscope_id

log = logging.getLogger(__name__)
DATA_SUFFIXES = (".jsonl", ".json")


@dataclass
class DataSource:
    """One entry of a `data` list: `{path: a.jsonl, weight: 0.3}`, `{path: b.jsonl, samples: 1000}` ."""

    path: str
    weight: float | None = None  # share of the mixed set
    samples: int | None = None  # exactly this many examples (repeated when the source has fewer)
    format: str | None = None  # record shape of this source (default: data_format)


def parse_source(entry, where: str) -> tuple[DataSource | None, list[str]]:
    """One entry of a `data` list (a path, or a mapping) → (DataSource, problems naming `where`, e.g. data[1])."""
    if isinstance(entry, str) and entry.strip():
        return DataSource(path=entry.strip()), []
    if not isinstance(entry, dict):
        return None, [f"{where}: expected a path or a mapping with `path`, got {entry!r}"]
    fields = {f.name for f in dataclasses.fields(DataSource)}
    problems = [f"{where}: unknown key {k!r} (a source takes {', '.join(sorted(fields))})" for k in entry
                if k not in fields]
    path, weight, samples, fmt = (entry.get(k) for k in ("path", "weight", "samples", "format"))
    if not isinstance(path, str) or not path.strip():
        problems.append(f"{where}.path: required (a file, directory or dataset name)")
    if weight is not None and samples is not None:
        problems.append(f"{where}: give weight or samples, not both")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0):
        problems.append(f"{where}.weight: must be > 0, got {weight!r}")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        problems.append(f"{where}.samples: must be an integer >= 1, got {samples!r}")
    if fmt is not None and fmt not in ("auto", *FORMATS):
        problems.append(f"{where}.format: {fmt!r} is not one of auto, {', '.join(FORMATS)}")
    if problems:
        return None, problems
    return DataSource(path=path.strip(), weight=None if weight is None else float(weight), samples=samples,
                      format=fmt), []


@dataclass
class SourceReport:
    source: str
    format: str
    records: int  # usable records read from the source
    used: int  # examples drawn into the mix (repeats counted)
    weight: float | None = None
    samples: int | None = None
    repeated: int = 0  # draws beyond the source's own size
    examples: int | None = None  # examples left after encoding (`dataset.load_examples` fills it in)

    def line(self) -> str:
        how = f"weight {self.weight:g}" if self.weight is not None else \
            f"samples {self.samples}" if self.samples is not None else "all"
        repeats = f", {self.repeated} repeated" if self.repeated else ""
        return f"{self.source} ({self.format}, {how}): {self.records} records -> {self.used} used{repeats}"


def as_sources(value: str | list | None) -> list[DataSource]:
    """`data` as the config holds it (one path, or a list of `DataSource`s) → a list of `DataSource`s."""
    if value is None:
        return []
    return [DataSource(path=value)] if isinstance(value, str) else list(value)


def load_mixed(value: str | list, *, fmt: str = "auto", skip_bad: bool = False, seed: int = 0,
               require_answer: bool = True) -> tuple[list[Sample], list[int], list[SourceReport]]:
    """Load every source and mix them as their entries ask (see the module docstring).

    Returns:
        (samples, the index of the source each sample came from, one report per source).

    Raises:
        UserError: a source that cannot be read (naming it, and the file/line of a bad record).
    """
    sources = as_sources(value)
    loaded = [load_source(s, fmt=s.format or fmt, skip_bad=skip_bad, require_answer=require_answer)
              for s in sources]
    counts = mix_counts([len(samples) for samples in loaded], sources)
    mixed, origin, reports = [], [], []
    for i, (source, samples, count) in enumerate(zip(sources, loaded, counts)):
        picks = pick(len(samples), count, random.Random(f"{seed}:{i}:{source.path}"))
        mixed += [samples[j] for j in picks]
        origin += [i] * len(picks)
        reports.append(SourceReport(source=source.path, format=detect_format(samples[0].record), records=len(samples),
                                    used=len(picks), weight=source.weight, samples=source.samples,
                                    repeated=max(count - len(samples), 0)))
    if len(sources) > 1 or sources[0].weight is not None or sources[0].samples is not None:
        log.info("data mix of %d examples:\n  %s", len(mixed), "\n  ".join(r.line() for r in reports))
    return mixed, origin, reports


def mix_counts(sizes: list[int], sources: list[DataSource]) -> list[int]:
    """How many examples each source gives the mix (see the module docstring); sizes are the sources' lengths."""
    counts = [s.samples if s.samples is not None else n for s, n in zip(sources, sizes)]
    weighted = [i for i, s in enumerate(sources) if s.weight is not None]
    if not weighted:
        return counts
    weights = {i: sources[i].weight for i in weighted}
    if len(weighted) < len(sources):  # shares of the whole; the unweighted sources are the rest
        total = sum(c for i, c in enumerate(counts) if i not in weights) / (1 - sum(weights.values()))
    else:  # the largest mix in these proportions that needs no source to repeat
        norm = sum(weights.values())
        total = min(sizes[i] * norm / w for i, w in weights.items())
        weights = {i: w / norm for i, w in weights.items()}
    for i, w in weights.items():
        counts[i] = max(1, round(w * total))
    return counts


def pick(size: int, count: int, rng: random.Random) -> list[int]:
    """`count` indices into a source of `size`: a random subset (in order) when count <= size, else every index
    count // size times plus a random subset for the rest."""
    whole, rest = divmod(count, size)
    return list(range(size)) * whole + sorted(rng.sample(range(size), rest))


def load_source(source: DataSource, *, fmt: str = "auto", skip_bad: bool = False,
                require_answer: bool = True) -> list[Sample]:
    """Every sample of one source; a ModelScope data set is downloaded first and its data files read.

    Raises:
        UserError: an unreadable source, a bad record (see `data.load_samples`).
    """
    if not modelscope_id(source.path):
        return load_samples(source.path, fmt=fmt, require_answer=require_answer, skip_bad=skip_bad)
    directory, split = download_dataset(source.path)
    samples = []
    for file in data_files(directory, split, source.path):
        samples += load_samples(file, fmt=fmt, require_answer=require_answer, skip_bad=skip_bad)
    return samples


def data_files(directory: Path, split: str | None, name: str) -> list[Path] | list[str]:
    """The files of a downloaded data set that hold `split` (default train): a `save_to_disk` dir is itself; else the
    JSON / JSONL files whose path names the split, or the only data file there is.

    Raises:
        UserError: naming the files found when none (or several, none named after the split) fit.
    """
    if (directory / "dataset_dict.json").is_file() or (directory / "state.json").is_file():
        if split:
            raise UserError(f"{name}: a save_to_disk data set; leave out :{split} (its train split is used)")
        return [str(directory)]
    found = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(directory).parts)
                   and p.name not in ("dataset_infos.json", "dataset_info.json", "configuration.json"))
    wanted = split or "train"
    named = [p for p in found if wanted in p.relative_to(directory).as_posix()]
    if named:
        return named
    if len(found) == 1 and not split:
        return found
    listing = ", ".join(p.relative_to(directory).as_posix() for p in found[:8]) or "none"
    raise UserError(f"{name}: no JSON/JSONL file for split {wanted!r} in the download (found: {listing}); "
                    "name the split as modelscope://owner/name:SPLIT")


def load_one(value: str | list, *, fmt: str = "auto", require_answer: bool = True, command: str = "") -> list[Sample]:
    """The samples of a single source, for commands that write one prediction per record (predict, eval).

    Raises:
        UserError: a list of sources, or an unreadable one.
    """
    sources = as_sources(value)
    if len(sources) != 1 or sources[0].weight is not None or sources[0].samples is not None:
        raise UserError(f"data: {command or 'this command'} takes one source (a file, directory or dataset name), "
                        f"not a mix of {len(sources)}")
    return load_source(sources[0], fmt=sources[0].format or fmt, require_answer=require_answer)


def write_report(path: str | Path, sets: dict[str, list[SourceReport]]) -> None:
    """`data_report.json`: per set (train, eval) what each source gave."""
    import dataclasses
    import json

    report = {name: [dataclasses.asdict(r) for r in reports] for name, reports in sets.items() if reports}
    Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
