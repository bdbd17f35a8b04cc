"""Leaderboard scores beside validation scores: does the validation split predict the leaderboard?

A submission is a folder under the submissions folder holding ``submission.csv`` and its
``submission.summary.json`` (core.evaluation.infer writes both), made either by a prediction job (the
folder also has a config.json of kind "predict", see core.evaluation.predjobs) or by
``python -m core predict --out submissions/<name>/submission.csv`` (no config.json). The scores the
competition site gave it are kept beside it::

    submissions/<id>/leaderboard.json   {"public": float | null, "private": float | null,
                                         "public_at": time, "private_at": time, "note": str}

``joined_table`` joins each submission to the runs it predicted with and their best validation macro F1
(read from the run folders), so a scatter of validation F1 against leaderboard F1 shows whether the
validation split can be trusted. Pure pandas: the Submission page stays quick to import.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core import runs, settings
from core.errors import SubmissionError
from core.evaluation.predjobs import SUBMISSION_FILE, output_paths
from core.fsutil import atomic_write_json, atomic_write_text, read_json, spreadsheet_safe
from core.runs import journal

LEADERBOARD_FILE = "leaderboard.json"
SUBMISSION_COLUMNS = [
    "id", "path", "source", "state", "created", "runs", "tta", "data", "images", "valid", "has_file",
    "public", "private", "note",
]  # fmt: skip
JOINED_COLUMNS = [
    "submission", "created", "run", "run_name", "model", "task", "run_state", "val_f1", "ensemble_size",
    "submission_val_f1", "public", "private", "note", "run_path",
]  # fmt: skip


def _parent(submissions_dir: str | os.PathLike | None) -> Path:
    return Path(submissions_dir) if submissions_dir else settings.load().submissions_dir


def resolve_submission(ref: str | os.PathLike, submissions_dir: str | os.PathLike | None = None) -> Path:
    """A submission folder given as a path or as its name under the submissions folder."""
    path = Path(ref)
    if path.is_file() and path.name == SUBMISSION_FILE:
        path = path.parent
    if not path.is_dir():
        path = _parent(submissions_dir) / str(ref)
    if not (path / SUBMISSION_FILE).is_file():
        raise SubmissionError(
            f"{ref}: no {SUBMISSION_FILE} there; give a submission folder (submissions/<name>/) that holds one"
        )
    return path


# ---- leaderboard.json ----------------------------------------------------------------------------------


def read_scores(folder: str | os.PathLike) -> dict[str, Any]:
    """The recorded leaderboard scores of a submission ({} when none)."""
    scores = read_json(Path(folder) / LEADERBOARD_FILE, default=None)
    return scores if isinstance(scores, dict) else {}


def _check_score(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SubmissionError(f"{name}: give the leaderboard score as a number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise SubmissionError(f"{name}: a leaderboard F1 lies between 0 and 1, got {value}")
    return float(value)


def record_scores(
    ref: str | os.PathLike,
    public: float | None = None,
    private: float | None = None,
    note: str | None = None,
    submissions_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Record the public and/or private leaderboard score of a submission; return the stored scores.

    A score left as None keeps the one recorded before (the private score comes at the competition's end).
    """
    if public is None and private is None and note is None:
        raise SubmissionError("give a --public and/or --private leaderboard score to record")
    folder = resolve_submission(ref, submissions_dir)
    scores = read_scores(folder)
    now = time.time()
    for name, value in (("public", public), ("private", private)):
        if value is not None:
            scores[name] = _check_score(name, value)
            scores[f"{name}_at"] = now
    if note is not None:
        scores["note"] = str(note).strip()[:500]
    atomic_write_json(folder / LEADERBOARD_FILE, scores)
    return scores


# ---- every submission ------------------------------------------------------------------------------------


