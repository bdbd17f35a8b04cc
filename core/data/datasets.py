"""Dataset formats -> DatasetIndex (pandas frame) + problems. No pixel decoding.

CONTRACT (other modules code against these names). Tasks, class names and the 18-class encoding
live in core.data.tasks; the page's statistics in core.data.stats; folder walking and ``Problem`` in
core.data.tree; the eval folder (``EvalSet``, ``scan_eval``) in core.data.evalset.

    @dataclass Problem: path: str, kind: str, message: str      # kind e.g. "truncated", "missing_photo"

    @dataclass DatasetIndex:
        root: Path                  # resolved dataset root as given by the user (a CSV's folder)
        format: str                 # "mask" | "imagefolder" | "csv"
        frame: pd.DataFrame         # one row per usable image, columns:
            path (str, absolute resolved), rel (str, relative to root), label (int), class_name (str),
            group (str; person folder name for the mask layout, else the file stem or a CSV's group column),
            person_id (str, e.g. "001498-1"; mask layout only, else same as group),
            mask, gender, age_band, age (int; -1 where the format has no attributes),
            photo (str; "mask1".."mask5","incorrect_mask","normal" for the mask layout, else ""),
            width, height (int, after EXIF orientation), format (str, "JPEG", "PNG"... from the content)
        classes: list[str]          # names in label order
        problems: list[Problem]
        eval: EvalSet | None        # the competition's eval/ folder when present
        has_attributes: bool        # True for the mask layout
        manifest: Path | None       # the CSV manifest for the csv format

        task_labels(task) -> (np.ndarray[int], list[str])   # labels and class names for a task name
        tasks() -> list[Task]       # the tasks this dataset supports (core.data.tasks.dataset_tasks)
        attribute_counts(attribute) -> pd.Series             # images per attribute value name
        summary() -> dict          # the `scan --json` object (see the foundation issue)

    scan(root, verify=False, progress=None) -> DatasetIndex
        # detects the format (mask layout given as its top, train/ or train/images/; class folders;
        # a CSV manifest path,label[,group] as the file or a folder holding it). Raises DatasetError for a
        # root that does not exist or holds no images. progress(done, total) is called when verify.

Problem kinds: from headers "empty", "truncated", "not_image", "bomb", "unreadable" (and "undecodable"
with verify); from the tree "missing_photo", "bad_folder_name", "unexpected_file", "duplicate",
"missing_folder", "stray_file", "outside_root", "broken_link", "symlink_loop", "empty_class",
"unknown_column", "bad_row", "missing_file", "eval_missing".
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import images
from core.data.evalset import EvalSet, scan_eval
from core.data.tasks import (
    ATTRIBUTE_COLUMNS,
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    CLASS_NAMES,
    CLASS_TASK,
    MASK_INCORRECT,
    MASK_NOT_WEAR,
    MASK_WEAR,
    TASK_NAMES,
    Task,
    age_band,
    dataset_tasks,
    encode_class,
)
from core.data.tree import FolderTree, Problem
from core.errors import DatasetError, ImageError

# The seven photos of a person and their mask state.
PHOTO_MASK = {**{f"mask{i}": MASK_WEAR for i in range(1, 6)}, "incorrect_mask": MASK_INCORRECT, "normal": MASK_NOT_WEAR}
PHOTOS = tuple(PHOTO_MASK)

# How person folders spell the gender: file-format words, in the encoding's gender order.
FOLDER_GENDERS = ("male", "female")
# `{id}_{gender}_{race}_{age}`; real ids include a suffix such as 001498-1.
PERSON_RE = re.compile(r"^(?P<id>\d+(?:-\d+)?)_(?P<gender>male|female)_(?P<race>[^_]+)_(?P<age>\d{1,3})$", re.I)

FRAME_COLUMNS = [
    "path", "rel", "label", "class_name", "group", "person_id",
    "mask", "gender", "age_band", "age", "photo", "width", "height", "format",
]  # fmt: skip

ProgressFn = Callable[[int, int], None]

# Header reads wait on the file system (GIL released): a few threads overlap those waits.
HEADER_THREADS = 4


@dataclass
class DatasetIndex:
    root: Path
    format: str
    frame: pd.DataFrame
    classes: list[str]
    problems: list[Problem] = field(default_factory=list)
    eval: EvalSet | None = None
    has_attributes: bool = False
    manifest: Path | None = None

    def tasks(self) -> list[Task]:
        """The tasks this dataset supports: the mask layout's four, or its own classes alone."""
        return dataset_tasks(self.classes, self.has_attributes)

    def task_labels(self, task: str) -> tuple[np.ndarray, list[str]]:
        """Integer labels per row and the class names for ``task`` (a name from core.data.tasks)."""
        if task not in TASK_NAMES:
            raise DatasetError(f"unknown task {task!r}; choose one of {', '.join(TASK_NAMES)}")
        if task == CLASS_TASK:
            return self.frame["label"].to_numpy(dtype=np.int64), list(self.classes)
        if not self.has_attributes:
            raise DatasetError(
                f"task {task!r} needs the mask-status layout (person folders); this {self.format} dataset has "
                f"only classes: use the task {CLASS_TASK!r}"
            )
        return self.frame[ATTRIBUTE_COLUMNS[task]].to_numpy(dtype=np.int64), list(ATTRIBUTE_NAMES[task])

    def attribute_counts(self, attribute: str) -> pd.Series:
        """Images per value name of ``attribute`` ("mask", "gender" or "age"), zeros included."""
        names = ATTRIBUTE_NAMES[attribute]
        counts = self.frame[ATTRIBUTE_COLUMNS[attribute]].value_counts()
        return pd.Series([int(counts.get(i, 0)) for i in range(len(names))], index=list(names), name=attribute)

    def summary(self) -> dict:
        """The ``scan --json`` object."""
        counts = self.frame["label"].value_counts()
        out: dict = {
            "format": self.format,
            "root": str(self.root),
            "n_images": int(len(self.frame)),
            "classes": list(self.classes),
            "class_counts": {str(i): int(counts.get(i, 0)) for i in range(len(self.classes))},
            "n_groups": int(self.frame["group"].nunique()),
            "attribute_counts": {},
            "problems": [asdict(p) for p in self.problems],
            "eval": None,
        }
        if self.has_attributes:
            out["attribute_counts"] = {
                attr: {name: int(n) for name, n in self.attribute_counts(attr).items()} for attr in ATTRIBUTES
            }
        if self.eval is not None:
            out["eval"] = {"rows": int(len(self.eval.frame)), "missing": list(self.eval.missing)}
        return out


