"""The run-folder format, read and written in this one place.

A run (a training job, an imported checkpoint) or a prediction job is a folder::

    <folder>/
      config.json               what to do: TrainConfig.to_dict() plus "kind": "train" and the "classes"
                                the training job found in the dataset (recorded by it); an imported
                                checkpoint: {"kind": "imported", model, task, classes, img_size,
                                eval_spec, train_spec, source}; a prediction job (under
                                submissions/): {"kind": "predict", runs, tta, data}
      status.json               state (queued|running|completed|failed|cancelled|pruned), pid, started_at,
                                heartbeat, finished_at, error, step, total_steps, epoch, message
      metrics.jsonl             one JSON object per line, each with "step" and "epoch";
                                logged steps add train_loss, train_acc, lr, images_per_s, threads;
                                epoch ends add val_loss, val_acc, val_f1, val_f1_per_class (null for a
                                class in neither the labels nor the predictions: not counted in val_f1)
      summary.json              kept by append_metrics (and truncate_metrics) at every validation line, so
                                listing runs never reads metrics.jsonl: best_val_f1, best_val_f1_step,
                                best_val_acc, best_val_acc_step, last_val_step (null before the
                                first validation); an older run without one gets it the first time it is read
      job.log                   the job's stdout/stderr
      checkpoints/last.pt       plain dict (loaded with weights_only=True): model (state_dict),
      checkpoints/best.pt       model_name, task, classes, img_size, eval_spec, config; a training
                                checkpoint adds optimizer, scheduler, scaler, epoch, step, rng,
                                best_val_f1, log_window, split (train/val counts and a digest of the
                                split, checked on resume), ema (the averaged weights, when ema_decay > 0)
      val_predictions.parquet   best epoch's validation predictions: path, group, label, pred, loss,
                                p0..p{K-1}
      embeddings.npy, .parquet  penultimate-layer features (float16) of the validation images at the best
                                epoch, and their path, group, label, pred, confidence (core.evaluation.embeddings)
      journal.json, notes.md    name, tags, starred, archived, sweep link; the user's notes (core.runs.journal)
      tb/                       TensorBoard event files
      cancel                    present when a cancel was asked for; the job checkpoints and stops

Every write is atomic (temp file + os.replace) except metrics.jsonl and job.log, which are
appended; readers skip a half-written last line. Run ids are matched whole (``re.fullmatch``): with
``re.match`` and ``$`` a name ending in a newline passed. Timestamps are UNIX seconds (float).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import CheckpointError, RunError
from core.fsutil import atomic_write, atomic_write_json, read_json

STATES = ("queued", "running", "completed", "failed", "cancelled", "pruned")
# "pruned": a sweep trial its sweep stopped early as hopeless (never shown as failed).
FINAL_STATES = frozenset({"completed", "failed", "cancelled", "pruned"})
ACTIVE_STATES = frozenset({"queued", "running"})

_RUN_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # always fullmatch: "$" lets "x\n" through


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder. Cheap to make; touches nothing on disk."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def id(self) -> str:
        return self.root.name

    config = property(lambda self: self.root / "config.json")
    status = property(lambda self: self.root / "status.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    summary = property(lambda self: self.root / "summary.json")
    log = property(lambda self: self.root / "job.log")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last_checkpoint = property(lambda self: self.root / "checkpoints" / "last.pt")
    best_checkpoint = property(lambda self: self.root / "checkpoints" / "best.pt")
    val_predictions = property(lambda self: self.root / "val_predictions.parquet")
    tensorboard = property(lambda self: self.root / "tb")
    cancel_flag = property(lambda self: self.root / "cancel")
    lock = property(lambda self: self.root / ".lock")


def validate_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_OK.fullmatch(run_id):
        raise RunError(
            f"run name {run_id!r} is not allowed: use letters, digits, '.', '_' or '-' (at most 100), "
            "starting with a letter or digit"
        )
    return run_id


def new_run_id(prefix: str = "run") -> str:
    """A readable, sortable, unique-enough id such as ``run-20261129-162301-3f2a``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{os.urandom(2).hex()}"


