"""Every check, and the forecast, on the config `train` would run: `qwen-sft check` and the start of `train`.

`check(cfg)` loads what `train` loads (tokenizer, template, data: through the tokenised-data cache, so the
`train` that follows does not tokenise again), runs the checks, then (no FAIL, or `force`) the forecast
(`estimate.py`). `check_before_training` runs the checks on what `train` has already loaded, before the model
loads, so a FAIL costs seconds: it stops the run unless `force: true`; `train`'s forecast comes from its first
steps. Each writes check.json into the output dir.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from qwen_sft.config.schema import Config
from qwen_sft.data.collate import make_collator
from qwen_sft.data.dataset import Encoded, encode_samples, load_examples
from qwen_sft.data.mix import as_sources, load_mixed
from qwen_sft.data.records import load_samples
from qwen_sft.model.load import load_tokenizer, resolve_model_path
from qwen_sft.preflight import checkpoint_checks, data_checks, prompt_checks
from qwen_sft.preflight.estimate import forecast_for_check, memory_finding
from qwen_sft.preflight.report import FAIL, Finding, Report
from qwen_sft.runs.checkpoints import checkpoint_step, latest_checkpoint
from qwen_sft.template.encode import encode_sample
from qwen_sft.template.proof import resolve_template
from qwen_sft.utils.errors import UserError
from qwen_sft.utils.modelscope import modelscope_id

log = logging.getLogger(__name__)


def check(cfg: Config) -> Report:
    """Load the tokenizer, template and data as `train` does, check them, forecast; write check.json.

    Raises:
        UserError: a model, tokenizer or data file that cannot be read at all.
    """
    model_path = resolve_model_path(cfg.model.model or "tiny")
    tokenizer = load_tokenizer(model_path)
    try:
        template = resolve_template(cfg.model.template, tokenizer)
    except UserError as err:  # nothing prompt- or data-related can be checked without a template
        report = Report(_header(cfg, model_path, None))
        report.add(Finding("prompt.template", FAIL, str(err), fix="template: the checkpoint's family"))
        return _show(_checkpoint_only(report, cfg, model_path, tokenizer), cfg, main=True)
    data = cfg.data
    problems: list = []
    n_records = count_records(data.data, data.data_format, problems)
    train = _encode(data.data, tokenizer, template, cfg, problems)
    evaluation = _encode(data.eval_data, tokenizer, template, cfg, []) if data.eval_data else None
    last = latest_checkpoint(Path(cfg.train.output_dir)) if cfg.train.resume == "auto" else \
        None if cfg.train.resume == "never" else cfg.train.resume
    report = _run(Report(_header(cfg, model_path, template)), cfg, model_path, tokenizer, template, train, evaluation,
                  problems, n_records)
    if cfg.train.forecast and train.examples and (not report.failed or cfg.train.force):
        report.forecast = forecast_for_check(cfg, model_path, tokenizer.pad_token_id, train.examples,
                                             evaluation.examples if evaluation else None,
                                             checkpoint_step(last) if last else 0)
        report.add(memory_finding(report.forecast["memory"]))
    return _show(report, cfg, main=True)


def dry_run(cfg: Config) -> Path:
    """`train --dry-run`: the check alone (nothing but check.json is written), then stop.

    Raises:
        UserError: any FAIL, unless `force: true`.
    """
    stop_on_failure(check(cfg), cfg)
    return Path(cfg.train.output_dir)


def check_before_training(cfg: Config, model_path: str, tokenizer, template, datasets: list, resume_from: str | None,
                          main: bool) -> Report:
    """The checks on what `train` loaded (`datasets`: its train and eval `Encoded`), before the model loads.

    Raises:
        UserError: any FAIL, unless `force: true`.
    """
    problems: list = []
    n_records = len(_unique(datasets[0].samples))
    if cfg.data.skip_bad:  # the records load_samples skipped are only logged: count them again
        n_records = count_records(cfg.data.data, cfg.data.data_format, problems)
    report = _run(Report(_header(cfg, model_path, template)), cfg, model_path, tokenizer, template, datasets[0],
                  datasets[1], problems, n_records)
    _show(report, cfg, main)
    stop_on_failure(report, cfg)
    report.clock = time.perf_counter()  # the forecast's time window starts here: model load to the end
    return report


def stop_on_failure(report: Report, cfg: Config) -> None:
    """Raises UserError when a check failed, unless `force: true`."""
    if report.failed and not cfg.train.force:
        names = ", ".join(f.name for f in report.failed)
        raise UserError(f"check: {len(report.failed)} FAIL ({names}): training stopped before loading the model; "
                        f"fix them (see the table above and {Path(cfg.train.output_dir) / 'check.json'}), or set "
                        "force: true to train anyway")


def _run(report: Report, cfg: Config, model_path: str, tokenizer, template, train: Encoded,
         evaluation: Encoded | None, problems: list, n_records: int) -> Report:
    started = time.perf_counter()
    data, samples = cfg.data, _unique(train.samples)  # records, not the mix (a weighted source repeats some)
    special, special_wheres = data_checks.check_special_tokens(samples, tokenizer, template)
    collator = make_collator(data.packing, tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else None
    for finding in (
        prompt_checks.check_template(samples, tokenizer, template, special_wheres),
        prompt_checks.check_terminator(train, tokenizer, template, collator, data.loss),
        prompt_checks.check_pad(tokenizer),
        prompt_checks.check_thinking(samples, tokenizer, template, data.loss),
        prompt_checks.check_empty_think(train, tokenizer, template, data.loss),
        prompt_checks.check_dropped_reasoning(samples, template),
    ):
        report.add(finding)
    lengths, lost = data_checks.full_lengths(train, tokenizer, template, data.max_length)
    for finding in (
        data_checks.check_records(problems, n_records, data.skip_bad),
        data_checks.check_tools(samples, problems),
        data_checks.check_nothing_to_train(train, len(train.samples) + len(train.skipped), data.skip_bad,
                                           data.max_length),
        data_checks.check_truncation(train, lengths, lost, data.max_length),
        data_checks.check_duplicates(samples),
        data_checks.check_overlap(samples, _unique(evaluation.samples) if evaluation else None),
        special,
        data_checks.check_long(lengths, [s.where for s in train.samples]),
    ):
        report.add(finding)
    _checkpoint_only(report, cfg, model_path, tokenizer)
    log.info("checks done in %.1f s", time.perf_counter() - started)
    return report


def _show(report: Report, cfg: Config, main: bool) -> Report:
    """The table on stdout and check.json, from the main process."""
    if main:
        print(report.table(), flush=True)
        report.write(cfg.train.output_dir)
    return report


def _checkpoint_only(report: Report, cfg: Config, model_path: str, tokenizer) -> Report:
    for finding in (checkpoint_checks.check_eos_pad(model_path, tokenizer),
                    checkpoint_checks.check_tied(model_path, cfg.lora.targets, cfg.train.finetuning),
                    checkpoint_checks.check_dtype(cfg.model, model_path), checkpoint_checks.check_sampling(model_path)):
        report.add(finding)
    return report


def _encode(source, tokenizer, template, cfg: Config, problems: list) -> Encoded:
    """`train`'s encoding of the (mixed) data, through the cache; if a sample cannot be encoded, each one that
    cannot is added to `problems` and the rest are encoded."""
    data = cfg.data
    try:
        return load_examples(source, tokenizer, template, fmt=data.data_format, loss=data.loss,
                             max_length=data.max_length, skip_bad=True, seed=cfg.train.seed, cache=True)
    except UserError:
        pass
    good = []
    for sample in load_mixed(source, fmt=data.data_format, skip_bad=True, seed=cfg.train.seed)[0]:
        try:
            encode_sample(sample, tokenizer, template, data.loss, data.max_length)
            good.append(sample)
        except UserError as err:
            problems.append((sample.where, str(err).removeprefix(f"{sample.where}: ")))
    return encode_samples(good, tokenizer, template, loss=data.loss, max_length=data.max_length, skip_bad=True)


def count_records(value, fmt: str, problems: list) -> int:
    """Read every local source once more, appending each record training would skip (or stop at) to
    `problems`; returns the number of records (ModelScope sources are not re-read)."""
    usable = 0
    for source in as_sources(value):
        if not modelscope_id(source.path):
            usable += len(load_samples(source.path, fmt=source.format or fmt, skip_bad=True, problems=problems))
    return usable + len(problems)


def _unique(samples: list) -> list:
    """Each sample once: a mix repeats a source's sample as the same object."""
    return list({id(sample): sample for sample in samples}.values())


def _header(cfg: Config, model_path: str, template) -> str:
    name = template.name if template else "?"
    data = ", ".join(source.path for source in as_sources(cfg.data.data))
    return (f"qwen-sft check: model {cfg.model.model or 'tiny'} ({model_path}), template {name}, loss {cfg.data.loss}, "
            f"max_length {cfg.data.max_length}, {cfg.train.finetuning}; data {data}")
