"""What a run trains on: the dataset's labels, the person split, and each epoch's order.

The split is a pure function of (labels, groups, seed, val_fraction/n_folds/fold) and the order of
epoch e a pure function of (seed, e), so a resumed run replays exactly the batches it would have seen.
``RunData.fingerprint()`` summarises the split as plain data for last.pt, so a resume can tell when
the dataset changed underneath it (core.training.state.check_resumable).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.errors import ConfigError
from core.training.config import TrainConfig

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
        raise ConfigError(
            f"val_fraction: the {side} split is empty ({n_groups} groups); use more data or another val_fraction"
        )
    if len(np.unique(labels[train])) < 2:
        raise ConfigError(
            "val_fraction: the training split holds a single class; use more data or a smaller val_fraction"
        )
    return np.sort(train), np.sort(val)


def _group_fold(labels, groups, splits, seed, fold, kfold_cls) -> tuple[np.ndarray, np.ndarray]:
    kfold = kfold_cls(n_splits=splits, shuffle=True, random_state=seed)
    for i, (train, val) in enumerate(kfold.split(np.zeros(len(labels)), labels, groups)):
        if i == fold:
            return train, val
    raise ConfigError(f"fold: {fold} is out of range for {splits} folds")


@dataclass
class RunData:
    frame: pd.DataFrame  # the dataset index frame (path, rel, group, ...)
    labels: np.ndarray  # task label per frame row
    classes: list[str]
    train_pos: np.ndarray  # frame rows used for training
    val_pos: np.ndarray  # frame rows used for validation

    def fingerprint(self) -> dict[str, int | str]:
        """The split as plain data: image counts and a digest of (relative path, label) per side.

        Relative paths, so the digest names the images, not where the dataset folder sits."""
        digest = hashlib.sha256()
        for side, positions in (("train", self.train_pos), ("val", self.val_pos)):
            rows = self.frame["rel"].astype(str).to_numpy()[positions]
            digest.update(f"{side}\n".encode())
            digest.update(
                "\n".join(
                    f"{rel}\t{int(label)}" for rel, label in zip(rows, self.labels[positions], strict=True)
                ).encode()
            )
        return {"train": len(self.train_pos), "val": len(self.val_pos), "digest": digest.hexdigest()}


def load_run_data(cfg: TrainConfig) -> RunData:
    """Scan the dataset, take the task's labels and split by person (group)."""
    from core.data import datasets

    index = datasets.scan(cfg.data)
    labels, classes = index.task_labels(cfg.task)
    frame = index.frame.reset_index(drop=True)
    person = frame["person_id"] if "person_id" in frame.columns else frame["group"]
    train_pos, val_pos = split_indices(
        np.asarray(labels), person.to_numpy(), cfg.val_fraction, cfg.seed, cfg.n_folds, cfg.fold
    )
    return RunData(frame, np.asarray(labels, dtype=np.int64), list(classes), train_pos, val_pos)


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


@dataclass(frozen=True)
class StepPlan:
    """How long the run is, in optimizer steps."""

    steps_per_epoch: int
    total_steps: int  # cfg.max_steps, or cfg.epochs whole epochs
    epochs: int  # epochs started, the last one cut short when max_steps ends mid-epoch

    @classmethod
    def for_run(cls, cfg: TrainConfig, n_train: int) -> StepPlan:
        spe = steps_per_epoch(n_train, cfg.batch_size)
        total = cfg.max_steps or cfg.epochs * spe
        return cls(spe, total, math.ceil(total / spe))


def epoch_positions(
    data: RunData, cfg: TrainConfig, plan: StepPlan, epoch: int, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frame rows and augmentation seeds epoch ``epoch`` trains on from global step ``step`` on.

    A run resumed mid-epoch skips the batches it already trained: the same images, in the same
    order, with the same seeds as an uninterrupted run."""
    order = epoch_order(data.labels[data.train_pos], epoch, cfg.seed, cfg.balanced_sampling)
    order = order[: plan.steps_per_epoch * cfg.batch_size]
    seeds = sample_seeds(epoch, cfg.seed, len(order))
    skip = (step - epoch * plan.steps_per_epoch) * cfg.batch_size
    return data.train_pos[order][skip:], seeds[skip:]
