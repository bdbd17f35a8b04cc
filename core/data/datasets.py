"""Dataset formats -> DatasetIndex (pandas frame) + problems. No pixel decoding.

CONTRACT (other modules code against these names). Tasks, class names and the 18-class encoding
live in core.data.tasks; the page's statistics in core.data.stats; folder walking, manifest rows and
``Problem`` in core.data.tree; the eval folder (``EvalSet``, ``scan_eval``) in core.data.evalset; the
persisted index in core.data.index_store; which folders a page may open in core.data.roots.

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
        problems: list[Problem]     # the first WORKBENCH_MAX_PROBLEMS (1000) found
        more_problems: int          # problems found beyond those, counted only
        eval: EvalSet | None        # the competition's eval/ folder when present
        has_attributes: bool        # True for the mask layout
        manifest: Path | None       # the CSV manifest for the csv format

        task_labels(task) -> (np.ndarray[int], list[str])   # labels and class names for a task name
        tasks() -> list[Task]       # the tasks this dataset supports (core.data.tasks.dataset_tasks)
        attribute_counts(attribute) -> pd.Series             # images per attribute value name
        class_rows(label, start=0, stop=None) -> pd.DataFrame  # a class's rows (a page of them), O(page)
        memory_bytes() -> int       # what this index holds in memory (frames deep, problems)
        summary() -> dict          # the `scan --json` object (see the foundation issue)

    scan(root, verify=False, progress=None, *, use_index=False, rescan=False, index_dir=None) -> DatasetIndex
        # detects the format (mask layout given as its top, train/ or train/images/; class folders;
        # a CSV manifest path,label[,group] as the file or a folder holding it). Nothing above the given
        # root is read: train.csv and eval/ are found only inside it. Raises DatasetError for a root
        # that does not exist or holds no usable images, and for a manifest over
        # WORKBENCH_MANIFEST_MAX_ROWS rows. progress(done, total) is called when verify.
        # use_index: reuse and update the persisted index (core.data.index_store; index_dir defaults to
        # <cache_dir>/index): unchanged folders are not read again, a failed scan is remembered until
        # its files change; rescan: ignore the stored index (a full scan) and store a new one.

Problem kinds: from headers "empty", "truncated", "not_image", "bomb", "unreadable" (and "undecodable"
with verify); from the tree "missing_photo", "bad_folder_name", "unexpected_file", "duplicate",
"missing_folder", "stray_file", "outside_root", "broken_link", "symlink_loop", "empty_class",
"unknown_column", "bad_row", "missing_file", "bad_name" (not UTF-8), "eval_missing". Order: the top folder's, each unit's
(person or class folder, or the manifest) in name order, train.csv's, the eval folder's.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import images, index_store
from core.data import tasks as taskdefs
from core.data import tree as listing
from core.data.evalset import EvalSet, scan_eval  # noqa: F401 - scan_eval is part of this module's API
from core.data.index_store import ProgressFn, ScanUnit, StoredIndex
from core.data.tree import FolderTree, Problem, ProblemList
from core.errors import DatasetError

# The seven photos of a person and their mask state.
_WEAR, _INCORRECT, _NOT_WEAR = taskdefs.MASK_WEAR, taskdefs.MASK_INCORRECT, taskdefs.MASK_NOT_WEAR
PHOTO_MASK = {**{f"mask{i}": _WEAR for i in range(1, 6)}, "incorrect_mask": _INCORRECT, "normal": _NOT_WEAR}
PHOTOS = tuple(PHOTO_MASK)

# How person folders spell the gender: file-format words, in the encoding's gender order.
FOLDER_GENDERS = ("male", "female")
# `{id}_{gender}_{race}_{age}`; real ids include a suffix such as 001498-1.
# Used with fullmatch ("$" would accept a trailing newline); ids and ages are ASCII digits (\d is any
# Unicode digit).
PERSON_RE = re.compile(r"(?P<id>[0-9]+(?:-[0-9]+)?)_(?P<gender>male|female)_(?P<race>[^_]+)_(?P<age>[0-9]{1,3})", re.I)

FRAME_COLUMNS = [
    "path", "rel", "label", "class_name", "group", "person_id",
    "mask", "gender", "age_band", "age", "photo", "width", "height", "format",
]  # fmt: skip
_INT_COLUMNS = ["label", "mask", "gender", "age_band", "age", "width", "height"]


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
    more_problems: int = 0
    _rows_by_label: dict | None = field(default=None, repr=False, compare=False)

    def tasks(self) -> list[taskdefs.Task]:
        """The tasks this dataset supports: the mask layout's four, or its own classes alone."""
        return taskdefs.dataset_tasks(self.classes, self.has_attributes)

    def task_labels(self, task: str) -> tuple[np.ndarray, list[str]]:
        """Integer labels per row and the class names for ``task`` (a name from core.data.tasks)."""
        if task not in taskdefs.TASK_NAMES:
            raise DatasetError(f"unknown task {task!r}; choose one of {', '.join(taskdefs.TASK_NAMES)}")
        if task == taskdefs.CLASS_TASK:
            return self.frame["label"].to_numpy(dtype=np.int64), list(self.classes)
        if not self.has_attributes:
            raise DatasetError(
                f"task {task!r} needs the mask-status layout (person folders); this {self.format} dataset has "
                f"only classes: use the task {taskdefs.CLASS_TASK!r}"
            )
        column = taskdefs.ATTRIBUTE_COLUMNS[task]
        return self.frame[column].to_numpy(dtype=np.int64), list(taskdefs.ATTRIBUTE_NAMES[task])

    def attribute_counts(self, attribute: str) -> pd.Series:
        """Images per value name of ``attribute`` ("mask", "gender" or "age"), zeros included."""
        names = taskdefs.ATTRIBUTE_NAMES[attribute]
        counts = self.frame[taskdefs.ATTRIBUTE_COLUMNS[attribute]].value_counts()
        return pd.Series([int(counts.get(i, 0)) for i in range(len(names))], index=list(names), name=attribute)

    def class_rows(self, label: int, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """The rows of class ``label`` (``start:stop`` of them), in frame order. Each class's row
        positions are grouped once, so a gallery page costs the same in a dataset of any size."""
        if self._rows_by_label is None:
            self._rows_by_label = {int(k): v for k, v in self.frame.groupby("label", sort=False).indices.items()}
        positions = self._rows_by_label.get(int(label), np.empty(0, dtype=np.int64))
        return self.frame.iloc[positions[start:stop]]

    def memory_bytes(self) -> int:
        """Bytes this index holds: its frames (strings counted deep) and its problems' text."""
        total = int(self.frame.memory_usage(deep=True).sum())
        if self.eval is not None:
            total += int(self.eval.frame.memory_usage(deep=True).sum())
        total += sum(p.nbytes for p in (self._rows_by_label or {}).values())
        return total + sum(len(p.path) + len(p.kind) + len(p.message) + 64 for p in self.problems)

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
            "more_problems": int(self.more_problems),
            "eval": None,
        }
        if self.has_attributes:
            out["attribute_counts"] = {
                attr: {name: int(n) for name, n in self.attribute_counts(attr).items()} for attr in taskdefs.ATTRIBUTES
            }
        if self.eval is not None:
            out["eval"] = {"rows": int(len(self.eval.frame)), "missing": list(self.eval.missing)}
        return out


