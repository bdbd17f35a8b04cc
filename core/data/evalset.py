"""The competition's eval folder: ``info.csv`` (ImageID, ans) beside ``images/``.

:func:`scan_eval` lists the rows in info.csv order with their absolute paths and whether each file
exists; an ImageID that is not a plain file name is refused, a missing or doubled one is reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.data import images
from core.data.tree import Problem
from core.errors import DatasetError


@dataclass
class EvalSet:
    root: Path  # the eval folder
    info_csv: Path  # its info.csv (ImageID,ans)
    frame: pd.DataFrame  # ImageID, path (absolute), exists; same rows and order as info.csv
    missing: list[str]  # ImageIDs whose file is absent (or refused)
    problems: list[Problem] = field(default_factory=list)


def scan_eval(root: str | os.PathLike) -> EvalSet:
    """The eval folder (info.csv with ImageID[,ans] + images/) or a top folder holding eval/."""
    folder = Path(root).expanduser().resolve()
    if not (folder / "info.csv").is_file() and (folder / "eval" / "info.csv").is_file():
        folder = folder / "eval"
    info = folder / "info.csv"
    if not info.is_file():
        raise DatasetError(f"{folder}: no info.csv; an eval folder holds info.csv (ImageID,ans) and images/")
    try:
        table = pd.read_csv(info, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DatasetError(f"{info}: cannot read the CSV ({err})") from err
    if "ImageID" not in table.columns:
        raise DatasetError(f"{info}: no ImageID column; found {', '.join(map(str, table.columns)) or 'nothing'}")
    images_dir = folder / "images"
    images_str = str(images_dir.resolve()) if images_dir.is_dir() else str(images_dir)
    try:
        present = {e.name for e in os.scandir(images_dir)} if images_dir.is_dir() else set()
    except OSError:
        present = set()
    problems: list[Problem] = []
    paths, exists, missing = [], [], []
    seen: set[str] = set()
    for image_id in table["ImageID"].astype(str):
        name = image_id.strip()
        full = os.path.join(images_str, name)
        ok = name in present and not images.is_junk(name)
        if not ok and name and ("/" in name or os.sep in name or name.startswith("..")):
            ok = False
            problems.append(
                Problem(f"{folder.name}/info.csv: {name}", "outside_root", "ImageID is not a plain file name; refused")
            )
        elif not ok:
            problems.append(
                Problem(f"{folder.name}/images/{name}", "eval_missing", "listed in info.csv but the file is absent")
            )
        if name in seen:
            problems.append(Problem(f"{folder.name}/info.csv: {name}", "duplicate", "ImageID listed twice in info.csv"))
        seen.add(name)
        paths.append(full)
        exists.append(ok)
        if not ok:
            missing.append(name)
    frame = pd.DataFrame({"ImageID": table["ImageID"].astype(str), "path": paths, "exists": exists})
    return EvalSet(root=folder, info_csv=info, frame=frame, missing=missing, problems=problems)