def create_run_folder(parent: str | os.PathLike, run_id: str | None = None, prefix: str = "run") -> RunFolder:
    """Create a new, empty run folder. Exclusive: an existing folder is never reused."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    run_id = validate_run_id(run_id) if run_id else new_run_id(prefix)
    root = parent / run_id
    try:
        root.mkdir()
    except FileExistsError as err:
        raise RunError(f"run folder {root} already exists: choose another run name") from err
    return RunFolder(root)


def open_run(path: str | os.PathLike) -> RunFolder:
    run = RunFolder(path)
    if not run.config.is_file():
        raise RunError(f"{run.root}: not a run folder (no config.json)")
    return run


# ---- config and status -------------------------------------------------------------------


def write_config(run: RunFolder, config: dict[str, Any]) -> None:
    atomic_write_json(run.config, config)


def read_config(run: RunFolder) -> dict[str, Any]:
    cfg = read_json(run.config)
    if not isinstance(cfg, dict):
        raise RunError(f"{run.config}: missing or not a JSON object")
    return cfg


def read_status(run: RunFolder) -> dict[str, Any]:
    status = read_json(run.status, default=None)
    return status if isinstance(status, dict) else {"state": "queued"}


def write_status(run: RunFolder, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into status.json (atomically) and return the new status."""
    status = read_status(run)
    status.update(fields)
    if status.get("state") not in STATES:
        raise ValueError(f"bad state {status.get('state')!r}")
    atomic_write_json(run.status, status)
    return status


# ---- metrics --------------------------------------------------------------------------------


