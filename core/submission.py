"""submission.csv: writing it from predictions, and checking any submission file against info.csv.

Pure pandas (no torch), so pages and the CLI validator stay quick to import.

The competition's rule: a submission is ``info.csv`` with ``ans`` filled in — the same rows in the
same order, exactly the columns ``ImageID,ans``, an integer class in ``0..17`` per row, and no index
column. Everything here is checked against that rule, and each problem is reported in words that
say which row or column is wrong and what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from core import runs
from core.errors import ConfigError, RunError, SubmissionError
from core.fsutil import atomic_write_text, read_json

COLUMNS = ("ImageID", "ans")
NUM_CLASSES = 18
_MAX_LISTED = 5  # problems name at most this many rows/ids, then a count
_INTEGER = re.compile(r"^\d+$")


def read_info(info_csv: str | os.PathLike) -> pd.DataFrame:
    """info.csv as strings (ids kept verbatim); raises SubmissionError when it cannot be used."""
    info_csv = Path(info_csv)
    try:
        info = pd.read_csv(info_csv, dtype=str, keep_default_na=False)
    except FileNotFoundError as err:
        raise SubmissionError(f"{info_csv}: info.csv not found; point at the eval folder's info.csv") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SubmissionError(f"{info_csv}: not a readable CSV ({err})") from err
    if "ImageID" not in info.columns:
        raise SubmissionError(f"{info_csv}: has no ImageID column (columns: {', '.join(map(str, info.columns))})")
    return info


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def validate_submission(path: str | os.PathLike, info_csv: str | os.PathLike, num_classes: int = NUM_CLASSES) -> list[str]:
    """Problems with the submission at ``path`` against ``info_csv``, in words; ``[]`` when it is valid."""
    path = Path(path)
    info = read_info(info_csv)
    try:
        sub = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        return [f"{path}: file not found"]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        return [f"{path.name}: not a readable CSV ({err})"]

    problems: list[str] = []
    columns = [str(c) for c in sub.columns]
    if columns != list(COLUMNS):
        problems.extend(_header_problems(columns))

    if len(sub) != len(info):
        diff = len(info) - len(sub)
        what = f"{diff} row(s) missing" if diff > 0 else f"{-diff} row(s) too many"
        problems.append(f"has {len(sub)} rows but info.csv has {len(info)} ({what}): write exactly one row per info.csv row")

    if "ImageID" in sub.columns:
        problems.extend(_id_problems(sub["ImageID"].tolist(), info["ImageID"].tolist()))
    if "ans" in sub.columns:
        problems.extend(_value_problems(sub, num_classes))
    return problems


def _header_problems(columns: list[str]) -> list[str]:
    header = ",".join(columns)
    problems = []
    missing = [c for c in COLUMNS if c not in columns]
    extra = [c for c in columns if c not in COLUMNS]
    if missing:
        problems.append(f"header is {header!r}; expected 'ImageID,ans' (missing column(s): {', '.join(missing)})")
    if extra:
        hint = " (an unnamed first column means a pandas index was written: use index=False)" if any(
            c == "" or c.startswith("Unnamed") for c in extra
        ) else ""
        problems.append(f"extra column(s) {', '.join(repr(c) for c in extra)}: keep only ImageID,ans{hint}")
    if not missing and not extra:
        problems.append(f"columns are in the order {header!r}; expected 'ImageID,ans'")
    return problems


def _id_problems(sub_ids: list[str], info_ids: list[str]) -> list[str]:
    problems = []
    info_set, sub_set = set(info_ids), set(sub_ids)
    absent = [i for i in info_ids if i not in sub_set]
    unknown = [i for i in sub_ids if i not in info_set]
    dupes = sorted({i for i in sub_ids if sub_ids.count(i) > 1}) if len(sub_set) != len(sub_ids) else []
    if absent:
        problems.append(f"{len(absent)} ImageID(s) of info.csv are missing: {_listed(absent)}")
    if unknown:
        problems.append(f"{len(unknown)} ImageID(s) are not in info.csv: {_listed(unknown)}")
    if dupes:
        problems.append(f"ImageID(s) appear more than once: {_listed(dupes)}")
    if not absent and not unknown and not dupes and sub_ids != info_ids:
        first = next(i for i, (a, b) in enumerate(zip(sub_ids, info_ids, strict=True)) if a != b)
        problems.append(
            f"rows are not in info.csv's order (first difference at row {first + 1}: {sub_ids[first]!r}, "
            f"info.csv has {info_ids[first]!r}): keep info.csv's row order"
        )
    return problems


def _value_problems(sub: pd.DataFrame, num_classes: int) -> list[str]:
    bad_type, out_of_range = [], []
    for row, (image_id, value) in enumerate(zip(sub.get("ImageID", sub.index.astype(str)), sub["ans"], strict=True), start=1):
        text = str(value).strip()
        if not _INTEGER.match(text):
            bad_type.append(f"row {row} ({image_id}): {value!r}")
        elif int(text) >= num_classes:
            out_of_range.append(f"row {row} ({image_id}): {text}")
    problems = []
    if bad_type:
        problems.append(f"{len(bad_type)} ans value(s) are not integers 0..{num_classes - 1}: {_listed(bad_type)}")
    if out_of_range:
        problems.append(f"{len(out_of_range)} ans value(s) are outside 0..{num_classes - 1}: {_listed(out_of_range)}")
    return problems


def check_submission(path: str | os.PathLike, info_csv: str | os.PathLike, num_classes: int = NUM_CLASSES) -> None:
    """Raise SubmissionError listing every problem, or return when the file is valid."""
    problems = validate_submission(path, info_csv, num_classes)
    if problems:
        raise SubmissionError(f"{Path(path).name} is not a valid submission: " + "; ".join(problems))


def build_submission(info_csv: str | os.PathLike, predicted: dict[str, int]) -> pd.DataFrame:
    """info.csv's rows in its order with ``ans`` filled from ``predicted`` (ImageID -> class)."""
    info = read_info(info_csv)
    absent = [i for i in info["ImageID"] if i not in predicted]
    if absent:
        raise SubmissionError(f"no prediction for {len(absent)} info.csv row(s): {_listed(absent)}")
    return pd.DataFrame({"ImageID": info["ImageID"], "ans": [int(predicted[i]) for i in info["ImageID"]]})