# ----------------------------------------------------------------------------------------------
# Scanning


@dataclass
class _Candidate:
    """A file the tree says is an image of some class; its header decides whether it is kept."""

    path: str
    rel: str
    class_key: str  # the class name (imagefolder/csv) or "" for the mask layout (label computed)
    group: str
    person_id: str = ""
    mask: int = -1
    gender: int = -1
    age: int = -1
    photo: str = ""


def scan(root: str | os.PathLike, verify: bool = False, progress: ProgressFn | None = None) -> DatasetIndex:
    """Index a dataset (see the module contract). Headers only unless ``verify`` (full decode, with progress)."""
    given = Path(root).expanduser()
    if not given.exists():
        raise DatasetError(f"{given}: no such folder or file; give a dataset folder (or a CSV manifest)")
    resolved = given.resolve()
    fmt, base, manifest, eval_dir = _detect(resolved)
    tree = FolderTree(resolved if resolved.is_dir() else base)
    if fmt == "mask":
        candidates = _mask_candidates(tree, base, manifest)
    elif fmt == "csv":
        candidates = _csv_candidates(tree, manifest)
    else:
        candidates = _folder_candidates(tree)
    rows = _read_headers(tree, candidates)
    if verify:
        rows = _verify_rows(tree, rows, progress)
    index = _build_index(tree, fmt, rows, manifest if fmt == "csv" else None)
    if eval_dir is not None:
        index.eval = scan_eval(eval_dir)
        index.problems.extend(index.eval.problems)
    if index.frame.empty:
        hint = f" ({len(index.problems)} problems, first: {index.problems[0].path}: {index.problems[0].message})"
        raise DatasetError(f"{given}: holds no usable images{hint if index.problems else ''}")
    return index