# ----------------------------------------------------------------------------------------------
# Scanning: the root's listing gives units (person folders, class folders, or the one manifest);
# each unit is walked (or reused from the persisted index), then the headers of the new ones read.


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


def scan(
    root: str | os.PathLike,
    verify: bool = False,
    progress: ProgressFn | None = None,
    *,
    use_index: bool = False,
    rescan: bool = False,
    index_dir: str | os.PathLike | None = None,
) -> DatasetIndex:
    """Index a dataset (see the module contract). Headers only unless ``verify`` (full decode, with progress)."""
    given = Path(root).expanduser()
    if not given.exists():
        raise DatasetError(f"{given}: no such folder or file; give a dataset folder (or a CSV manifest)")
    resolved = given.resolve()
    if not listing.is_utf8(str(resolved)):
        raise DatasetError(f"{listing.printable(str(resolved))}: the path is not valid UTF-8; rename the folder")
    try:
        fmt, base, manifest, eval_dir = _detect(resolved)
    except OSError as err:  # an unreadable folder: a message, not a traceback
        raise DatasetError(f"{resolved}: cannot read it ({err.strerror or err}); check its permissions") from err
    tree = FolderTree(resolved if resolved.is_dir() else base)
    store = index_store.IndexStore(index_dir) if use_index and not verify else None
    stored = store.load(resolved, fmt, base) if store is not None and not rescan else None
    top = tree.sink
    listed = _list_units(tree, fmt, base, manifest, stored.units if stored is not None else {})
    units = index_store.walk_units(tree, listed, stored, lambda entry: _walk_unit(tree, fmt, entry))
    index_store.read_headers(tree, units)  # of the walked units
    if verify:
        index_store.verify_rows(tree, units, progress)
    records = [u.finish() for u in units]
    frame, classes = _frame(units, stored, fmt)
    evalset, eval_states = index_store.eval_set(eval_dir, stored) if eval_dir is not None else (None, [])
    if store is not None:
        records_by_key = {r.key: r for r in records}
        fresh = StoredIndex(str(resolved), fmt, str(base), records_by_key, frame, classes, evalset, eval_states)
        store.save_if_changed(stored, fresh)
    failed = next((r.error for r in records if r.error), None)
    if failed:
        raise DatasetError(failed)
    problems = ProblemList(top.cap)
    problems.extend(top.items, top.dropped)
    for record in records:
        if record.problems or record.dropped:
            problems.extend(record.problems, record.dropped)
    tree.sink = problems
    if fmt == "mask" and manifest is not None:
        listing.check_train_csv(tree, manifest, {u.key for u in units})
    index = DatasetIndex(
        root=tree.root,
        format=fmt,
        frame=frame,
        classes=classes,
        has_attributes=fmt == "mask",
        manifest=manifest if fmt == "csv" else None,
    )
    if evalset is not None:
        index.eval = evalset
        problems.extend(evalset.problems)
    index.problems, index.more_problems = problems.items, problems.dropped
    if index.frame.empty:
        first = problems.items[0] if problems.items else None
        hint = f" ({len(problems.items) + problems.dropped} problems, first: {first.path}: {first.message})"
        raise DatasetError(f"{given}: holds no usable images{hint if first else ''}")
    return index


