"""The training loop: one run folder in, checkpoints, metrics and predictions out; resumable.

``run_training(run, ctx)`` reads top to bottom:

    cfg, data     config.json as a TrainConfig; the dataset scanned and split by person (core.training.split)
    checkpoint    checkpoints/last.pt when resuming, refused when the config, the class list or the
                  split changed since it was saved (core.training.state.check_resumable)
    prepare       the model, the decoded image sources, the TrainParts (core.training.parts)
    restore       weights, optimizer, scheduler, scaler, TrainState (step, best F1, log window), RNG
    each epoch    train_one_epoch, then end_epoch: evaluate, log, best.pt and predictions, last.pt
    a cancel      last.pt where it stopped, then JobCancelled

Everything is written through core.runs.folder (see its docstring for the folder format). The data
order of epoch e is a pure function of (seed, e), so a resumed run replays the exact batch offset
and the continuation equals an uninterrupted run (bit for bit with a fixed CPU thread count,
WORKBENCH_TRAIN_THREADS; to float rounding when the job picks its thread count by measuring, the default).

metrics.jsonl records (``epoch`` is the 1-based epoch the step belongs to):
    logged steps: step, epoch, train_loss, train_acc (means over the last log_every steps), lr, images_per_s,
                  threads (torch CPU threads at that step)
    epoch ends:   step, epoch, val_loss (plain cross-entropy), val_acc, val_f1 (macro F1 over the classes
                  present, as the leaderboard), val_f1_per_class (null for a class not counted; see
                  core.evaluation.metrics)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from core import runs
from core.errors import DatasetError, JobCancelled
from core.runs.folder import RunFolder
from core.training.config import TrainConfig
from core.training.loader import Batch, CachedSource, DecodeSource, make_source
from core.training.parts import (
    FocalLoss,
    TrainParts,
    build_parts,
    lr_factor,
    make_loss,
    make_optimizer,
    make_scheduler,
    resolve_device,
    to_device,
)
from core.training.split import (
    RunData,
    StepPlan,
    epoch_order,
    epoch_positions,
    load_run_data,
    sample_seeds,
    split_indices,
    steps_per_epoch,
)
from core.training.state import LogWindow, TrainState, check_resumable, rng_state, set_rng_state

__all__ = [
    "TrainConfig", "run_training", "prepare", "train_one_epoch", "evaluate", "end_epoch", "EvalResult", "TrainJob",
    "Progress", "TrainParts", "TrainState", "LogWindow", "split_indices", "epoch_order", "sample_seeds",
    "steps_per_epoch", "StepPlan", "RunData", "load_run_data", "lr_factor", "make_loss", "make_optimizer",
    "make_scheduler", "FocalLoss", "resolve_device", "to_device", "rng_state", "set_rng_state",
]  # fmt: skip


class JobContextLike(Protocol):
    def heartbeat(self, step: int | None = None, total_steps: int | None = None, epoch: int | None = None,
                  message: str | None = None, force: bool = False) -> None: ...  # fmt: skip

    def cancel_requested(self) -> bool: ...


def _log(ctx: JobContextLike, message: str, **progress: Any) -> None:
    print(message, flush=True)  # job.log is the child's stdout
    ctx.heartbeat(message=message, **progress)


# ---- the run ------------------------------------------------------------------------------------------------


def run_training(run: RunFolder, ctx: JobContextLike) -> None:
    """Train the run folder's config (resuming from checkpoints/last.pt when present)."""
    cfg = TrainConfig.from_dict(runs.read_config(run))
    device = resolve_device(cfg.device)
    data = load_run_data(cfg)
    checkpoint = resumable_checkpoint(run, cfg, data)  # before any work: a changed run fails at once
    record_classes(run, data.classes)
    job = prepare(cfg, data, device, ctx)
    state = TrainState() if checkpoint is None else restore(run, job, checkpoint, ctx)
    plan = job.plan
    _log(ctx, f"{cfg.model} on {device.type}: {len(data.train_pos)} train / {len(data.val_pos)} val images, "
              f"{len(data.classes)} classes, {plan.steps_per_epoch} steps per epoch, {plan.total_steps} steps")  # fmt: skip
    if state.step >= plan.total_steps:
        _log(ctx, f"already complete ({state.step}/{plan.total_steps} steps): nothing to do")
        return

    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(log_dir=str(run.tensorboard), purge_step=state.step + 1 if state.step else None)
    progress = Progress(run, ctx, tb, plan, cfg.log_every)
    try:
        for epoch in range(state.step // plan.steps_per_epoch, plan.epochs):
            progress.start_epoch(epoch)
            stopped = train_one_epoch(job.parts, state, epoch_batches(job, state, epoch), job.labels, progress)
            if stopped and state.step < plan.total_steps:  # stopped with steps left: a cancel
                save_and_cancel(run, job, state, ctx)
            end_epoch(run, job, state, epoch, progress)
    finally:
        tb.close()
        _report_skipped(ctx, job.train_src, job.val_src)


def record_classes(run: RunFolder, classes: list[str]) -> None:
    """Put the dataset's class names into config.json, so the Review page and other readers of the
    run folder name a class-folder run's classes without scanning its dataset again."""
    config = runs.read_config(run)
    if config.get("classes") != list(classes):
        runs.write_config(run, {**config, "classes": list(classes)})


def resumable_checkpoint(run: RunFolder, cfg: TrainConfig, data: RunData) -> dict[str, Any] | None:
    """checkpoints/last.pt when there is one and it was trained with this config and this dataset."""
    if not run.last_checkpoint.is_file():
        return None
    ckpt = runs.load_checkpoint(run.last_checkpoint)
    check_resumable(ckpt, cfg, data.classes, data.fingerprint())
    return ckpt


@dataclass
class TrainJob:
    """Everything a run trains with, built once by ``prepare``."""

    cfg: TrainConfig
    data: RunData
    plan: StepPlan
    parts: TrainParts
    labels: torch.Tensor  # task label per frame row: a batch's targets are labels[batch.positions]
    train_src: CachedSource | DecodeSource
    val_src: CachedSource | DecodeSource
    meta: dict[str, Any]  # what every checkpoint carries for the modules that read it (plain data)
    split: dict[str, Any]  # RunData.fingerprint(), for the resume check


def prepare(cfg: TrainConfig, data: RunData, device: torch.device, ctx: JobContextLike) -> TrainJob:
    """The model first (missing pretrained weights fail before any caching), then the decoded image
    sources (the cache may be built here; a cancel stops it), then the training parts."""
    from core import settings
    from core.training import models

    torch.manual_seed(cfg.seed)  # initial weights
    model = models.build_model(cfg.model, len(data.classes), cfg.pretrained)
    train_src, val_src = make_sources(cfg, data, ctx)
    plan = StepPlan.for_run(cfg, len(data.train_pos))
    parts = build_parts(cfg, model, device, data.labels[data.train_pos], len(data.classes), plan.steps_per_epoch,
                        plan.total_steps, fixed_threads=settings.load().train_threads)  # fmt: skip
    return TrainJob(cfg, data, plan, parts, torch.tensor(data.labels), train_src, val_src,
                    meta=checkpoint_meta(cfg, data.classes), split=data.fingerprint())  # fmt: skip


def make_sources(cfg: TrainConfig, data: RunData, ctx: JobContextLike) -> tuple[Any, Any]:
    """Training and validation image sources (one shared source when both specs are the same)."""
    from core import settings

    def caching(done: int, total: int) -> None:
        ctx.heartbeat(message=f"caching decoded images {done}/{total}")
        if ctx.cancel_requested():  # the cache is built in a temp file: stopping here leaves nothing half-made
            raise JobCancelled("cancelled while caching images")

    paths = data.frame["path"].astype(str).tolist()
    sizes = list(zip(data.frame["height"].astype(int), data.frame["width"].astype(int), strict=True))
    cache_dir = settings.load().cache_dir

    def source(spec):
        return make_source(paths, sizes, spec, cfg.cache, cache_dir, cfg.workers, caching, lambda msg: _log(ctx, msg))

    train_src = source(cfg.train_spec)
    return train_src, train_src if cfg.eval_spec == cfg.train_spec else source(cfg.eval_spec)


def checkpoint_meta(cfg: TrainConfig, classes: list[str]) -> dict[str, Any]:
    config = cfg.to_dict()  # plain lists and dicts, whatever types TrainConfig holds its specs in
    return {"model_name": cfg.model, "task": cfg.task, "classes": list(classes), "img_size": list(cfg.img_hw),
            "eval_spec": config["eval_spec"], "train_spec": config["train_spec"], "config": config}  # fmt: skip


def restore(run: RunFolder, job: TrainJob, ckpt: dict[str, Any], ctx: JobContextLike) -> TrainState:
    """Load ``ckpt`` into the job's parts and the process RNG; return its TrainState."""
    job.parts.load_checkpoint(ckpt, job.cfg.model, len(job.data.classes))
    state = TrainState.from_checkpoint(ckpt)
    set_rng_state(ckpt["rng"])
    runs.truncate_metrics(run, after_step=state.step)  # lines a crash wrote after this checkpoint
    _log(ctx, f"resuming from step {state.step}/{job.plan.total_steps}")
    return state


def epoch_batches(job: TrainJob, state: TrainState, epoch: int) -> Iterable[Batch]:
    positions, seeds = epoch_positions(job.data, job.cfg, job.plan, epoch, state.step)
    return job.train_src.batches(positions, seeds, job.cfg.batch_size)


def save_last(run: RunFolder, job: TrainJob, state: TrainState) -> None:
    runs.save_checkpoint(run.last_checkpoint,
                         {**job.meta, **job.parts.to_checkpoint(), **state.to_checkpoint(), "split": job.split})  # fmt: skip


def save_and_cancel(run: RunFolder, job: TrainJob, state: TrainState, ctx: JobContextLike) -> None:
    """Save last.pt where the run stopped, then raise JobCancelled."""
    state.epoch = state.step // job.plan.steps_per_epoch  # whole epochs; resume replays this one from its offset
    save_last(run, job, state)
    _log(ctx, f"cancelled at step {state.step}/{job.plan.total_steps}; checkpoint saved")
    raise JobCancelled(f"cancelled at step {state.step}")


# ---- reporting ---------------------------------------------------------------------------------------------


class Progress:
    """Where a run reports: metrics.jsonl, TensorBoard scalars, status.json heartbeats and job.log."""

    def __init__(self, run: RunFolder, ctx: JobContextLike, tb: Any, plan: StepPlan, log_every: int):
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
        if step % self.log_every == 0 or step == total:
            loss, acc, images_per_s = state.window.means()
            record = {"step": step, "epoch": self.epoch, "train_loss": loss, "train_acc": acc, "lr": lr,
                      "images_per_s": images_per_s, "threads": torch.get_num_threads()}  # fmt: skip
            runs.append_metrics(self.run, record)
            self.tb.add_scalar("Train/loss", record["train_loss"], step)
            self.tb.add_scalar("Train/accuracy", record["train_acc"], step)
            self.tb.add_scalar("Train/lr", record["lr"], step)
            state.window = LogWindow()
        self.ctx.heartbeat(step=step, total_steps=total, epoch=self.epoch,
                           message=f"epoch {self.epoch}/{self.plan.epochs} step {step}/{total}")  # fmt: skip

    def epoch_end(self, state: TrainState, result: EvalResult) -> None:
        runs.append_metrics(self.run, {"step": state.step, "epoch": self.epoch, "val_loss": result.loss, "val_acc": result.acc,
                                       "val_f1": result.f1, "val_f1_per_class": result.f1_per_class})  # fmt: skip
        self.tb.add_scalar("Val/loss", result.loss, state.step)
        self.tb.add_scalar("Val/accuracy", result.acc, state.step)
        self.tb.add_scalar("Val/f1", result.f1, state.step)
        self.tb.flush()
        # Step heartbeats are throttled; an epoch end always reaches status.json with its step.
        _log(self.ctx, f"epoch {self.epoch}/{self.plan.epochs} step {state.step}/{self.plan.total_steps}: "
                       f"val_loss {result.loss:.4f} val_acc {result.acc:.4f} val_f1 {result.f1:.4f}",
             step=state.step, total_steps=self.plan.total_steps, epoch=self.epoch, force=True)  # fmt: skip


# ---- one epoch, one evaluation ------------------------------------------------------------------------------


def train_one_epoch(
    parts: TrainParts, state: TrainState, batches: Iterable[Batch], labels: torch.Tensor, progress: Progress
) -> bool:
    """Train over ``batches``; ``labels[batch.positions]`` are the targets. True when stopped early.

    ``progress.stop_before_step`` is asked before each step (step budget, cancel), so a stop always
    lands between two steps."""
    parts.model.train()
    amp = parts.device.type == "cuda"
    state.window.started = time.perf_counter()  # images_per_s counts training only, not evaluation
    if parts.governor is not None:
        parts.governor.restart()
    for batch in batches:
        if progress.stop_before_step(state):
            return True
        x = to_device(batch.images, parts.device, parts.channels_last)
        y = labels[batch.positions].to(parts.device, non_blocking=True)
        with torch.autocast(device_type=parts.device.type, dtype=torch.float16, enabled=amp):
            logits = parts.model(x)
            loss = parts.loss_fn(logits.float(), y)
        parts.optimizer.zero_grad(set_to_none=True)
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        parts.scheduler.step()
        state.record_step(float(loss.detach()), int((logits.argmax(1) == y).sum()), len(y))
        if parts.governor is not None:
            parts.governor.step(len(y))
        progress.train_step(state, parts.scheduler.get_last_lr()[0])
    return False


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


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[Batch], labels: torch.Tensor, num_classes: int, device: torch.device,
    channels_last: bool = False,
) -> EvalResult:  # fmt: skip
    """Loss (plain cross-entropy), accuracy, macro F1 with per-class F1, and per-image probabilities."""
    from core.evaluation import metrics

    model.eval()
    amp = device.type == "cuda"
    probs, losses, positions = [], [], []
    for batch in batches:
        x = to_device(batch.images, device, channels_last)
        y = labels[batch.positions].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(x).float()
        losses.append(F.cross_entropy(logits, y, reduction="none").cpu())
        probs.append(logits.softmax(1).cpu())
        positions.append(batch.positions)
    if not positions:
        raise DatasetError("no validation image could be read")
    p = torch.cat(probs).numpy()
    pos = np.concatenate(positions)
    true, pred = labels[pos].numpy(), p.argmax(1)
    per_class = metrics.per_class_f1(true, pred, num_classes)
    loss = torch.cat(losses).numpy()
    return EvalResult(
        loss=float(loss.mean()), acc=metrics.accuracy(true, pred), f1=metrics.macro_f1(true, pred),
        f1_per_class=[None if math.isnan(v) else float(v) for v in per_class], positions=pos, probs=p, losses=loss,
    )  # fmt: skip


