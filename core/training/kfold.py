"""k-fold training for out-of-sample predictions of every training image (label-error search).

Each fold is an ordinary run folder under ``<run>/folds/fold-<i>``, trained in the foreground through
the same job runner as a background job; a completed fold is reused, so an interrupted k-fold
continues where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pandas as pd

from core.errors import ConfigError, RunError
from core.runs.folder import RunFolder, open_run, read_checked_predictions, read_config, read_status, write_config

Progress = Callable[[int, int, str], None]


def fold_folder(run: RunFolder, fold: int) -> RunFolder:
    return RunFolder(run.root / "folds" / f"fold-{fold}")


def _fold_done(folder: RunFolder) -> bool:
    return read_status(folder).get("state") == "completed" and folder.val_predictions.is_file()


def out_of_fold_predictions(
    run: str | os.PathLike | RunFolder, kfold: int, progress: Progress | None = None
) -> pd.DataFrame:
    """Train ``kfold`` models, fold i validating on the i-th StratifiedGroupKFold part, and return
    their validation predictions together: one out-of-sample prediction for every training image.

    Folds go in ``<run>/folds/fold-<i>`` with the run's own config; a fold already completed is
    reused, so an interrupted k-fold run continues where it stopped.
    """
    if not isinstance(kfold, int) or kfold < 2:
        raise ConfigError(f"--kfold must be an integer of at least 2, not {kfold!r}")
    folder = run if isinstance(run, RunFolder) else open_run(run)
    base = read_config(folder)
    if base.get("kind", "train") != "train":
        raise RunError(f"{folder.root}: k-fold needs a training run (its config is kind {base.get('kind')!r})")
    parts = []
    for fold in range(kfold):
        sub = fold_folder(folder, fold)
        if progress:
            progress(fold, kfold, f"fold {fold + 1} of {kfold}")
        if not _fold_done(sub):
            _train_fold(sub, {**base, "n_folds": kfold, "fold": fold})
        parts.append(read_checked_predictions(sub.val_predictions).assign(fold=fold))
    if progress:
        progress(kfold, kfold, "done")
    return pd.concat(parts, ignore_index=True)


def finished_fold_predictions(run: str | os.PathLike | RunFolder) -> pd.DataFrame | None:
    """The out-of-fold predictions of an earlier ``label-issues --kfold`` on this run, when all its
    folds completed (nothing is trained here); else None."""
    folder = run if isinstance(run, RunFolder) else open_run(run)
    folds_dir = folder.root / "folds"
    if not folds_dir.is_dir():
        return None
    first = fold_folder(folder, 0)
    kfold = read_config(first).get("n_folds") if first.config.is_file() else None
    if not isinstance(kfold, int) or kfold < 2:
        return None
    subs = [fold_folder(folder, i) for i in range(kfold)]
    if not all(_fold_done(sub) for sub in subs):
        return None
    return pd.concat(
        [read_checked_predictions(sub.val_predictions).assign(fold=i) for i, sub in enumerate(subs)],
        ignore_index=True,
    )


def _train_fold(sub: RunFolder, config: dict[str, Any]) -> None:
    """Train one fold in the foreground as a job of its own folder (same code path as a background
    training job: run-folder lock, job slot, status). An interrupted fold resumes from its last
    checkpoint."""
    from core.runs import jobs
    from core.training.config import TrainConfig
    from core.training.loop import run_training

    cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k not in ("kind", "classes")})
    if not sub.config.is_file():
        sub.root.mkdir(parents=True, exist_ok=True)
        write_config(sub, {**cfg.to_dict(), "kind": "train"})
    state = jobs.run_job(sub, lambda ctx: run_training(sub, ctx))
    if state != "completed" or not sub.val_predictions.is_file():
        status = read_status(sub)
        raise RunError(
            f"fold {sub.root.name} of {sub.root.parent.parent.name} ended {state}: "
            f"{status.get('error') or 'no validation predictions'} (see {sub.log})"
        )
