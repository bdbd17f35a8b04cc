"""The training loop: one run folder in, checkpoints, metrics and predictions out; resumable.

``run_training(run, ctx)`` reads ``config.json`` (a TrainConfig), splits the dataset by person,
trains with ``train_one_epoch`` / ``evaluate`` and writes everything through core.runs.folder (see its
docstring for the folder format). When ``checkpoints/last.pt`` exists it resumes from it: model,
optimizer, scheduler, scaler, step, RNG state and the running log window are restored, and the data
order of epoch e is a pure function of (seed, e), so the continuation equals an uninterrupted run
(bit for bit with a fixed CPU thread count, WORKBENCH_TRAIN_THREADS; to float rounding when the
job picks its thread count by measuring, the default).

metrics.jsonl records (``epoch`` is the 1-based epoch the step belongs to):
    logged steps: step, epoch, train_loss, train_acc (means over the last log_every steps), lr, images_per_s,
                  threads (torch CPU threads at that step)
    epoch ends:   step, epoch, val_loss (plain cross-entropy), val_acc, val_f1 (macro), val_f1_per_class
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from core import runs
from core.errors import ConfigError, DatasetError, JobCancelled
from core.runs.folder import RunFolder
from core.training.config import TrainConfig
from core.training.cputhreads import ThreadGovernor
from core.training.loader import Batch, make_source

__all__ = ["TrainConfig", "run_training", "train_one_epoch", "evaluate", "split_indices"]


class JobContextLike(Protocol):
    def heartbeat(self, step: int | None = None, total_steps: int | None = None, epoch: int | None = None,
                  message: str | None = None, force: bool = False) -> None: ...  # fmt: skip

    def cancel_requested(self) -> bool: ...


# ---- data split ------------------------------------------------------------------------------------------


def split_indices(
    labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int, n_folds: int = 0, fold: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions: no group on both sides, classes stratified (scikit-learn underneath).

    n_folds > 0: fold ``fold`` of StratifiedGroupKFold(n_folds). Otherwise one fold of
    StratifiedGroupKFold(round(1 / val_fraction)), or StratifiedShuffleSplit when every group is unique.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ConfigError(f"task: the dataset has a single class ({classes.tolist()}); training needs at least two")
    n_groups = len(np.unique(groups))
    splits = n_folds or max(2, round(1 / val_fraction))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        if not n_folds and n_groups == len(groups):
            try:
                sss = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
                train, val = next(sss.split(np.zeros(len(labels)), labels))
            except ValueError:  # a class with one image cannot be stratified: fall back to a group k-fold
                train, val = _group_fold(labels, groups, splits, seed, 0, StratifiedGroupKFold)
        else:
            if splits > n_groups:
                raise ConfigError(
                    f"{'n_folds' if n_folds else 'val_fraction'}: {splits} folds need at least {splits} people/groups, "
                    f"the dataset has {n_groups}"
                )
            train, val = _group_fold(labels, groups, splits, seed, fold, StratifiedGroupKFold)
    if len(train) == 0 or len(val) == 0:
        side = "training" if len(train) == 0 else "validation"
        raise ConfigError(f"val_fraction: the {side} split is empty ({n_groups} groups); use more data or another val_fraction")
    if len(np.unique(labels[train])) < 2:
        raise ConfigError("val_fraction: the training split holds a single class; use more data or a smaller val_fraction")
    return np.sort(train), np.sort(val)


def _group_fold(labels, groups, splits, seed, fold, kfold_cls) -> tuple[np.ndarray, np.ndarray]:
    kfold = kfold_cls(n_splits=splits, shuffle=True, random_state=seed)
    for i, (train, val) in enumerate(kfold.split(np.zeros(len(labels)), labels, groups)):
        if i == fold:
            return train, val
    raise ConfigError(f"fold: {fold} is out of range for {splits} folds")


# ---- epoch plan (a pure function of seed and epoch, so resume replays it) ---------------------------------


def epoch_order(train_labels: np.ndarray, epoch: int, seed: int, balanced: bool) -> np.ndarray:
    """Indices into the training split for ``epoch``: a permutation, or a class-balanced draw."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    n = len(train_labels)
    if balanced:
        counts = np.bincount(train_labels)
        weights = torch.as_tensor(1.0 / counts[train_labels], dtype=torch.double)
        return torch.multinomial(weights, n, replacement=True, generator=g).numpy()
    return torch.randperm(n, generator=g).numpy()