def end_epoch(run: RunFolder, job: TrainJob, state: TrainState, epoch: int, progress: Progress) -> None:
    """After epoch ``epoch`` (0-based): evaluate, log, keep the best model and its predictions, save last.pt."""
    val_pos = job.data.val_pos
    batches = job.val_src.batches(val_pos, np.zeros(len(val_pos), np.int64), job.cfg.batch_size)
    result = evaluate(
        job.parts.model, batches, job.labels, len(job.data.classes), job.parts.device, job.parts.channels_last
    )
    state.epoch = epoch + 1
    progress.epoch_end(state, result)
    if result.f1 > state.best_val_f1:
        state.best_val_f1 = result.f1
        write_val_predictions(run, job.data, result)
        runs.save_checkpoint(run.best_checkpoint, {**job.meta, "model": job.parts.model.state_dict(), "epoch": state.epoch,
                                                   "step": state.step, "val_f1": result.f1})  # fmt: skip
    save_last(run, job, state)


def write_val_predictions(run: RunFolder, data: RunData, result: EvalResult) -> None:
    rows = data.frame.iloc[result.positions]
    frame = pd.DataFrame({
        "path": rows["path"].astype(str).to_numpy(), "group": rows["group"].astype(str).to_numpy(),
        "label": data.labels[result.positions], "pred": result.preds, "loss": result.losses,
    })  # fmt: skip
    probs = pd.DataFrame(result.probs, columns=[f"p{i}" for i in range(result.probs.shape[1])])
    runs.write_predictions(run.val_predictions, pd.concat([frame, probs], axis=1))


def _report_skipped(ctx: JobContextLike, *sources) -> None:
    reasons: dict[int, str] = {}
    for src in sources:
        reasons.update(src.skipped.reasons)
    if reasons:
        shown = "; ".join(list(reasons.values())[:5])
        _log(ctx, f"skipped {len(reasons)} unreadable images: {shown}")