def _detect(root: Path) -> tuple[str, Path, Path | None, Path | None]:
    """(format, base folder, manifest or train.csv, eval folder) for a dataset root; nothing above it."""
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DatasetError(f"{root}: not a folder or a .csv manifest; give the dataset folder")
        return "csv", root.parent, root, None
    if (root / "train" / "images").is_dir():
        return "mask", root / "train" / "images", _maybe(root / "train" / "train.csv"), _eval_dir(root)
    if (root / "images").is_dir() and ((root / "train.csv").is_file() or _looks_like_people(root / "images")):
        return "mask", root / "images", _maybe(root / "train.csv"), None
    if _looks_like_people(root):
        return "mask", root, None, None
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


def _eval_dir(root: Path) -> Path | None:
    """root/eval when it holds info.csv and it, info.csv and images/ resolve inside the root (links followed)."""
    path = root / "eval"
    inside = all(root in p.resolve().parents for p in (path, path / "info.csv", path / "images"))
    return path if inside and (path / "info.csv").is_file() else None


def _looks_like_people(folder: Path) -> bool:
    """Most sub-folders named like `000001_female_Asian_45`."""
    try:
        names = [e.name for e in os.scandir(folder) if e.is_dir() and not images.is_junk(e.name)][:200]
    except OSError:
        return False
    return bool(names) and sum(bool(PERSON_RE.fullmatch(n)) for n in names) * 2 >= len(names)


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            return [c.strip().lower() for c in next(csv.reader(fh), [])]
    except (OSError, csv.Error):
        return []


def _list_units(tree: FolderTree, fmt: str, base: Path, manifest: Path | None, known) -> list[tuple[str, object]]:
    """(key, entry) of each unit in name order; what is wrong at the top level becomes a problem.
    ``known`` names units already stored (their folder names were checked then)."""
    if fmt == "csv":
        return [(manifest.name, manifest)]
    if not tree.first_visit(str(base)):
        return []
    units = []
    for entry in tree.entries(str(base)):
        if entry.is_dir() and (fmt != "mask" or entry.name in known or _person_name_ok(tree, entry)):
            units.append((entry.name, entry))
        elif entry.is_file() and (fmt == "mask" or images.is_image_name(entry.name)):
            stray = (
                "file outside any person folder"
                if fmt == "mask"
                else "image outside any class folder; move it into one"
            )
            tree.problem(entry.path, "stray_file", stray + "; skipped")
    return units


