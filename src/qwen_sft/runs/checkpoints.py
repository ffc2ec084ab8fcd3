"""The output dir and its checkpoints: checked before anything loads, written so a kill never leaves a half one.

A checkpoint is written under `OUTPUT_DIR/.staging/checkpoint-N`, fsynced, and renamed into place only once
the weights it holds have given a finite loss (`publish`): a reader (`resume: auto`, `--adapter`) sees no
`checkpoint-N` or a complete one, and a diverged run never leaves a poisoned newest checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from qwen_sft.config.schema import TRAIN, Config, to_dict
from qwen_sft.utils.errors import UserError
from qwen_sft.runs.run_config import RUN_FILE, read_run_info

log = logging.getLogger(__name__)
STAGING = ".staging"
# Keys that may change between an interrupted run and its resumption without making it a different run
# (TrainingArguments keys passed through, such as report_to or optim, are resumable too; `attention` picks a kernel
# for the same arithmetic, and runs written before it existed lack it).
RESUMABLE_CHANGES = {"resume", "overwrite", "learning_rate", "logging_steps", "save_steps", "save_total_limit",
                     "eval_steps", "max_steps", "num_train_epochs", "skip_bad", "per_device_eval_batch_size",
                     "force", "dry_run", "forecast", "attention"}


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints (only renamed-into-place ones exist under this name), oldest first."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step a checkpoint was saved at (its trainer_state.json knows; its name usually says)."""
    state = Path(path) / "trainer_state.json"
    if state.exists():
        return int(json.loads(state.read_text(encoding="utf-8")).get("global_step", 0))
    tail = Path(path).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def publish(output_dir: Path, step: int) -> Path:
    """Move the staged checkpoint-`step` into place (atomic rename); return its final path.

    Paths inside its trainer_state.json (the best checkpoint) are rewritten from the staging name first.
    """
    name = f"checkpoint-{step}"
    staged, final = output_dir / STAGING / name, output_dir / name
    state = staged / "trainer_state.json"
    if state.exists():
        text = state.read_text(encoding="utf-8")
        state.write_text(text.replace(str(output_dir / STAGING) + os.sep, str(output_dir) + os.sep), encoding="utf-8")
    fsync_tree(staged)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    fsync_dir(final.parent)
    return final


def rotate(output_dir: Path, limit: int | None, keep: str | None = None) -> None:
    """Keep the newest `limit` checkpoints (and `keep`, the best one). Each old one is first renamed out of
    sight, so a kill during the slow delete never leaves a half-deleted `checkpoint-N` behind."""
    if limit is None or limit <= 0:
        return
    for old in checkpoints(output_dir)[:-limit]:
        if keep and Path(keep).name == old.name:
            continue
        trash = output_dir / STAGING / f"deleting-{old.name}"
        trash.parent.mkdir(exist_ok=True)
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_output_dir(cfg: Config, clean: bool = True) -> str | None:
    """Check the output dir before anything loads; return the checkpoint to resume from (or None).

    Only the main process (`clean`) writes or deletes anything; the others check and read.

    Raises:
        UserError: unwritable dir, too little space, a dir holding a different run (unless overwrite), a resume
            path that does not exist.
    """
    output_dir = Path(cfg.train.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output_dir {output_dir}: not writable ({err.strerror})") from None
    check_free_space(output_dir, needed=64 << 20)
    if clean:
        shutil.rmtree(output_dir / STAGING, ignore_errors=True)  # a checkpoint a killed run never finished
    if (output_dir / RUN_FILE).exists() and not cfg.train.overwrite:
        old, new = read_run_info(output_dir).get("config", {}), to_dict(cfg)
        ours = set(TRAIN.keys())
        changed = sorted(k for k in set(old) | set(new)
                         if k in ours and k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
        if changed:
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:3])
            raise UserError(f"output_dir {output_dir} holds a different run ({diff}); "
                            "use another output_dir or set overwrite: true")
    if cfg.train.overwrite and clean:
        for stale in checkpoints(output_dir):
            shutil.rmtree(stale)
        for name in ("train_log.jsonl", "loss.png"):
            (output_dir / name).unlink(missing_ok=True)
    resume = cfg.train.resume
    if resume == "never":
        return None
    if resume == "auto":
        last = latest_checkpoint(output_dir)
        if last:
            log.info("resuming from %s", last)
        return str(last) if last else None
    if not Path(resume).is_dir():
        raise UserError(f"resume: {resume} is not a checkpoint directory (use auto, never or a checkpoint-N dir)")
    return resume


def check_free_space(output_dir: Path, needed: int) -> None:
    """Refuse to start where a checkpoint cannot fit: better now than after hours, at the first save.

    Raises:
        UserError: naming the free and the needed space.
    """
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise UserError(f"output_dir {output_dir}: only {free / 2**20:.0f} MiB free, a checkpoint needs about "
                        f"{needed / 2**20:.0f} MiB; free some space or choose another output_dir")