def list_submissions(submissions_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Every submission folder under the submissions folder, newest first, with its leaderboard scores.

    Both kinds show: prediction jobs (config.json of kind "predict", ``source`` "job", listed even before
    their submission.csv exists) and folders written by ``predict --out`` (``source`` "cli"). ``runs`` is the
    list of run folders the submission predicted with.
    """
    parent = _parent(submissions_dir)
    rows = []
    for folder in sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []:
        row = _submission_row(folder)
        if row is not None:
            rows.append(row)
    frame = pd.DataFrame(rows, columns=SUBMISSION_COLUMNS)
    return frame.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)


def _submission_row(folder: Path) -> dict[str, Any] | None:
    config = read_json(folder / "config.json", default=None)
    is_job = isinstance(config, dict) and config.get("kind") == "predict"
    csv = folder / SUBMISSION_FILE
    if not is_job and not csv.is_file():
        return None
    summary = read_json(output_paths(csv)["summary"], default=None)
    summary = summary if isinstance(summary, dict) else {}
    run_paths = _submission_runs(config if is_job else {}, summary)
    validator = summary.get("validator") or {}
    scores = read_scores(folder)
    created = summary.get("created_at") or _mtime(folder / "config.json" if is_job else csv)
    return {
        "id": folder.name,
        "path": str(folder),
        "source": "job" if is_job else "cli",
        "state": runs.read_status(runs.RunFolder(folder)).get("state") if is_job else "completed",
        "created": created,
        "runs": run_paths,
        "tta": bool(config.get("tta") if is_job else summary.get("tta")),
        "data": (config.get("data") if is_job else None) or summary.get("data"),
        "images": summary.get("images"),
        "valid": validator.get("valid") if validator else None,
        "has_file": csv.is_file(),
        "public": scores.get("public"),
        "private": scores.get("private"),
        "note": scores.get("note"),
    }


def _submission_runs(config: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """The run folders a submission predicted with: the summary's members, else the job's config."""
    members = summary.get("runs")
    if isinstance(members, list) and members:
        return [str(m.get("path") or m.get("run")) if isinstance(m, dict) else str(m) for m in members]
    return [str(r) for r in config.get("runs", []) or []]


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# ---- the joined table -----------------------------------------------------------------------------------


def run_best_val_f1(run_path: str | os.PathLike) -> float | None:
    """The best validation macro F1 in a run's metrics.jsonl (None when the run or its epochs are missing)."""
    metrics = runs.read_metrics(runs.RunFolder(run_path))
    if "val_f1" not in metrics:
        return None
    values = pd.to_numeric(metrics["val_f1"], errors="coerce").dropna()
    return float(values.max()) if len(values) else None


def _run_facts(run_path: str) -> dict[str, Any]:
    run = runs.RunFolder(run_path)
    if not run.config.is_file():
        return {"run_state": "missing", "model": None, "task": None, "run_name": None, "val_f1": None}
    config = read_json(run.config, default={}) or {}
    return {
        "run_state": runs.read_status(run).get("state"),
        "model": config.get("model"),
        "task": config.get("task"),
        "run_name": journal.read_journal(run)["name"] or run.id,
        "val_f1": run_best_val_f1(run_path),
    }


def joined_table(
    submissions_dir: str | os.PathLike | None = None, submissions: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Submission -> each run it predicted with -> that run's best val macro F1 -> the leaderboard scores.

    One row per (submission, run); ``submission_val_f1`` is the mean of the submission's runs' val F1 (an
    ensemble's validation proxy) and ``ensemble_size`` its number of runs. Submissions without runs keep
    one row with empty run columns.
    """
    subs = list_submissions(submissions_dir) if submissions is None else submissions
    rows = []
    for sub in subs.to_dict("records"):
        facts = [{"run": Path(p).name, "run_path": p, **_run_facts(p)} for p in sub["runs"]] or [{}]
        scores = [f["val_f1"] for f in facts if f.get("val_f1") is not None]
        for fact in facts:
            rows.append(
                {
                    "submission": sub["id"],
                    "created": sub["created"],
                    "ensemble_size": len(sub["runs"]),
                    "submission_val_f1": sum(scores) / len(scores) if scores else None,
                    "public": sub["public"],
                    "private": sub["private"],
                    "note": sub["note"],
                    **fact,
                }
            )
    return pd.DataFrame(rows, columns=JOINED_COLUMNS)


def submission_scores(submissions_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per submission: validation F1 (mean over its runs) beside public/private scores (for a scatter)."""
    joined = joined_table(submissions_dir)
    columns = ["submission", "created", "ensemble_size", "submission_val_f1", "public", "private", "note"]
    per_submission = joined[columns].drop_duplicates("submission").reset_index(drop=True)
    return per_submission.rename(columns={"submission_val_f1": "val_f1"})


def to_csv_text(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text that opens safely in a spreadsheet (no cell runs as a formula)."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(
                lambda v: spreadsheet_safe(", ".join(map(str, v)) if isinstance(v, list) else v)
            )
    return safe.to_csv(index=False)


def export_csv(
    out: str | os.PathLike, submissions_dir: str | os.PathLike | None = None, table: pd.DataFrame | None = None
) -> Path:
    """Write ``table`` (default: the joined table) as a spreadsheet-safe CSV at ``out``, atomically."""
    out = Path(out)
    atomic_write_text(out, to_csv_text(joined_table(submissions_dir) if table is None else table))
    return out