def write_submission(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ImageID,ans without an index, atomically (a crash never leaves half a file)."""
    atomic_write_text(path, frame.loc[:, list(COLUMNS)].to_csv(index=False))


def class_counts(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> list[int]:
    """Images per predicted class in a submission file (for the distribution check)."""
    sub = pd.read_csv(path)
    counts = sub["ans"].value_counts()
    return [int(counts.get(k, 0)) for k in range(num_classes)]


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
        found.append({
            "id": run.id, "path": str(run.root), "state": runs.read_status(run).get("state"),
            "kind": config.get("kind", "train"), "model": config.get("model"), "task": config.get("task"),
            "img_size": config.get("img_size"),
        })  # fmt: skip
    return found


# ---- prediction jobs (submissions/<id>/) -----------------------------------------------------------------


def create_prediction_job(run_refs: list[str | os.PathLike], data: str | os.PathLike, tta: bool,
                          parent: str | os.PathLike | None = None) -> runs.RunFolder:  # fmt: skip
    """A new submissions/<id>/ folder whose config.json says what to predict (for ``predict --job``)."""
    from core import settings

    if not run_refs:
        raise ConfigError("no runs given: choose at least one run to predict with")
    run_paths = [str(resolve_run_path(r).resolve()) for r in run_refs]
    if not Path(data).is_dir():
        raise ConfigError(f"{data}: folder not found; choose the eval folder (with info.csv) to predict")
    folder = runs.create_run_folder(parent or settings.load().submissions_dir, prefix="sub")
    runs.write_config(folder, {"kind": "predict", "runs": run_paths, "tta": bool(tta), "data": str(Path(data).resolve())})
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
        rows.append({
            "id": folder.id, "path": str(folder.root), "state": status.get("state"),
            "created": folder.config.stat().st_mtime,
            "runs": ", ".join(Path(r).name for r in config.get("runs", [])), "tta": bool(config.get("tta")),
            "data": config.get("data"), "images": summary.get("images"),
            "valid": validator.get("valid") if validator else None,
            "has_file": (folder.root / SUBMISSION_FILE).is_file(),
        })  # fmt: skip
    columns = ["id", "path", "state", "created", "runs", "tta", "data", "images", "valid", "has_file"]
    return pd.DataFrame(rows, columns=columns)
