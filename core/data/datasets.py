"""Dataset formats -> DatasetIndex (pandas frame) + problems. No pixel decoding.

CONTRACT (other modules code against these names):

Competition constants (mask-status layout)::

    MASK_NAMES = ("Wear", "Incorrect", "Not wear"); GENDER_NAMES = ("Male", "Female");
    AGE_NAMES = ("<30", "30-59", "60+")
    encode_class(mask, gender, age_band) -> int        # mask*6 + gender*3 + age_band
    decode_class(label) -> (mask, gender, age_band)
    CLASS_NAMES: list[str]                             # 18 names like "Wear · Male · <30"
    age_band(age_years) -> int
    TASKS = ("class", "mask", "gender", "age")         # 18 classes or one attribute

    @dataclass Problem: path: str, kind: str, message: str      # kind e.g. "truncated", "missing_photo"

    @dataclass EvalSet: root: Path, info_csv: Path, frame: pd.DataFrame (ImageID, path, exists), missing: list[str]
        (+ problems: list[Problem])

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

        task_labels(task) -> (np.ndarray[int], list[str])   # labels and class names for a TASK
        summary() -> dict          # the `scan --json` object (see the foundation issue)

    scan(root, verify=False, progress=None) -> DatasetIndex
        # detects the format (mask layout given as its top, train/ or train/images/; class folders;
        # a CSV manifest path,label[,group] as the file or a folder holding it). Raises DatasetError for a
        # root that does not exist or holds no images. progress(done, total) is called when verify.
    scan_eval(root) -> EvalSet      # an eval folder (info.csv + images/), or a top folder holding eval/

Page helpers (pure pandas): class_distribution, attribute_distribution, gender_age_table,
imbalance_ratio, size_table, channel_stats(index, sample=200, seed=0, progress=None).

Problem kinds: from headers "empty", "truncated", "not_image", "bomb", "unreadable" (and "undecodable"
with verify); from the tree "missing_photo", "bad_folder_name", "unexpected_file", "duplicate",
"missing_folder", "stray_file", "outside_root", "broken_link", "symlink_loop", "empty_class",
"unknown_column", "bad_row", "missing_file", "eval_missing".
"""

from __future__ import annotations

import csv
import os
import random
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import images
from core.errors import DatasetError, ImageError

MASK_NAMES = ("Wear", "Incorrect", "Not wear")
GENDER_NAMES = ("Male", "Female")
AGE_NAMES = ("<30", "30-59", "60+")
CLASS_NAMES: list[str] = [f"{m} · {g} · {a}" for m in MASK_NAMES for g in GENDER_NAMES for a in AGE_NAMES]
TASKS = ("class", "mask", "gender", "age")
ATTRIBUTE_NAMES = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_NAMES}
ATTRIBUTE_COLUMNS = {"mask": "mask", "gender": "gender", "age": "age_band"}

# The seven photos of a person and their mask state.
PHOTO_MASK = {"mask1": 0, "mask2": 0, "mask3": 0, "mask4": 0, "mask5": 0, "incorrect_mask": 1, "normal": 2}
PHOTOS = tuple(PHOTO_MASK)

# `{id}_{gender}_{race}_{age}`; real ids include a suffix such as 001498-1.
PERSON_RE = re.compile(r"^(?P<id>\d+(?:-\d+)?)_(?P<gender>male|female)_(?P<race>[^_]+)_(?P<age>\d{1,3})$", re.I)

FRAME_COLUMNS = [
    "path", "rel", "label", "class_name", "group", "person_id",
    "mask", "gender", "age_band", "age", "photo", "width", "height", "format",
]  # fmt: skip

ProgressFn = Callable[[int, int], None]

# Header reads wait on the file system (GIL released): a few threads overlap those waits.
HEADER_THREADS = 4


def encode_class(mask: int, gender: int, age_band: int) -> int:
    return int(mask) * 6 + int(gender) * 3 + int(age_band)


def decode_class(label: int) -> tuple[int, int, int]:
    label = int(label)
    return label // 6, (label // 3) % 2, label % 3


def age_band(age_years: int) -> int:
    """0: under 30, 1: 30 to 59, 2: 60 and over."""
    age_years = int(age_years)
    return 0 if age_years < 30 else (1 if age_years < 60 else 2)


@dataclass
class Problem:
    path: str  # the file or folder at fault (relative to the dataset root when inside it)
    kind: str  # short machine-readable reason, see the module docstring
    message: str  # what is wrong and what to do


