"""One epoch of training steps and one evaluation: explicit arguments, no run-folder writes."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DatasetError
from core.training import finetune
from core.training.distributed import SINGLE, Group
from core.training.loader import Batch
from core.training.parts import TrainParts
from core.training.parts import autocast as autocast_for
from core.training.progress import EvalResult, Progress
from core.training.state import TrainState


def train_one_epoch(
    parts: TrainParts,
    state: TrainState,
    batches: Iterable[Batch],
    labels: torch.Tensor,
    progress: Progress,
    group: Group = SINGLE,
) -> bool:
    """Train over ``batches``; ``labels[batch.positions]`` are the targets. True when stopped early.

    ``progress.stop_before_step`` is asked before each step (step budget, cancel), so a stop always
    lands between two steps; with several processes the ranks agree on it (rank 0's cancel counts),
    and an epoch ends for all when one rank's batches end."""
    finetune.train_mode(parts.model)
    state.window.started = time.perf_counter()  # images_per_s counts training only, not evaluation
    if parts.governor is not None:
        parts.governor.restart()
    steps = iter(batches)
    try:
        while True:
            batch = next(steps, None)
            if not group.active:
                if batch is None:
                    return False
                if progress.stop_before_step(state):
                    return True
            else:
                stop, ended = group.any(progress.stop_before_step(state), batch is None)
                if ended:
                    return False
                if stop:
                    return True
            train_step(parts, state, batch, labels, group)
            progress.train_step(state, parts.scheduler.get_last_lr()[0])
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()  # stops a prefetching thread before anything reads the RNG state (a cancel's checkpoint)


def train_step(parts: TrainParts, state: TrainState, batch: Batch, labels: torch.Tensor, group: Group = SINGLE) -> None:
    """One optimizer step on ``batch`` (this rank's slice of the global batch)."""
    x = batch.to(parts.device, parts.channels_last)
    y = labels[batch.positions].to(parts.device, non_blocking=True)
    with parts.autocast():
        logits = parts.net(x)
        loss = parts.loss_fn(logits.float(), y)
    parts.optimizer.zero_grad(set_to_none=True)
    # Weighted by this rank's share of the global batch: DDP's mean over ranks is then the whole batch's mean.
    parts.scaler.scale(loss * batch.share if group.active else loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    correct = (logits.argmax(1) == y).sum()
    if group.active:
        loss_sum, right, seen = group.sums([loss.detach() * len(y), correct, len(y)])
        state.record_step(loss_sum / seen, int(right), int(seen))
    else:
        state.record_step(float(loss.detach()), int(correct), len(y))
    parts.after_step(state.step)
    if parts.governor is not None:
        parts.governor.step(len(y))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    labels: torch.Tensor,
    num_classes: int,
    device: torch.device,
    channels_last: bool = False,
    amp_dtype: torch.dtype | None = None,
    group: Group = SINGLE,
) -> EvalResult:
    """Loss (plain cross-entropy), accuracy, macro F1 with per-class F1, and per-image probabilities.

    With several processes each evaluates its ``batches`` and the results are gathered: every rank gets
    the metrics of all validation images, in the one-process order (by position)."""
    from core.evaluation import metrics

    model.eval()
    probs, losses, positions = [], [], []
    for batch in batches:
        x = batch.to(device, channels_last)
        y = labels[batch.positions].to(device)
        with autocast_for(device, amp_dtype):
            logits = model(x).float()
        losses.append(F.cross_entropy(logits, y, reduction="none").cpu())
        probs.append(logits.softmax(1).cpu())
        positions.append(batch.positions)
    p = torch.cat(probs).numpy() if probs else np.zeros((0, num_classes), np.float32)
    loss = torch.cat(losses).numpy() if losses else np.zeros(0, np.float32)
    pos = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    if group.active:
        pos, p, loss = (np.concatenate(part) for part in zip(*group.gather((pos, p, loss)), strict=True))
        order = np.argsort(pos, kind="stable")
        pos, p, loss = pos[order], p[order], loss[order]
    if not len(pos):
        raise DatasetError("no validation image could be read")
    true, pred = labels[pos].numpy(), p.argmax(1)
    per_class = metrics.per_class_f1(true, pred, num_classes)
    return EvalResult(
        loss=float(loss.mean()),
        acc=metrics.accuracy(true, pred),
        f1=metrics.macro_f1(true, pred),
        f1_per_class=[None if math.isnan(v) else float(v) for v in per_class],
        positions=pos,
        probs=p,
        losses=loss,
    )