def append_metrics(run: RunFolder, record: dict[str, Any]) -> None:
    """Append one metrics line; a validation line (val_f1 or val_acc) also updates summary.json."""
    if "step" not in record or "epoch" not in record:
        raise ValueError("a metrics record needs 'step' and 'epoch'")
    line = json.dumps(record, default=float) + "\n"
    had_summary = run.summary.is_file()
    with open(run.metrics, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
    if _is_validation(record):
        # A run begun before summaries existed (then resumed) gets one built from all its lines once.
        summary = _add_to_summary(read_summary(run), record) if had_summary else _summary_of(_metric_records(run))
        _write_summary(run, summary)


# ---- summary.json: the figures the runs table shows, kept beside metrics.jsonl ---------------------------

_EMPTY_SUMMARY: dict[str, Any] = {
    "best_val_f1": None, "best_val_f1_step": None, "best_val_acc": None, "best_val_acc_step": None,
    "last_val_step": None,
}  # fmt: skip


def _is_validation(record: dict[str, Any]) -> bool:
    return _number(record.get("val_f1")) is not None or _number(record.get("val_acc")) is not None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _add_to_summary(summary: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    out = {**_EMPTY_SUMMARY, **summary}
    step = _number(record.get("step"))
    step = int(step) if step is not None else None
    for name in ("val_f1", "val_acc"):
        value, best = _number(record.get(name)), _number(out[f"best_{name}"])
        if value is not None and (best is None or value > best):
            out[f"best_{name}"], out[f"best_{name}_step"] = value, step
    if _is_validation(record):
        out["last_val_step"] = step
    return out


def _summary_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    summary = dict(_EMPTY_SUMMARY)
    for record in records:
        summary = _add_to_summary(summary, record)
    return summary


def _write_summary(run: RunFolder, summary: dict[str, Any]) -> None:
    atomic_write_json(run.summary, summary)


def read_summary(run: RunFolder, write_missing: bool = True) -> dict[str, Any]:
    """summary.json (best val F1/accuracy, their steps, the last validation step) without reading metrics.

    A run written before summaries existed has none: it is built from metrics.jsonl once and, with
    ``write_missing``, saved (pass False while another process may still be appending to the run).
    """
    summary = read_json(run.summary, default=None)
    if isinstance(summary, dict):
        return {**_EMPTY_SUMMARY, **summary}
    summary = _summary_of(_metric_records(run))
    if write_missing and run.root.is_dir():
        _write_summary(run, summary)
    return summary


def read_metrics(run: RunFolder) -> pd.DataFrame:
    """All metric records as a frame (one row per line); a half-written last line is skipped."""
    return pd.DataFrame(_metric_records(run))


def _metric_records(run: RunFolder) -> list[dict[str, Any]]:
    rows = []
    try:
        with open(run.metrics, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    rows.append(record)
    except FileNotFoundError:
        pass
    return rows


def truncate_metrics(run: RunFolder, after_step: int) -> None:
    """Drop metric lines with ``step > after_step`` (and a half-written line), atomically.

    A resumed job calls it with its checkpoint's step: lines a killed job wrote after that
    checkpoint would otherwise appear twice in the curve.
    """
    try:
        with open(run.metrics, encoding="utf-8") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= after_step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        atomic_write(run.metrics, lambda fh: fh.write("".join(kept)), "w")
        # The best score may have come from a dropped line: the summary is rebuilt from the kept ones.
        _write_summary(run, _summary_of([json.loads(line) for line in kept]))


# ---- checkpoints ------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """torch.save into a temp file beside ``path`` and replace it: a crash keeps the old file."""
    import torch

    atomic_write(path, lambda fh: torch.save(checkpoint, fh), "wb")


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: a file carrying pickled code is refused unrun."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path.name}: refused to load: it holds Python objects other than tensors and plain data "
            "(a pickle that could run code). Save only a state_dict."
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name}: expected a dict (state_dict or checkpoint), got {type(obj).__name__}")
    return obj


# ---- predictions --------------------------------------------------------------------------------


def write_predictions(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda fh: frame.to_parquet(fh, index=False), "wb")


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no predictions yet (the run has not finished an epoch)")
    return pd.read_parquet(path)


def probability_columns(frame: pd.DataFrame) -> list[str]:
    cols = [c for c in frame.columns if re.fullmatch(r"p\d+", str(c))]
    return sorted(cols, key=lambda c: int(c[1:]))


def read_predictions_safely(path: Path) -> pd.DataFrame:
    """read_predictions, with a damaged file reported as a RunError instead of a parser exception."""
    try:
        return read_predictions(path)
    except RunError:
        raise
    except (OSError, ValueError) as err:  # pyarrow's errors derive from these
        raise RunError(
            f"{path}: not a readable predictions file ({type(err).__name__}); run the training again"
        ) from err


def read_checked_predictions(path: Path) -> pd.DataFrame:
    """A predictions file read and checked: a damaged or inconsistent one is a RunError naming it."""
    return _checked(read_predictions_safely(path), path)


def _checked(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [c for c in ("path", "label", "pred") if c not in frame.columns]
    if missing or not probability_columns(frame):
        what = ", ".join(missing) if missing else "p0..pK-1"
        raise RunError(f"{path}: predictions lack the column(s) {what}")
    k = len(probability_columns(frame))
    for column in ("label", "pred"):
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any() or (values < 0).any() or (values >= k).any():
            raise RunError(f"{path}: column {column} holds values outside the {k} classes")
    return frame.assign(label=frame["label"].astype(np.int64), pred=frame["pred"].astype(np.int64))


# ---- listing ----------------------------------------------------------------------------------


def list_run_folders(parent: str | os.PathLike) -> list[RunFolder]:
    """Run folders under ``parent`` (those with a config.json), newest first."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    runs = [RunFolder(p) for p in parent.iterdir() if p.is_dir() and (p / "config.json").is_file()]
    return sorted(runs, key=lambda r: r.config.stat().st_mtime, reverse=True)


def tail(path: str | os.PathLike, max_bytes: int = 8000) -> str:
    """The end of a text file (the job log), decoded leniently."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


# ---- job bookkeeping (used by core.runs.jobs) --------------------------------------------------------


def lock_run_folder(run: RunFolder) -> int:
    """Take the run folder's exclusive writer lock (flock on ``.lock``) and return its file descriptor.

    The lock lives as long as the descriptor (so a killed job frees it at once); the holder's pid is
    written into the lock file so a refused writer can say who holds it. Raises RunError when busy.
    """
    import fcntl

    fd = os.open(run.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise RunError(f"run {run.id} is already being written by pid {holder}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def adopt_run_lock(run: RunFolder, fd: int) -> int:
    """Take over a writer lock inherited from the launching process (same open file, so same flock).

    Returns ``fd`` after recording this process as the holder; raises RunError if ``fd`` is not the
    lock file of ``run``.
    """
    try:
        same = os.fstat(fd).st_ino == os.stat(run.lock).st_ino
    except OSError:
        same = False
    if not same:
        raise RunError(f"run {run.id}: the inherited lock does not belong to this run folder")
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def unlock_run_folder(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases the flock


def request_cancel(run: RunFolder) -> None:
    run.cancel_flag.touch()


def clear_cancel(run: RunFolder) -> None:
    run.cancel_flag.unlink(missing_ok=True)


def cancel_requested(run: RunFolder) -> bool:
    return run.cancel_flag.exists()


def append_log(run: RunFolder, text: str) -> None:
    """Append text to job.log (also the job's stdout/stderr, opened in append mode, so lines interleave)."""
    with open(run.log, "a", encoding="utf-8") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")


def remove_partial_checkpoints(run: RunFolder) -> list[str]:
    """Delete temp files a killed job left half-written in checkpoints/ (call with the run lock held:
    only the job writes there). Returns their names."""
    removed = []
    for tmp in run.checkpoints.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    return removed