def _detect(root: Path) -> tuple[str, Path, Path | None, Path | None]:
    """(format, base folder, manifest or train.csv, eval folder) for a dataset root."""
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DatasetError(f"{root}: not a folder or a .csv manifest; give the dataset folder")
        return "csv", root.parent, root, None
    if (root / "train" / "images").is_dir():
        return "mask", root / "train" / "images", _maybe(root / "train" / "train.csv"), _eval_dir(root / "eval")
    if (root / "images").is_dir() and ((root / "train.csv").is_file() or _looks_like_people(root / "images")):
        return "mask", root / "images", _maybe(root / "train.csv"), _eval_dir(root.parent / "eval")
    if _looks_like_people(root):
        return "mask", root, _maybe(root.parent / "train.csv"), _eval_dir(root.parent.parent / "eval")
    csv_files = sorted(p for p in root.glob("*.csv") if not images.is_junk(p.name) and p.is_file())
    manifests = [p for p in csv_files if {"path", "label"} <= set(_csv_header(p))]
    if len(manifests) > 1:
        names = ", ".join(p.name for p in manifests)
        raise DatasetError(f"{root}: several CSV manifests ({names}); give the one to use as the dataset")
    if manifests:
        return "csv", root, manifests[0], None
    has_folders = any(e.is_dir() and not images.is_junk(e.name) for e in os.scandir(root))
    if has_folders:
        return "imagefolder", root, None, None
    if csv_files:
        found = ", ".join(_csv_header(csv_files[0])) or "nothing"
        raise DatasetError(f"{csv_files[0]}: a manifest needs the columns path,label; found {found}")
    raise DatasetError(
        f"{root}: holds no images; expected class folders, a path,label CSV or the mask-status layout (train/images)"
    )


def _maybe(path: Path) -> Path | None:
    return path if path.is_file() else None


def _eval_dir(path: Path) -> Path | None:
    return path if (path / "info.csv").is_file() else None


def _looks_like_people(folder: Path) -> bool:
    """Most sub-folders named like `000001_female_Asian_45`."""
    try:
        names = [e.name for e in os.scandir(folder) if e.is_dir() and not images.is_junk(e.name)][:200]
    except OSError:
        return False
    return bool(names) and sum(bool(PERSON_RE.match(n)) for n in names) * 2 >= len(names)


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            return [c.strip().lower() for c in next(csv.reader(fh), [])]
    except OSError:
        return []


def _mask_candidates(tree: FolderTree, images_dir: Path, train_csv: Path | None) -> list[_Candidate]:
    candidates: list[_Candidate] = []
    seen_folders: set[str] = set()
    if not tree.first_visit(str(images_dir)):
        return candidates
    for person in tree.entries(str(images_dir)):
        if not person.is_dir():
            if person.is_file():
                tree.problem(person.path, "stray_file", "file outside any person folder; skipped")
            continue
        match = PERSON_RE.match(person.name)
        if not match:
            tree.problem(
                person.path, "bad_folder_name",
                "folder name is not {id}_{gender}_{race}_{age} (e.g. 000001_female_Asian_45); rename it; skipped",
            )  # fmt: skip
            continue
        age = int(match["age"])
        if not 0 < age < 130:
            tree.problem(person.path, "bad_folder_name", f"age {age} is not plausible; fix the folder name; skipped")
            continue
        if not tree.first_visit(person):
            continue
        seen_folders.add(person.name)
        gender = FOLDER_GENDERS.index(match["gender"].lower())
        candidates.extend(_person_photos(tree, person, match["id"], gender, age))
    if train_csv is not None:
        _check_train_csv(tree, train_csv, seen_folders)
    return candidates


