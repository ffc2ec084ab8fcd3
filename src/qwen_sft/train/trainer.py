"""`SFTTrainer`: transformers' Trainer with a token-mean loss, staged checkpoints, a NaN stop and our logs.

What it adds, and why:
  loss        the model returns the SUM of token losses (`train_model.use_chunked_loss`); it is divided by the
              trained-token count of the whole accumulated batch (`num_items_in_batch`), so gradient
              accumulation and several processes give a true token mean.
  no syncs    nothing in a micro-step waits for the device: trained-token counts come from the collator as
              Python ints, and finiteness is a device-side flag read at logging steps and when a checkpoint
              is published.
  checkpoints written under `.staging/`, then renamed into place once their weights gave a finite loss
              (`checkpoints.publish`); each one gets the run's run_config.yaml.
  NaN stop    a non-finite loss (or non-finite weights about to be saved) stops the run, leaving the last
              good checkpoint resumable.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch
from transformers import Trainer

from qwen_sft.preflight.measure import batch_shape
from qwen_sft.preflight.step_timer import StepTimer
from qwen_sft.runs.checkpoints import STAGING, publish, rotate
from qwen_sft.runs.train_log import TrainLog

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


class SFTTrainer(Trainer):
    """Args (besides Trainer's):
        describe: writes the run's metadata into a directory (each checkpoint gets it).
        tokens_before_resume: trained tokens counted by the run this one resumes.
    """

    def __init__(self, *args, describe=None, tokens_before_resume: int = 0, step_timer: StepTimer | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.step_timer = step_timer  # times the first steps for the forecast (preflight/step_timer.py)
        if step_timer is not None:
            self.add_callback(step_timer)
        self.model_accepts_loss_kwargs = True  # ask the Trainer for num_items_in_batch (trained tokens/step)
        self._loss_shifts_labels = True
        self.describe = describe
        self.train_log = TrainLog(self.args.output_dir)
        self.tokens_before_resume = tokens_before_resume
        self._tokens_local = 0  # trained tokens seen by this process since the last log
        self._tokens_total = 0
        self._last_log_time = time.perf_counter()
        self._finite = None  # device-side flag: every loss since the last check was finite
        self._unpublished = None  # step of a checkpoint staged but not yet moved into place

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        n_tokens = inputs.pop("num_trained")  # counted by the collator on the host (data/collate.py)
        seq_lengths = inputs.pop("seq_lengths", None)
        if self.step_timer is not None and model.training:
            self.step_timer.batch(batch_shape({**inputs, "seq_lengths": seq_lengths}, n_tokens))
        loss_sum = model(**inputs).loss
        finite = torch.isfinite(loss_sum)
        self._finite = finite if self._finite is None else self._finite & finite
        if model.training:
            self._tokens_local += n_tokens
            if self._unpublished is not None:
                self.publish_checkpoint(loss_sum)
        if num_items_in_batch is None:
            loss = loss_sum / max(n_tokens, 1)
        else:  # mean over every trained token of the accumulated (and all-process) batch
            loss = loss_sum / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        return (loss, {}) if return_outputs else loss  # no logits: they are never built

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        started = time.perf_counter()
        out = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.step_timer is not None:
            self.step_timer.fetched(time.perf_counter() - started)
        return out

    def log(self, logs: dict, start_time=None):
        if "loss" in logs:  # training log: the NaN check, token counts and throughput
            if not math.isfinite(logs["loss"]) or (self._finite is not None and not bool(self._finite)):
                raise NonFiniteLoss(f"loss is {logs['loss'] if not math.isfinite(logs['loss']) else 'nan'} at step "
                                    f"{self.state.global_step} (learning_rate={self.args.learning_rate})")
            self._finite = None
            tokens = self._tokens_local
            if self.accelerator.num_processes > 1:
                tokens = int(self.accelerator.reduce(torch.tensor(tokens, device=self.args.device), reduction="sum"))
            now = time.perf_counter()
            self._tokens_total += tokens
            logs["tokens"] = self._tokens_total + self.tokens_before_resume
            logs["tokens_per_s"] = round(tokens / max(now - self._last_log_time, 1e-9), 1)
            self._tokens_local, self._last_log_time = 0, now
        super().log(logs, start_time)
        if self.is_world_process_zero():
            self.train_log.append(self.state.global_step, self.state.epoch, logs)

    def _get_output_dir(self, trial):
        return os.path.join(self.args.output_dir, STAGING)  # the base class writes checkpoint-N here

    def _save_checkpoint(self, model, trial):
        for name, param in self.model.named_parameters():  # one sync per checkpoint, not per step
            if param.requires_grad and not torch.isfinite(param).all():
                raise NonFiniteLoss(f"weights became non-finite ({name}) after step {self.state.global_step}")
        super()._save_checkpoint(model, trial)  # → OUTPUT_DIR/.staging/checkpoint-N
        if self.is_world_process_zero() and self.describe:
            self.describe(Path(self.args.output_dir) / STAGING / f"checkpoint-{self.state.global_step}")
        self.accelerator.wait_for_everyone()  # every process has written its RNG state
        self._unpublished = self.state.global_step

    def publish_checkpoint(self, loss_sum: torch.Tensor | None = None) -> None:
        """Move the staged checkpoint into place, once its weights have produced a finite loss (`loss_sum`, the
        next forward's; None at the end of training).

        Finite weights can still be garbage (after a huge step); the next forward tells. Until then the
        previous checkpoint stays the newest one `resume: auto` sees.

        Raises:
            NonFiniteLoss: the weights of the staged checkpoint gave a non-finite loss.
        """
        if self._unpublished is None:
            return
        if loss_sum is not None and not bool(torch.isfinite(loss_sum)):
            raise NonFiniteLoss(f"loss is {loss_sum.item()} at step {self.state.global_step + 1} "
                                f"(learning_rate={self.args.learning_rate})")
        if self.is_world_process_zero():
            output_dir = Path(self.args.output_dir)
            final = publish(output_dir, self._unpublished)
            best = self.state.best_model_checkpoint
            if best and Path(best).name == final.name and Path(best).parent.name == STAGING:
                self.state.best_model_checkpoint = str(final)  # the Trainer recorded the staging path
            rotate(output_dir, self.args.save_total_limit, keep=self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()
        self._unpublished = None

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        # The saved states carry the old peak learning rate; a run resumed after a NaN stop is expected
        # to lower it, so the configured one wins: rescale the schedule and the current step's rate.
        scheduler = self.lr_scheduler
        if not checkpoint or not getattr(scheduler, "base_lrs", None) or not scheduler.base_lrs[0]:
            return
        scale = self.args.learning_rate / scheduler.base_lrs[0]
        if scale != 1.0:
            log.info("learning_rate changed on resume: schedule rescaled by %g", scale)
            scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
            for group in self.optimizer.param_groups:
                group["lr"] *= scale
                group["initial_lr"] = group.get("initial_lr", self.args.learning_rate / scale) * scale
