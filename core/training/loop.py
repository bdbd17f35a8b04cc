"""The training loop: one run folder in, checkpoints, metrics and predictions out; resumable.

``run_training(run, ctx)`` reads top to bottom:

    cfg, data     config.json as a TrainConfig; the dataset scanned and split by person (core.training.split)
    checkpoint    checkpoints/last.pt when resuming, refused when the config, the class list or the
                  split changed since it was saved (core.training.state.check_resumable)
    prepare       the model, the decoded image sources, the TrainParts (core.training.parts)
    restore       weights, optimizer, scheduler, scaler, EMA, TrainState (step, best F1, log window), RNG
    each epoch    head only or everything (core.training.finetune), train_one_epoch, then end_epoch:
                  evaluate (the EMA weights when there are), log, best.pt and predictions, last.pt
    a cancel      last.pt where it stopped, then JobCancelled

Several processes (torchrun, core.training.distributed): ``group`` says which rank this is. Every
rank trains its slice of each global batch and evaluates its slice of the validation set; the slices'
results are gathered; rank 0 alone writes the run folder; stops are agreed on at every step.

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

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from core import runs
from core.errors import ConfigError, JobCancelled
from core.runs.folder import RunFolder
from core.training import finetune
from core.training.config import TrainConfig
from core.training.distributed import SINGLE, Group
from core.training.loader import Batch, CachedSource, DecodeSource, make_source, prefetched, resolve_workers
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
from core.training.progress import JobContextLike, Progress, _log
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
from core.training.steps import EvalResult, evaluate, train_one_epoch

__all__ = [
    "TrainConfig", "run_training", "prepare", "train_one_epoch", "evaluate", "end_epoch", "EvalResult", "TrainJob",
    "Progress", "TrainParts", "TrainState", "LogWindow", "split_indices", "epoch_order", "sample_seeds",
    "steps_per_epoch", "StepPlan", "RunData", "load_run_data", "lr_factor", "make_loss", "make_optimizer",
    "make_scheduler", "FocalLoss", "resolve_device", "to_device", "rng_state", "set_rng_state",
]  # fmt: skip


# ---- the run ------------------------------------------------------------------------------------------------


def run_training(run: RunFolder, ctx: JobContextLike, group: Group = SINGLE) -> None:
    """Train the run folder's config (resuming from checkpoints/last.pt when present)."""
    cfg = TrainConfig.from_dict(runs.read_config(run))
    device = group.device or resolve_device(cfg.device)
    data = load_run_data(cfg)
    checkpoint = resumable_checkpoint(run, cfg, data)  # before any work: a changed run fails at once
    if group.active and cfg.batch_size < group.world:
        raise ConfigError(f"batch_size: {cfg.batch_size} images cannot be split over {group.world} processes")
    if group.is_main:
        record_classes(run, data.classes)
    job = prepare(cfg, data, device, ctx, group)
    state = TrainState() if checkpoint is None else restore(run, job, checkpoint, ctx)
    plan = job.plan
    _log(
        ctx,
        f"{cfg.model} on {device.type}{f' x {group.world} processes' if group.active else ''}: "
        f"{len(data.train_pos)} train / {len(data.val_pos)} val images, {len(data.classes)} classes, "
        f"{plan.steps_per_epoch} steps per epoch, {plan.total_steps} steps{_speed_note(job.parts)}",
    )
    if state.step >= plan.total_steps:
        _log(ctx, f"already complete ({state.step}/{plan.total_steps} steps): nothing to do")
        return

    tb = None
    if group.is_main:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(log_dir=str(run.tensorboard), purge_step=state.step + 1 if state.step else None)
    progress = Progress(run, ctx, tb, plan, cfg.log_every)
    try:
        for epoch in range(state.step // plan.steps_per_epoch, plan.epochs):
            progress.start_epoch(epoch)
            job.parts.set_head_only(finetune.head_only(cfg, epoch))
            stopped = train_one_epoch(job.parts, state, epoch_batches(job, state, epoch), job.labels, progress, group)
            if stopped and state.step < plan.total_steps:  # stopped with steps left: a cancel
                save_and_cancel(run, job, state, ctx)
            end_epoch(run, job, state, epoch, progress)
    finally:
        if tb is not None:
            tb.close()
        _report_skipped(ctx, job.train_src, job.val_src)


def _speed_note(parts: TrainParts) -> str:
    notes = [f"autocast {str(parts.amp_dtype).removeprefix('torch.')}" if parts.amp_dtype else "",
             "channels_last" if parts.channels_last else "", f"EMA ({parts.ema.backend})" if parts.ema else ""]  # fmt: skip
    shown = ", ".join(n for n in notes if n)
    return f"; {shown}" if shown else ""


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
    group: Group = SINGLE  # this process among the run's processes

    def feed(self, batches: Iterable[Batch]) -> Iterable[Batch]:
        """On CUDA the next batches are read and pinned in a thread while the GPU works."""
        return prefetched(batches) if self.parts.device.type == "cuda" else batches


def prepare(
    cfg: TrainConfig, data: RunData, device: torch.device, ctx: JobContextLike, group: Group = SINGLE
) -> TrainJob:
    """The model first (missing pretrained weights fail before any caching), then the decoded image
    sources (the cache may be built here, by one process per machine; a cancel stops it), then the
    training parts."""
    from core import settings
    from core.training import models

    def build() -> nn.Module:
        torch.manual_seed(cfg.seed)  # initial weights (the same on every rank)
        return models.build_model(cfg.model, len(data.classes), cfg.pretrained, progress=lambda line: _log(ctx, line))

    model = group.machine_first("model", build)  # pretrained weights: downloaded once per machine
    train_src, val_src = group.machine_first("sources", lambda: make_sources(cfg, data, ctx, device, group))
    plan = StepPlan.for_run(cfg, len(data.train_pos))
    threads = settings.load().train_threads
    if group.active and device.type == "cpu":  # processes sharing the cores: no thread measuring, a fixed share
        threads = threads or max(1, (os.cpu_count() or 1) // group.local_world)
    parts = build_parts(
        cfg,
        model,
        device,
        data.labels[data.train_pos],
        len(data.classes),
        plan.steps_per_epoch,
        plan.total_steps,
        fixed_threads=threads,
        wrap=group.wrap if group.active else None,
        log=lambda msg: _log(ctx, msg),
    )
    return TrainJob(
        cfg,
        data,
        plan,
        parts,
        torch.tensor(data.labels),
        train_src,
        val_src,
        meta=checkpoint_meta(cfg, data.classes),
        split=data.fingerprint(),
        group=group,
    )


def make_sources(
    cfg: TrainConfig, data: RunData, ctx: JobContextLike, device: torch.device | None = None, group: Group = SINGLE
) -> tuple[Any, Any]:
    """Training and validation image sources (one shared source when both specs are the same)."""
    from core import settings

    device_type = device.type if device is not None else "cpu"
    workers = resolve_workers(cfg.workers, device_type, group.local_world)

    def caching(done: int, total: int) -> None:
        ctx.heartbeat(message=f"caching decoded images {done}/{total}")
        if ctx.cancel_requested():  # the cache is built in a temp file: stopping here leaves nothing half-made
            raise JobCancelled("cancelled while caching images")

    paths = data.frame["path"].astype(str).tolist()
    sizes = list(zip(data.frame["height"].astype(int), data.frame["width"].astype(int), strict=True))
    cache_dir = settings.load().cache_dir

    def source(spec):
        return make_source(
            paths,
            sizes,
            spec,
            cfg.cache,
            cache_dir,
            workers,
            caching,
            lambda msg: _log(ctx, msg),
            device_finish=device_type == "cuda",
        )

    train_src = source(cfg.train_spec)
    return train_src, train_src if cfg.eval_spec == cfg.train_spec else source(cfg.eval_spec)


def checkpoint_meta(cfg: TrainConfig, classes: list[str]) -> dict[str, Any]:
    config = cfg.to_dict()  # plain lists and dicts, whatever types TrainConfig holds its specs in
    return {
        "model_name": cfg.model,
        "task": cfg.task,
        "classes": list(classes),
        "img_size": list(cfg.img_hw),
        "eval_spec": config["eval_spec"],
        "train_spec": config["train_spec"],
        "config": config,
    }


def restore(run: RunFolder, job: TrainJob, ckpt: dict[str, Any], ctx: JobContextLike) -> TrainState:
    """Load ``ckpt`` into the job's parts and the process RNG; return its TrainState."""
    job.parts.load_checkpoint(ckpt, job.cfg.model, len(job.data.classes))
    state = TrainState.from_checkpoint(ckpt)
    set_rng_state(ckpt["rng"])
    if job.group.is_main:
        runs.truncate_metrics(run, after_step=state.step)  # lines a crash wrote after this checkpoint
    _log(ctx, f"resuming from step {state.step}/{job.plan.total_steps}")
    return state


def epoch_batches(job: TrainJob, state: TrainState, epoch: int) -> Iterable[Batch]:
    """This rank's slice of each global batch of epoch ``epoch``, from ``state.step`` on."""
    positions, seeds = epoch_positions(job.data, job.cfg, job.plan, epoch, state.step)
    shard = (job.group.rank, job.group.world)
    return job.feed(job.train_src.batches(positions, seeds, job.cfg.batch_size, shard))


def save_last(run: RunFolder, job: TrainJob, state: TrainState) -> None:
    if job.group.is_main:
        runs.save_checkpoint(
            run.last_checkpoint, {**job.meta, **job.parts.to_checkpoint(), **state.to_checkpoint(), "split": job.split}
        )


def save_and_cancel(run: RunFolder, job: TrainJob, state: TrainState, ctx: JobContextLike) -> None:
    """Save last.pt where the run stopped, then raise JobCancelled."""
    state.epoch = state.step // job.plan.steps_per_epoch  # whole epochs; resume replays this one from its offset
    save_last(run, job, state)
    _log(ctx, f"cancelled at step {state.step}/{job.plan.total_steps}; checkpoint saved")
    raise JobCancelled(f"cancelled at step {state.step}")


def end_epoch(run: RunFolder, job: TrainJob, state: TrainState, epoch: int, progress: Progress) -> None:
    """After epoch ``epoch`` (0-based): evaluate, log, keep the best model and its predictions, save last.pt.

    The evaluated model is the EMA when there is one; best.pt holds the weights that were evaluated."""
    group, parts = job.group, job.parts
    val_pos = job.data.val_pos
    model = parts.eval_model
    group.broadcast_buffers(model)  # rank 0's BatchNorm statistics: the ones its checkpoint holds
    batches = job.val_src.batches(
        val_pos, np.zeros(len(val_pos), np.int64), job.cfg.batch_size, (group.rank, group.world)
    )
    from core.evaluation import embeddings

    # The head's inputs, recorded during the same forward passes (no second pass): the Review page's
    # embedding map. One process sees every validation image in order; several see shards, and
    # `python -m core embed` computes the map afterwards instead.
    with embeddings.capture_head_inputs(model) if group.world == 1 else contextlib.nullcontext() as captured:
        result = evaluate(
            model,
            job.feed(batches),
            job.labels,
            len(job.data.classes),
            parts.device,
            parts.channels_last,
            parts.amp_dtype,
            group,
        )
    state.epoch = epoch + 1
    progress.epoch_end(state, result)
    if result.f1 > state.best_val_f1:
        state.best_val_f1 = result.f1
        if group.is_main:
            frame = write_val_predictions(run, job.data, result)
            if captured is not None:
                embeddings.save_run_embeddings(run, captured.array(), frame)
            runs.save_checkpoint(
                run.best_checkpoint,
                {
                    **job.meta,
                    "model": model.state_dict(),
                    "epoch": state.epoch,
                    "step": state.step,
                    "val_f1": result.f1,
                },
            )
    save_last(run, job, state)


def write_val_predictions(run: RunFolder, data: RunData, result: EvalResult) -> pd.DataFrame:
    rows = data.frame.iloc[result.positions]
    frame = pd.DataFrame(
        {
            "path": rows["path"].astype(str).to_numpy(),
            "group": rows["group"].astype(str).to_numpy(),
            "label": data.labels[result.positions],
            "pred": result.preds,
            "loss": result.losses,
        }
    )
    probs = pd.DataFrame(result.probs, columns=[f"p{i}" for i in range(result.probs.shape[1])])
    predictions = pd.concat([frame, probs], axis=1)
    runs.write_predictions(run.val_predictions, predictions)
    return predictions


def _report_skipped(ctx: JobContextLike, *sources) -> None:
    reasons: dict[int, str] = {}
    for src in sources:
        reasons.update(src.skipped.reasons)
    if reasons:
        shown = "; ".join(list(reasons.values())[:5])
        _log(ctx, f"skipped {len(reasons)} unreadable images: {shown}")