def _person_photos(tree: FolderTree, person: os.DirEntry, person_id: str, gender: int, age: int) -> list[_Candidate]:
    photos: dict[str, os.DirEntry] = {}
    for entry in tree.entries(person.path):
        stem, ext = os.path.splitext(entry.name)
        if not entry.is_file():
            tree.problem(entry.path, "unexpected_file", "folder inside a person folder; skipped")
        elif ext.lower() not in images.IMAGE_EXTENSIONS:
            tree.problem(entry.path, "not_image", f"not an image file (extension {ext or 'none'!r}); skipped")
        elif stem.lower() not in PHOTO_MASK:
            tree.problem(
                entry.path, "unexpected_file",
                "photo name is not one of mask1..mask5, incorrect_mask, normal; rename it; skipped",
            )  # fmt: skip
        elif stem.lower() in photos:
            first = photos[stem.lower()].name
            tree.problem(entry.path, "duplicate", f"second {stem.lower()} photo beside {first}; {first} is used")
        else:
            photos[stem.lower()] = entry
    missing = [p for p in PHOTOS if p not in photos]
    if missing:
        tree.problem(
            person.path, "missing_photo",
            f"person folder lacks {', '.join(missing)} ({7 - len(missing)} of 7 photos present and kept)",
        )  # fmt: skip
    return [
        _Candidate(
            path=entry.path,
            rel=tree.display(entry.path),
            class_key="",
            group=person.name,
            person_id=person_id,
            mask=PHOTO_MASK[photo],
            gender=gender,
            age=age,
            photo=photo,
        )  # fmt: skip
        for photo, entry in sorted(photos.items(), key=lambda kv: PHOTOS.index(kv[0]))
    ]


def _check_train_csv(tree: FolderTree, train_csv: Path, seen: set[str]) -> None:
    """Folders that train.csv lists but the disk lacks (the folders themselves are the labels' source)."""
    try:
        listed = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        tree.problem(str(train_csv), "bad_row", f"cannot read train.csv ({err}); labels come from folder names")
        return
    if "path" not in listed.columns:
        return
    for folder in listed["path"]:
        if folder and folder not in seen:
            tree.problem(str(train_csv), "missing_folder", f"train.csv lists {folder!r}, which is not in images/")


def _folder_candidates(tree: FolderTree) -> list[_Candidate]:
    candidates: list[_Candidate] = []
    if not tree.first_visit(tree.root_str):
        return candidates
    for top in tree.entries(tree.root_str):
        if top.is_file():
            if images.is_image_name(top.name):
                tree.problem(top.path, "stray_file", "image outside any class folder; move it into one; skipped")
            continue
        if not top.is_dir():
            continue
        found = 0
        for entry in tree.walk_files(top.path):
            if not images.is_image_name(entry.name):
                tree.problem(entry.path, "not_image", "not an image file (by its extension); skipped")
                continue
            stem = os.path.splitext(entry.name)[0]
            candidates.append(_Candidate(entry.path, tree.display(entry.path), top.name, stem, stem))
            found += 1
        if not found:
            tree.problem(top.path, "empty_class", "class folder holds no images; it is left out of the classes")
    return candidates


def _csv_candidates(tree: FolderTree, manifest: Path) -> list[_Candidate]:
    try:
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DatasetError(f"{manifest}: cannot read the CSV ({err})") from err
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise DatasetError(
            f"{manifest}: missing column(s) {', '.join(missing)}; a manifest needs path,label "
            f"(optional group); found {', '.join(table.columns) or 'nothing'}"
        )
    for col in table.columns:
        if col not in ("path", "label", "group"):
            tree.problem(str(manifest), "unknown_column", f"column {col!r} is not path, label or group; ignored")
    has_group = "group" in table.columns
    candidates: list[_Candidate] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(table.itertuples(index=False), start=2):
        where = f"{manifest.name} line {line}"
        raw, label = str(row.path).strip(), str(row.label).strip()
        if not raw or not label:
            tree.problem(raw or where, "bad_row", f"{where}: empty path or label; skipped")
            continue
        full = os.path.realpath(raw if os.path.isabs(raw) else os.path.join(str(manifest.parent), raw))
        if not tree.inside(full):
            tree.problem(raw, "outside_root", f"{where}: the path leads outside the manifest's folder; skipped")
            continue
        if not os.path.isfile(full):
            tree.problem(raw, "missing_file", f"{where}: the file does not exist; skipped")
            continue
        if not images.is_image_name(os.path.basename(full)):
            tree.problem(raw, "not_image", f"{where}: not an image file (by its extension); skipped")
            continue
        if full in seen:
            tree.problem(raw, "duplicate", f"{where}: already listed on line {seen[full]}; the first row is used")
            continue
        seen[full] = line
        stem = os.path.splitext(os.path.basename(full))[0]
        group = str(row.group).strip() if has_group and str(row.group).strip() else stem
        candidates.append(_Candidate(full, tree.display(full), label, group, group))
    return candidates


