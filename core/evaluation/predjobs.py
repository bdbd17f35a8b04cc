"""Prediction jobs: the ``submissions/<id>/`` folders the Submission page and ``predict --job`` use.

A prediction job is a run folder (core.runs) whose config.json has kind "predict": which runs to
predict with, on which eval folder, with or without TTA; its outputs are the submission CSV, its
probabilities and a summary. Pure pandas, so the Submission page stays quick to import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from core import runs
from core.errors import ConfigError, RunError
from core.fsutil import read_json

# ---- where a prediction's files go -------------------------------------------------------------------

SUBMISSION_FILE = "submission.csv"
IMAGE_PROBLEMS_FILE = "image_problems.json"  # written by a job stopped by missing/unreadable images


def output_paths(out_csv: str | os.PathLike) -> dict[str, Path]:
    """Where the files of one prediction go: the CSV, its probabilities and its summary, side by side."""
    out = Path(out_csv)
    return {
        "csv": out,
        "probabilities": out.with_name(out.stem + ".probabilities.parquet"),
        "summary": out.with_name(out.stem + ".summary.json"),
    }


# ---- runs to predict with ------------------------------------------------------------------------------


def resolve_run_path(ref: str | os.PathLike) -> Path:
    """A run given as a folder path, or as a run id under the models folder."""
    from core import settings

    path = Path(ref)
    if path.is_dir():
        return path
    models_dir = settings.load().models_dir
    if (models_dir / str(ref)).is_dir():
        return models_dir / str(ref)
    raise RunError(f"run {ref!r} not found (neither a folder nor a run id under {models_dir})")


def predictable_runs(models_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Runs under ``models_dir`` that have a checkpoint, newest first: id, path, state, model, task, img_size."""
    found = []
    for run in runs.list_run_folders(models_dir):
        if not (run.best_checkpoint.is_file() or run.last_checkpoint.is_file()):
            continue
        try:
            config = runs.read_config(run)
        except RunError:
            continue
        found.append(
            {
                "id": run.id,
                "path": str(run.root),
                "state": runs.read_status(run).get("state"),
                "kind": config.get("kind", "train"),
                "model": config.get("model"),
                "task": config.get("task"),
                "img_size": config.get("img_size"),
            }
        )
    return found


# ---- prediction jobs (submissions/<id>/) -----------------------------------------------------------------


def create_prediction_job(
    run_refs: list[str | os.PathLike], data: str | os.PathLike, tta: bool, parent: str | os.PathLike | None = None
) -> runs.RunFolder:
    """A new submissions/<id>/ folder whose config.json says what to predict (for ``predict --job``)."""
    from core import settings

    if not run_refs:
        raise ConfigError("no runs given: choose at least one run to predict with")
    run_paths = [str(resolve_run_path(r).resolve()) for r in run_refs]
    if not Path(data).is_dir():
        raise ConfigError(f"{data}: folder not found; choose the eval folder (with info.csv) to predict")
    folder = runs.create_run_folder(parent or settings.load().submissions_dir, prefix="sub")
    runs.write_config(
        folder, {"kind": "predict", "runs": run_paths, "tta": bool(tta), "data": str(Path(data).resolve())}
    )
    runs.write_status(folder, state="queued")
    return folder


def read_prediction_job(folder: str | os.PathLike) -> dict[str, Any]:
    """A prediction job's config, checked: runs (list of paths), tta (bool), data (folder)."""
    config = runs.read_config(runs.open_run(folder))
    if config.get("kind") != "predict":
        raise ConfigError(f"{folder}: config.json kind is {config.get('kind')!r}, expected 'predict'")
    if not isinstance(config.get("runs"), list) or not config["runs"]:
        raise ConfigError(f"{folder}/config.json: 'runs' must be a non-empty list of run folders")
    if not isinstance(config.get("data"), str):
        raise ConfigError(f"{folder}/config.json: 'data' must be the folder to predict")
    return {"runs": [str(r) for r in config["runs"]], "tta": bool(config.get("tta", False)), "data": config["data"]}


def job_summary(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The summary.json of a finished prediction job, or None."""
    summary = read_json(output_paths(Path(folder) / SUBMISSION_FILE)["summary"], default=None)
    return summary if isinstance(summary, dict) else None


def job_image_problems(folder: str | os.PathLike) -> list[str]:
    """The missing/unreadable images that stopped a prediction job ([] when none)."""
    found = read_json(Path(folder) / IMAGE_PROBLEMS_FILE, default=None)
    return [str(x) for x in found.get("images", [])] if isinstance(found, dict) else []


def list_prediction_jobs(parent: str | os.PathLike) -> pd.DataFrame:
    """One row per prediction job under ``parent``, newest first: id, path, state, runs, tta, data, images, valid."""
    rows = []
    for folder in runs.list_run_folders(parent):
        config = read_json(folder.config, default={}) or {}
        if config.get("kind") != "predict":
            continue
        status = runs.read_status(folder)
        summary = job_summary(folder.root) or {}
        validator = summary.get("validator") or {}
        rows.append(
            {
                "id": folder.id,
                "path": str(folder.root),
                "state": status.get("state"),
                "created": folder.config.stat().st_mtime,
                "runs": ", ".join(Path(r).name for r in config.get("runs", [])),
                "tta": bool(config.get("tta")),
                "data": config.get("data"),
                "images": summary.get("images"),
                "valid": validator.get("valid") if validator else None,
                "has_file": (folder.root / SUBMISSION_FILE).is_file(),
            }
        )
    columns = ["id", "path", "state", "created", "runs", "tta", "data", "images", "valid", "has_file"]
    return pd.DataFrame(rows, columns=columns)
