"""submission.csv: writing it from predictions, and checking any submission file against info.csv.

Pure pandas (no torch), so pages and the CLI validator stay quick to import.

The competition's rule: a submission is ``info.csv`` with ``ans`` filled in — the same rows in the
same order, exactly the columns ``ImageID,ans``, an integer class in ``0..17`` per row, and no index
column. Everything here is checked against that rule, and each problem is reported in words that
say which row or column is wrong and what to do.

Ids are written exactly as info.csv has them, as the format needs, even one starting with ``=``,
``+``, ``-`` or ``@`` that a spreadsheet would run as a formula: ``formula_warnings`` (and
``submission_warnings`` for a file) say so, for the Submission page and ``validate-submission``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from core.errors import SubmissionError
from core.fsutil import atomic_write_text, looks_like_formula

COLUMNS = ("ImageID", "ans")
NUM_CLASSES = 18
_MAX_LISTED = 5  # problems name at most this many rows/ids, then a count
_INTEGER = re.compile(r"[0-9]+")  # fullmatch; ASCII only: int() also takes "\u0663"


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


def validate_submission(
    path: str | os.PathLike, info_csv: str | os.PathLike, num_classes: int = NUM_CLASSES
) -> list[str]:
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
        problems.append(
            f"has {len(sub)} rows but info.csv has {len(info)} ({what}): write exactly one row per info.csv row"
        )

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
        hint = (
            " (an unnamed first column means a pandas index was written: use index=False)"
            if any(c == "" or c.startswith("Unnamed") for c in extra)
            else ""
        )
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
    for row, (image_id, value) in enumerate(
        zip(sub.get("ImageID", sub.index.astype(str)), sub["ans"], strict=True), start=1
    ):
        text = str(value).strip()
        if not _INTEGER.fullmatch(text):
            bad_type.append(f"row {row} ({image_id}): {value!r}")
        elif int(text) >= num_classes:
            out_of_range.append(f"row {row} ({image_id}): {text}")
    problems = []
    if bad_type:
        problems.append(f"{len(bad_type)} ans value(s) are not integers 0..{num_classes - 1}: {_listed(bad_type)}")
    if out_of_range:
        problems.append(f"{len(out_of_range)} ans value(s) are outside 0..{num_classes - 1}: {_listed(out_of_range)}")
    return problems


def formula_warnings(frame: pd.DataFrame) -> list[str]:
    """A warning naming the ImageIDs a spreadsheet would run as formulas; ``[]`` when there are none.

    Not a problem: the ids must stay exactly as info.csv has them. But opening (and saving) the file
    in a spreadsheet app could run or change them.
    """
    if "ImageID" not in frame.columns:
        return []
    risky = [repr(str(i)) for i in frame["ImageID"] if looks_like_formula(str(i))]
    if not risky:
        return []
    return [
        f"{len(risky)} ImageID(s) start with =, +, - or @ ({_listed(risky)}): they are kept exactly as "
        "info.csv has them, as the format needs, but a spreadsheet app would run them as formulas: "
        "do not open or re-save submission.csv in one (use a text editor)"
    ]


def submission_warnings(path: str | os.PathLike) -> list[str]:
    """``formula_warnings`` for the submission file at ``path`` (``[]`` when it cannot be read: the
    problems from ``validate_submission`` say why)."""
    try:
        sub = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return []
    return formula_warnings(sub)


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