def _read_headers(tree: FolderTree, candidates: list[_Candidate]) -> list[tuple[_Candidate, images.ImageHeader]]:
    """Headers of every candidate; failures become problems. Threads overlap the file system waits."""

    def one(cand: _Candidate):
        try:
            return cand, images.read_header(cand.path)
        except ImageError as err:
            return cand, err

    def chunk(part: list[_Candidate]) -> list:
        return [one(c) for c in part]

    # Executor.map makes one future per item for threads (chunksize is ignored): hand it chunks.
    parts = [candidates[i : i + 512] for i in range(0, len(candidates), 512)]
    if len(parts) > 1 and HEADER_THREADS > 1:
        with ThreadPoolExecutor(max_workers=HEADER_THREADS) as pool:
            results = [r for part in pool.map(chunk, parts) for r in part]
    else:
        results = chunk(candidates)
    kept = []
    for cand, result in results:
        if isinstance(result, ImageError):
            tree.problem(cand.path, result.kind, result.message + "; skipped")
        else:
            kept.append((cand, result))
    return kept


def _verify_rows(tree: FolderTree, rows: list, progress: ProgressFn | None) -> list:
    """Decode every kept image once (Pillow releases the GIL while decoding, so threads use both cores)."""

    def one(item):
        try:
            images.verify(item[0].path)
            return None
        except ImageError as err:
            return err

    total = len(rows)
    kept = []
    if progress:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for done, (item, err) in enumerate(zip(rows, pool.map(one, rows), strict=True), start=1):
            if err is None:
                kept.append(item)
            else:
                kind = "undecodable" if err.kind == "unreadable" else err.kind
                tree.problem(item[0].path, kind, err.message + "; skipped")
            if progress and (done == total or done % 50 == 0):
                progress(done, total)
    return kept


def _class_order(names: set[str]) -> list[str]:
    """Numeric labels in numeric order, others alphabetically."""
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _build_index(tree: FolderTree, fmt: str, rows: list, manifest: Path | None) -> DatasetIndex:
    if fmt == "mask":
        classes = list(CLASS_NAMES)
    else:
        classes = _class_order({cand.class_key for cand, _ in rows})
    label_of = {name: i for i, name in enumerate(classes)}
    records = []
    for cand, header in rows:
        if fmt == "mask":
            band = age_band(cand.age)
            label = encode_class(cand.mask, cand.gender, band)
        else:
            band, label = -1, label_of[cand.class_key]
        records.append((
            cand.path, cand.rel, label, classes[label], cand.group, cand.person_id or cand.group,
            cand.mask, cand.gender, band, cand.age, cand.photo, header.width, header.height, header.format,
        ))  # fmt: skip
    frame = pd.DataFrame.from_records(records, columns=FRAME_COLUMNS)
    int_cols = ["label", "mask", "gender", "age_band", "age", "width", "height"]
    frame[int_cols] = frame[int_cols].astype("int64")
    frame = frame.sort_values("rel", kind="stable").reset_index(drop=True)
    return DatasetIndex(
        root=tree.root,
        format=fmt, frame=frame, classes=classes, problems=tree.problems,
        has_attributes=fmt == "mask", manifest=manifest,
    )  # fmt: skip