def _person_name_ok(tree: FolderTree, person: os.DirEntry) -> bool:
    match = PERSON_RE.fullmatch(person.name)
    if not match:
        tree.problem(
            person.path,
            "bad_folder_name",
            "folder name is not {id}_{gender}_{race}_{age} (e.g. 000001_female_Asian_45); rename it; skipped",
        )
        return False
    age = int(match["age"])
    if not 0 < age < 130:
        tree.problem(person.path, "bad_folder_name", f"age {age} is not plausible; fix the folder name; skipped")
        return False
    return True


def _walk_unit(tree: FolderTree, fmt: str, entry) -> list[_Candidate]:
    if fmt == "csv":
        return [
            _Candidate(row.path, tree.display(row.path), row.label, row.group, row.group)
            for row in listing.manifest_rows(tree, entry)
        ]
    if fmt == "imagefolder":
        return _class_candidates(tree, entry)
    if not tree.first_visit(entry):
        return []
    match = PERSON_RE.fullmatch(entry.name)
    gender = FOLDER_GENDERS.index(match["gender"].lower())
    return _person_photos(tree, entry, match["id"], gender, int(match["age"]))


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
                entry.path,
                "unexpected_file",
                "photo name is not one of mask1..mask5, incorrect_mask, normal; rename it; skipped",
            )
        elif stem.lower() in photos:
            first = photos[stem.lower()].name
            tree.problem(entry.path, "duplicate", f"second {stem.lower()} photo beside {first}; {first} is used")
        else:
            photos[stem.lower()] = entry
    missing = [p for p in PHOTOS if p not in photos]
    if missing:
        tree.problem(
            person.path,
            "missing_photo",
            f"person folder lacks {', '.join(missing)} ({7 - len(missing)} of 7 photos present and kept)",
        )
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
        )
        for photo, entry in sorted(photos.items(), key=lambda kv: PHOTOS.index(kv[0]))
    ]


def _class_candidates(tree: FolderTree, top: os.DirEntry) -> list[_Candidate]:
    candidates: list[_Candidate] = []
    for entry in tree.walk_files(top.path):
        if not images.is_image_name(entry.name):
            tree.problem(entry.path, "not_image", "not an image file (by its extension); skipped")
            continue
        stem = os.path.splitext(entry.name)[0]
        candidates.append(_Candidate(entry.path, tree.display(entry.path), top.name, stem, stem))
    if not candidates:
        tree.problem(top.path, "empty_class", "class folder holds no images; it is left out of the classes")
    return candidates


def _class_order(names: set[str]) -> list[str]:
    """Numeric labels in numeric order, others alphabetically."""
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _frame(units: list[ScanUnit], stored: StoredIndex | None, fmt: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows of reused units (from the stored frame) and of walked ones, labelled and sorted by rel."""
    reused = [u.key for u in units if u.reused is not None]
    if stored is not None and len(reused) == len(units) == len(stored.units):
        return stored.frame, stored.classes  # nothing changed: stored sorted and labelled
    # a row's unit: its person folder (mask), class folder (imagefolder), or the one manifest
    parts = [stored.rows_of(reused, "group" if fmt == "mask" else "class_name")] if stored and reused else []
    records = []
    for unit in units:
        for cand, header in unit.rows:
            if fmt == "mask":
                band = taskdefs.age_band(cand.age)
                name = taskdefs.CLASS_NAMES[taskdefs.encode_class(cand.mask, cand.gender, band)]
            else:
                band, name = -1, cand.class_key
            records.append(
                (
                    cand.path,
                    cand.rel,
                    -1,
                    name,
                    cand.group,
                    cand.person_id or cand.group,
                    cand.mask,
                    cand.gender,
                    band,
                    cand.age,
                    cand.photo,
                    header.width,
                    header.height,
                    header.format,
                )
            )
    if records or not parts:
        parts.append(_typed(pd.DataFrame.from_records(records, columns=FRAME_COLUMNS)))
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    classes = list(taskdefs.CLASS_NAMES) if fmt == "mask" else _class_order(set(frame["class_name"]))
    label_of = {name: i for i, name in enumerate(classes)}
    frame = frame.assign(label=frame["class_name"].map(label_of).astype("int64"))
    return frame.sort_values("rel", kind="stable").reset_index(drop=True), classes


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Column types that do not depend on whether there were rows (an empty frame is all object)."""
    strings = [c for c in FRAME_COLUMNS if c not in _INT_COLUMNS]
    return frame.astype({**dict.fromkeys(_INT_COLUMNS, "int64"), **dict.fromkeys(strings, "str")})
