"""Where a training run reports: metrics.jsonl, TensorBoard scalars, status.json heartbeats and job.log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from core import runs
from core.runs.folder import RunFolder
from core.training.split import StepPlan
from core.training.state import LogWindow, TrainState


class JobContextLike(Protocol):
    def heartbeat(
        self,
        step: int | None = None,
        total_steps: int | None = None,
        epoch: int | None = None,
        message: str | None = None,
        force: bool = False,
    ) -> None: ...

    def cancel_requested(self) -> bool: ...


def _log(ctx: JobContextLike, message: str, **progress: Any) -> None:
    print(message, flush=True)  # job.log is the child's stdout
    ctx.heartbeat(message=message, **progress)


@dataclass
class EvalResult:
    loss: float
    acc: float
    f1: float  # macro F1 over the counted classes (core.evaluation.metrics.macro_f1)
    f1_per_class: list[float | None]  # one per class; None for a class the macro F1 does not count
    positions: np.ndarray
    probs: np.ndarray
    losses: np.ndarray

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)


class Progress:
    """Where a run reports: metrics.jsonl, TensorBoard scalars, status.json heartbeats and job.log."""

    def __init__(self, run: RunFolder, ctx: JobContextLike, tb: Any, plan: StepPlan, log_every: int):
        """``tb`` None: a rank other than 0 of several processes, which writes nothing."""
        self.run, self.ctx, self.tb, self.plan, self.log_every = run, ctx, tb, plan, log_every
        self.epoch = 1  # the 1-based epoch being trained

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1

    def stop_before_step(self, state: TrainState) -> bool:
        """True when the step budget is spent or a cancel was asked for (checked in that order)."""
        return state.step >= self.plan.total_steps or self.ctx.cancel_requested()

    def train_step(self, state: TrainState, lr: float) -> None:
        """Log the window every log_every steps and at the last step; beat the heartbeat (throttled)."""
        step, total = state.step, self.plan.total_steps
        if self.tb is None:
            if step % self.log_every == 0 or step == total:
                state.window = LogWindow()
            return
        if step % self.log_every == 0 or step == total:
            loss, acc, images_per_s = state.window.means()
            record = {"step": step, "epoch": self.epoch, "train_loss": loss, "train_acc": acc, "lr": lr,
                      "images_per_s": images_per_s, "threads": torch.get_num_threads()}  # fmt: skip
            runs.append_metrics(self.run, record)
            self.tb.add_scalar("Train/loss", record["train_loss"], step)
            self.tb.add_scalar("Train/accuracy", record["train_acc"], step)
            self.tb.add_scalar("Train/lr", record["lr"], step)
            state.window = LogWindow()
        self.ctx.heartbeat(
            step=step,
            total_steps=total,
            epoch=self.epoch,
            message=f"epoch {self.epoch}/{self.plan.epochs} step {step}/{total}",
        )

    def epoch_end(self, state: TrainState, result: EvalResult) -> None:
        if self.tb is None:
            return
        runs.append_metrics(
            self.run,
            {
                "step": state.step,
                "epoch": self.epoch,
                "val_loss": result.loss,
                "val_acc": result.acc,
                "val_f1": result.f1,
                "val_f1_per_class": result.f1_per_class,
            },
        )
        self.tb.add_scalar("Val/loss", result.loss, state.step)
        self.tb.add_scalar("Val/accuracy", result.acc, state.step)
        self.tb.add_scalar("Val/f1", result.f1, state.step)
        self.tb.flush()
        # Step heartbeats are throttled; an epoch end always reaches status.json with its step.
        _log(
            self.ctx,
            f"epoch {self.epoch}/{self.plan.epochs} step {state.step}/{self.plan.total_steps}: "
            f"val_loss {result.loss:.4f} val_acc {result.acc:.4f} val_f1 {result.f1:.4f}",
            step=state.step,
            total_steps=self.plan.total_steps,
            epoch=self.epoch,
            force=True,
        )