@dataclass
class EvalSet:
    root: Path  # the eval folder
    info_csv: Path  # its info.csv (ImageID,ans)
    frame: pd.DataFrame  # ImageID, path (absolute), exists; same rows and order as info.csv
    missing: list[str]  # ImageIDs whose file is absent (or refused)
    problems: list[Problem] = field(default_factory=list)


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

    def task_labels(self, task: str) -> tuple[np.ndarray, list[str]]:
        """Integer labels per row and the class names for ``task`` (one of TASKS)."""
        if task not in TASKS:
            raise DatasetError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        if task == "class":
            return self.frame["label"].to_numpy(dtype=np.int64), list(self.classes)
        if not self.has_attributes:
            raise DatasetError(
                f"task {task!r} needs the mask-status layout (person folders); this {self.format} dataset has "
                "only classes: use the task 'class'"
            )
        return self.frame[ATTRIBUTE_COLUMNS[task]].to_numpy(dtype=np.int64), list(ATTRIBUTE_NAMES[task])

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
                attr: {name: int(n) for name, n in attribute_distribution(self, attr).items()}
                for attr in ATTRIBUTE_NAMES
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


class _Tree:
    """Walks a dataset folder: junk skipped, symlinks kept inside the root, loops cut, problems noted."""

    def __init__(self, root: Path):
        self.root = root
        self.root_str = str(root)
        self.problems: list[Problem] = []
        self._visited: set[tuple[int, int]] = set()

    def display(self, path: str) -> str:
        prefix = self.root_str + os.sep
        return path[len(prefix) :] if path.startswith(prefix) else path

    def problem(self, path: str, kind: str, message: str) -> None:
        self.problems.append(Problem(self.display(path), kind, message))

    def inside(self, path: str) -> bool:
        return path == self.root_str or path.startswith(self.root_str + os.sep)

    def entries(self, folder: str) -> list[os.DirEntry]:
        """Non-junk entries of ``folder`` sorted by name; symlinks that leave the root are reported."""
        try:
            with os.scandir(folder) as it:
                found = sorted((e for e in it if not images.is_junk(e.name)), key=lambda e: e.name)
        except OSError as err:
            self.problem(folder, "unreadable", f"cannot list the folder ({err.strerror}); check its permissions")
            return []
        kept = []
        for entry in found:
            if entry.is_symlink() and not self._link_ok(entry):
                continue
            kept.append(entry)
        return kept

    def _link_ok(self, entry: os.DirEntry) -> bool:
        target = os.path.realpath(entry.path)
        if not self.inside(target):
            self.problem(entry.path, "outside_root", "symbolic link pointing outside the dataset folder; skipped")
            return False
        if not os.path.exists(target):
            self.problem(entry.path, "broken_link", "symbolic link to a missing file; skipped")
            return False
        return True

    def first_visit(self, entry_or_path: os.DirEntry | str) -> bool:
        """False (and a problem when reached through a link) for a folder already walked: loops end."""
        try:
            st = entry_or_path.stat() if isinstance(entry_or_path, os.DirEntry) else os.stat(entry_or_path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self._visited:
            path = entry_or_path.path if isinstance(entry_or_path, os.DirEntry) else entry_or_path
            self.problem(path, "symlink_loop", "folder reached a second time through a symbolic link; skipped")
            return False
        self._visited.add(key)
        return True

    def walk_files(self, folder: str) -> Iterator[os.DirEntry]:
        """Every non-junk file under ``folder`` (recursively, links followed inside the root)."""
        if not self.first_visit(folder):
            return
        stack = [folder]
        while stack:
            current = stack.pop()
            subdirs = []
            for entry in self.entries(current):
                if entry.is_dir():
                    if self.first_visit(entry):
                        subdirs.append(entry.path)
                elif entry.is_file():
                    yield entry
            stack.extend(reversed(subdirs))


def scan(root: str | os.PathLike, verify: bool = False, progress: ProgressFn | None = None) -> DatasetIndex:
    """Index a dataset (see the module contract). Headers only unless ``verify`` (full decode, with progress)."""
    given = Path(root).expanduser()
    if not given.exists():
        raise DatasetError(f"{given}: no such folder or file; give a dataset folder (or a CSV manifest)")
    resolved = given.resolve()
    fmt, base, manifest, eval_dir = _detect(resolved)
    tree = _Tree(resolved if resolved.is_dir() else base)
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


def _mask_candidates(tree: _Tree, images_dir: Path, train_csv: Path | None) -> list[_Candidate]:
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
        gender = GENDER_NAMES.index(match["gender"].capitalize())
        candidates.extend(_person_photos(tree, person, match["id"], gender, age))
    if train_csv is not None:
        _check_train_csv(tree, train_csv, seen_folders)
    return candidates


def _person_photos(tree: _Tree, person: os.DirEntry, person_id: str, gender: int, age: int) -> list[_Candidate]:
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
            path=entry.path, rel=tree.display(entry.path), class_key="", group=person.name,
            person_id=person_id, mask=PHOTO_MASK[photo], gender=gender, age=age, photo=photo,
        )  # fmt: skip
        for photo, entry in sorted(photos.items(), key=lambda kv: PHOTOS.index(kv[0]))
    ]