def sample_seeds(epoch: int, seed: int, n: int) -> np.ndarray:
    """One augmentation seed per sample slot of ``epoch``."""
    return np.random.default_rng([seed, epoch, 7]).integers(0, 2**62, size=n, dtype=np.int64)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Full batches only (a 1-image batch breaks BatchNorm); one batch when the split is smaller."""
    return max(1, n_train // batch_size)


# ---- optimisation pieces ----------------------------------------------------------------------------------


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al.): down-weights easy examples by (1 - p_true) ** gamma."""

    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target, reduction="none")
        return ((1.0 - torch.exp(-ce)) ** self.gamma * ce).mean()


def make_loss(cfg: TrainConfig, train_labels: np.ndarray, num_classes: int) -> nn.Module:
    if cfg.loss == "label_smoothing":
        return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    if cfg.loss == "focal":
        return FocalLoss(cfg.focal_gamma)
    if cfg.loss == "weighted_ce":
        counts = np.bincount(train_labels, minlength=num_classes).clip(min=1)
        weights = len(train_labels) / (num_classes * counts)
        return nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32))
    return nn.CrossEntropyLoss()


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: TrainConfig, spe: int, total_steps: int) -> float:
    """Multiplier of cfg.lr before optimizer step ``step`` (0-based): linear warm-up, then the schedule."""
    if step < cfg.warmup_steps:
        return 0.01 + 0.99 * step / cfg.warmup_steps
    if cfg.scheduler == "step":
        return cfg.gamma ** ((step // spe) // cfg.step_size)
    if cfg.scheduler == "cosine":
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def make_scheduler(cfg: TrainConfig, optimizer, spe: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    # A closure, not a lambda object: LambdaLR then keeps only plain numbers in its state_dict.
    def factor(step: int) -> float:
        return lr_factor(step, cfg, spe, total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA GPU is visible; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---- one epoch, one evaluation ------------------------------------------------------------------------------


@dataclass
class LogWindow:
    """Running sums since the last logged step (saved in checkpoints so resume logs the same numbers)."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)

    def state(self) -> dict[str, float]:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen, "steps": self.steps}


def to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return images.to(device, non_blocking=True).contiguous(memory_format=fmt)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    labels: torch.Tensor,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    channels_last: bool,
    should_stop: Callable[[], bool],
    after_step: Callable[[float, int, int], None],
) -> bool:
    """Train over ``batches``; ``labels[positions]`` are the targets. Returns True when stopped early.

    ``should_stop`` is asked before each step (cancel, step budget) so a stop always lands between steps.
    """
    model.train()
    amp = device.type == "cuda"
    for batch in batches:
        if should_stop():
            return True
        x = to_device(batch.images, device, channels_last)
        y = labels[batch.positions].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        correct = int((logits.argmax(1) == y).sum())
        after_step(float(loss.detach()), correct, len(y))
    return False


@dataclass
class EvalResult:
    loss: float
    acc: float
    f1: float
    f1_per_class: list[float]
    positions: np.ndarray
    probs: np.ndarray
    losses: np.ndarray

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[Batch], labels: torch.Tensor, device: torch.device, channels_last: bool,
    num_classes: int,
) -> EvalResult:  # fmt: skip
    """Loss (plain cross-entropy), accuracy, macro F1 and per-image probabilities over ``batches``."""
    from sklearn.metrics import f1_score

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
    true = labels[pos].numpy()
    pred = p.argmax(1)
    per_class = f1_score(true, pred, labels=list(range(num_classes)), average=None, zero_division=0)
    loss = torch.cat(losses).numpy()
    return EvalResult(
        loss=float(loss.mean()), acc=metrics.accuracy(true, pred), f1=metrics.macro_f1(true, pred),
        f1_per_class=[float(v) for v in per_class], positions=pos, probs=p, losses=loss,
    )  # fmt: skip


# ---- RNG state as plain data (checkpoints load with weights_only=True) ---------------------------------------


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_version, list(py_internal), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_py = state["python"]
    random.setstate((version, tuple(internal), gauss_py))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- the run ------------------------------------------------------------------------------------------------


@dataclass
class RunData:
    frame: pd.DataFrame  # the dataset index frame (path, group, ...)
    labels: np.ndarray  # task label per frame row
    classes: list[str]
    train_pos: np.ndarray  # frame rows used for training
    val_pos: np.ndarray  # frame rows used for validation


def load_run_data(cfg: TrainConfig) -> RunData:
    """Scan the dataset, take the task's labels and split by person (group)."""
    from core.data import datasets

    index = datasets.scan(cfg.data)
    labels, classes = index.task_labels(cfg.task)
    frame = index.frame.reset_index(drop=True)
    person = frame["person_id"] if "person_id" in frame.columns else frame["group"]
    train_pos, val_pos = split_indices(np.asarray(labels), person.to_numpy(), cfg.val_fraction, cfg.seed, cfg.n_folds, cfg.fold)
    return RunData(frame, np.asarray(labels, dtype=np.int64), list(classes), train_pos, val_pos)


def _log(ctx: JobContextLike, message: str, **progress: Any) -> None:
    print(message, flush=True)  # job.log is the child's stdout
    ctx.heartbeat(message=message, **progress)


def run_training(run: RunFolder, ctx: JobContextLike) -> None:
    """Train the run folder's config (resuming from checkpoints/last.pt when present)."""
    from core import settings
    from core.training import models

    cfg = TrainConfig.from_dict(runs.read_config(run))
    device = resolve_device(cfg.device)
    data = load_run_data(cfg)
    num_classes = len(data.classes)
    paths = data.frame["path"].astype(str).tolist()
    sizes = list(zip(data.frame["height"].astype(int), data.frame["width"].astype(int), strict=True))
    cache_dir = settings.load().cache_dir
    torch.manual_seed(cfg.seed)  # initial weights; built before caching so missing weights fail at once
    model = models.build_model(cfg.model, num_classes, cfg.pretrained)

    def caching(done: int, total: int) -> None:
        ctx.heartbeat(message=f"caching decoded images {done}/{total}")
        if ctx.cancel_requested():  # the cache is built in a temp file: stopping here leaves nothing half-made
            raise JobCancelled("cancelled while caching images")

    log = lambda msg: _log(ctx, msg)  # noqa: E731
    train_src = make_source(paths, sizes, cfg.train_spec, cfg.cache, cache_dir, cfg.workers, caching, log)
    same_spec = cfg.eval_spec == cfg.train_spec
    val_src = train_src if same_spec else make_source(paths, sizes, cfg.eval_spec, cfg.cache, cache_dir, cfg.workers, caching, log)
    labels_t = torch.tensor(data.labels)
    train_labels = data.labels[data.train_pos]

    channels_last = cfg.channels_last and models.prefers_channels_last(cfg.model)
    model = model.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    loss_fn = make_loss(cfg, train_labels, num_classes).to(device)
    optimizer = make_optimizer(cfg, model)
    spe = steps_per_epoch(len(data.train_pos), cfg.batch_size)
    total_steps = cfg.max_steps or cfg.epochs * spe
    n_epochs = math.ceil(total_steps / spe)
    scheduler = make_scheduler(cfg, optimizer, spe, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")

    step, best_f1, window = 0, -1.0, LogWindow()
    if run.last_checkpoint.is_file():
        ckpt = runs.load_checkpoint(run.last_checkpoint)
        models.load_state_dict_checked(model, ckpt["model"], cfg.model, num_classes)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        step, best_f1 = int(ckpt["step"]), float(ckpt.get("best_val_f1", -1.0))
        window = LogWindow(**ckpt.get("log_window", {}))
        set_rng_state(ckpt["rng"])
        runs.truncate_metrics(run, after_step=step)  # lines a crash wrote after this checkpoint
        log(f"resuming from step {step}/{total_steps}")
    log(f"{cfg.model} on {device.type}: {len(data.train_pos)} train / {len(data.val_pos)} val images, "
        f"{num_classes} classes, {spe} steps per epoch, {total_steps} steps")  # fmt: skip

    if step >= total_steps:
        log(f"already complete ({step}/{total_steps} steps): nothing to do")
        return
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(log_dir=str(run.tensorboard), purge_step=step + 1 if step else None)
    base = {"model_name": cfg.model, "task": cfg.task, "classes": data.classes, "img_size": list(cfg.img_hw),
            "eval_spec": cfg.eval_spec, "train_spec": cfg.train_spec, "config": cfg.to_dict()}  # fmt: skip

    def save_last(epochs_done: int) -> None:
        runs.save_checkpoint(run.last_checkpoint, {
            **base, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epochs_done, "step": step,
            "rng": rng_state(), "best_val_f1": best_f1, "log_window": window.state(),
        })  # fmt: skip

    cancelled = False
    # On a CPU the thread count is measured as the job runs: two threads are faster on an idle
    # machine and much slower than one beside a busy app (see core.training.cputhreads). A fixed count
    # (WORKBENCH_TRAIN_THREADS) keeps float results bit-identical between a resumed and a straight run.
    governor = None
    if device.type == "cpu":
        fixed = settings.load().train_threads
        if fixed:
            torch.set_num_threads(fixed)
        else:
            governor = ThreadGovernor()

    def should_stop() -> bool:
        nonlocal cancelled
        if step >= total_steps:
            return True
        cancelled = ctx.cancel_requested()
        return cancelled

    try:
        for epoch in range(step // spe, n_epochs):

            def after_step(loss: float, correct: int, n: int, epoch: int = epoch) -> None:
                nonlocal step, window
                step += 1
                window.loss_sum += loss * n
                window.correct += correct
                window.seen += n
                window.steps += 1
                if governor is not None:
                    governor.step(n)
                if step % cfg.log_every == 0 or step == total_steps:
                    elapsed = max(time.perf_counter() - window.started, 1e-9)
                    record = {"step": step, "epoch": epoch + 1, "train_loss": window.loss_sum / window.seen,
                              "train_acc": window.correct / window.seen, "lr": scheduler.get_last_lr()[0],
                              "images_per_s": window.seen / elapsed, "threads": torch.get_num_threads()}  # fmt: skip
                    runs.append_metrics(run, record)
                    tb.add_scalar("Train/loss", record["train_loss"], step)
                    tb.add_scalar("Train/accuracy", record["train_acc"], step)
                    tb.add_scalar("Train/lr", record["lr"], step)
                    window = LogWindow()
                ctx.heartbeat(step=step, total_steps=total_steps, epoch=epoch + 1,
                              message=f"epoch {epoch + 1}/{n_epochs} step {step}/{total_steps}")  # fmt: skip

            order = epoch_order(train_labels, epoch, cfg.seed, cfg.balanced_sampling)[: spe * cfg.batch_size]
            seeds = sample_seeds(epoch, cfg.seed, len(order))
            skip = (step - epoch * spe) * cfg.batch_size  # batches already trained before a resume
            batches = train_src.batches(data.train_pos[order][skip:], seeds[skip:], cfg.batch_size)
            window.started = time.perf_counter()
            if governor is not None:
                governor.restart()
            train_one_epoch(model, batches, labels_t, loss_fn, optimizer, scheduler, scaler, device,
                                      channels_last, should_stop, after_step)  # fmt: skip
            if cancelled:
                break
            result = evaluate(model, val_src.batches(data.val_pos, np.zeros(len(data.val_pos), np.int64), cfg.batch_size),
                              labels_t, device, channels_last, num_classes)  # fmt: skip
            runs.append_metrics(run, {"step": step, "epoch": epoch + 1, "val_loss": result.loss, "val_acc": result.acc,
                                      "val_f1": result.f1, "val_f1_per_class": result.f1_per_class})  # fmt: skip
            tb.add_scalar("Val/loss", result.loss, step)
            tb.add_scalar("Val/accuracy", result.acc, step)
            tb.add_scalar("Val/f1", result.f1, step)
            tb.flush()
            # Step heartbeats are throttled; an epoch end always reaches status.json with its step.
            _log(ctx, f"epoch {epoch + 1}/{n_epochs} step {step}/{total_steps}: val_loss {result.loss:.4f} "
                      f"val_acc {result.acc:.4f} val_f1 {result.f1:.4f}",
                 step=step, total_steps=total_steps, epoch=epoch + 1, force=True)  # fmt: skip
            if result.f1 > best_f1:
                best_f1 = result.f1
                write_val_predictions(run, data, result)
                runs.save_checkpoint(run.best_checkpoint, {**base, "model": model.state_dict(), "epoch": epoch + 1,
                                                           "step": step, "val_f1": result.f1})  # fmt: skip
            save_last(epoch + 1)
        if cancelled:
            save_last(step // spe)
            log(f"cancelled at step {step}/{total_steps}; checkpoint saved")
            raise JobCancelled(f"cancelled at step {step}")
    finally:
        tb.close()
        _report_skipped(ctx, train_src, val_src)


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