def _check_train_csv(tree: _Tree, train_csv: Path, seen: set[str]) -> None:
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


def _folder_candidates(tree: _Tree) -> list[_Candidate]:
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


def _csv_candidates(tree: _Tree, manifest: Path) -> list[_Candidate]:
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


def _read_headers(tree: _Tree, candidates: list[_Candidate]) -> list[tuple[_Candidate, images.ImageHeader]]:
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


def _verify_rows(tree: _Tree, rows: list, progress: ProgressFn | None) -> list:
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


def _build_index(tree: _Tree, fmt: str, rows: list, manifest: Path | None) -> DatasetIndex:
    if fmt == "mask":
        classes = list(CLASS_NAMES)
    else:
        classes = _class_order({cand.class_key for cand, _ in rows})
    label_of = {name: i for i, name in enumerate(classes)}
    records = []
    for cand, header in rows:
        if fmt == "mask":
            band = age_band(cand.age)
            label = cand.mask * 6 + cand.gender * 3 + band
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


# ----------------------------------------------------------------------------------------------
# Eval set


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


# ----------------------------------------------------------------------------------------------
# Page helpers: distributions and statistics


def class_distribution(index: DatasetIndex) -> pd.DataFrame:
    """label, class_name, images, people: one row per class (zeros included), in label order."""
    frame = index.frame
    images = frame["label"].value_counts()
    people = frame.groupby("label")["group"].nunique()
    return pd.DataFrame(
        {
            "label": range(len(index.classes)),
            "class_name": index.classes,
            "images": [int(images.get(i, 0)) for i in range(len(index.classes))],
            "people": [int(people.get(i, 0)) for i in range(len(index.classes))],
        }
    )


def attribute_distribution(index: DatasetIndex, attribute: str) -> pd.Series:
    """Images per value name of ``attribute`` ("mask", "gender" or "age"), zeros included."""
    names = ATTRIBUTE_NAMES[attribute]
    counts = index.frame[ATTRIBUTE_COLUMNS[attribute]].value_counts()
    return pd.Series([int(counts.get(i, 0)) for i in range(len(names))], index=list(names), name=attribute)


def gender_age_table(index: DatasetIndex, unit: str = "people") -> pd.DataFrame:
    """Gender (rows) x age band (columns): people (one per group) or images."""
    frame = index.frame
    if unit == "people":
        frame = frame.drop_duplicates("group")
    table = pd.crosstab(frame["gender"], frame["age_band"]).reindex(index=[0, 1], columns=[0, 1, 2], fill_value=0)
    table.index = list(GENDER_NAMES)
    table.columns = list(AGE_NAMES)
    return table.astype("int64")


def imbalance_ratio(index: DatasetIndex) -> float:
    """Largest class / smallest non-empty class (inf when a class is empty)."""
    counts = class_distribution(index)["images"]
    smallest = int(counts.min())
    return float("inf") if smallest == 0 else float(counts.max()) / smallest


def size_table(index: DatasetIndex) -> pd.DataFrame:
    """width, height, images: one row per distinct (upright) size, most common first."""
    table = index.frame.groupby(["width", "height"]).size().reset_index(name="images")
    return table.sort_values(["images", "width", "height"], ascending=[False, True, True]).reset_index(drop=True)


def channel_stats(
    index: DatasetIndex, sample: int = 200, seed: int = 0, progress: ProgressFn | None = None, side: int = 128
) -> dict:
    """Per-channel mean/std (0..1 scale, RGB) over a random sample, decoded at reduced size.

    Returns {"mean": [r, g, b], "std": [r, g, b], "n": images used}: the values for Normalize.
    """
    paths = list(index.frame["path"])
    chosen = random.Random(seed).sample(paths, min(sample, len(paths)))
    total = np.zeros(3)
    total_sq = np.zeros(3)
    pixels = 0
    used = 0
    for done, path in enumerate(chosen, start=1):
        try:
            im = images.open_rgb(path, min_size=(side, side))
        except ImageError:
            continue
        arr = np.asarray(im, dtype=np.float64).reshape(-1, 3) / 255.0
        total += arr.sum(0)
        total_sq += (arr * arr).sum(0)
        pixels += arr.shape[0]
        used += 1
        if progress:
            progress(done, len(chosen))
    if not pixels:
        raise DatasetError("no readable image in the sample; check the problems table")
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean * mean, 0.0))
    return {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std], "n": used}
