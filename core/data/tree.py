"""Listing a dataset's files safely (a folder walk or a CSV manifest's rows), and the problems a scan reports.

:class:`FolderTree` lists a folder's entries sorted by name, skips junk (``._`` twins, ``.DS_Store``,
``Thumbs.db``), follows symbolic links only while they stay inside the dataset root, cuts link loops,
and notes each refusal as a :class:`Problem` naming the path, what is wrong and what to do. It also
records the state (inode, modification time) of every folder it walks, which is what keeps a
persisted index valid (core.data.index_store).

:func:`manifest_rows` streams a ``path,label[,group]`` CSV with the same rules: paths resolved and
kept inside the manifest's folder, bad rows reported and skipped.

Limits, from the environment (a hostile manifest must not cost minutes and gigabytes):

| variable                     | default   | meaning                                                     |
|------------------------------|-----------|-------------------------------------------------------------|
| WORKBENCH_MANIFEST_MAX_ROWS  | 2000000   | a CSV manifest with more data rows is refused (DatasetError) |
| WORKBENCH_MAX_PROBLEMS       | 1000      | problems kept per scan; the rest are only counted            |
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.data import images
from core.errors import ConfigError, DatasetError

MANIFEST_MAX_ROWS_ENV = "WORKBENCH_MANIFEST_MAX_ROWS"
MAX_PROBLEMS_ENV = "WORKBENCH_MAX_PROBLEMS"
DEFAULT_MANIFEST_MAX_ROWS = 2_000_000
DEFAULT_MAX_PROBLEMS = 1000
# A manifest's validity is tied to the folders its files lie in; past this many the manifest file
# alone keeps it (a million one-file folders would make every reopen a million stats).
MANIFEST_TRACKED_FOLDERS = 10_000

# (path, st_dev, st_ino, st_mtime_ns, st_size), or (path, -1, -1, -1, -1) for a path that is absent.
State = tuple[str, int, int, int, int]


def _env_limit(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from err
    if value < 1:
        raise ConfigError(f"environment variable {name}={raw!r} must be at least 1")
    return value


def manifest_max_rows() -> int:
    return _env_limit(MANIFEST_MAX_ROWS_ENV, DEFAULT_MANIFEST_MAX_ROWS)


def max_problems() -> int:
    return _env_limit(MAX_PROBLEMS_ENV, DEFAULT_MAX_PROBLEMS)


@dataclass
class Problem:
    path: str  # the file or folder at fault (relative to the dataset root when inside it)
    kind: str  # short machine-readable reason, see core.data.datasets
    message: str  # what is wrong and what to do


@dataclass
class ProblemList:
    """The first ``cap`` problems, and a count of those beyond (memory stays bounded)."""

    cap: int
    items: list[Problem] = field(default_factory=list)
    dropped: int = 0

    def append(self, problem: Problem) -> None:
        if len(self.items) < self.cap:
            self.items.append(problem)
        else:
            self.dropped += 1

    def extend(self, problems: list[Problem], dropped: int = 0) -> None:
        room = max(0, self.cap - len(self.items))
        self.items.extend(problems[:room])
        self.dropped += max(0, len(problems) - room) + dropped


def is_utf8(name: str) -> bool:
    """False for a name whose bytes are not UTF-8 (Python holds them as surrogates, which pandas'
    and pyarrow's strings, JSON files and the browser all refuse)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """``path`` with bytes that are not UTF-8 shown as escapes (``\\xe9``), so a message can carry it."""
    return path if is_utf8(path) else os.fsencode(path).decode("utf-8", "backslashreplace")


def path_state(path: str) -> State:
    """What must stay the same for a listing of ``path`` to stay valid (links followed)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError, TypeError):  # TypeError: a damaged stored state (not a path)
        return (path, -1, -1, -1, -1)
    return (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class FolderTree:
    """Walks a dataset folder: junk skipped, symlinks kept inside the root, loops cut, problems noted."""

    def __init__(self, root: Path, cap: int | None = None):
        self.root = root
        self.root_str = str(root)
        self.sink = ProblemList(max_problems() if cap is None else cap)
        self.walked: list[State] = []  # every folder first_visit let in, in order
        self.saw_link = False  # a symbolic link was met (its target can change without any folder's mtime)
        self._visited: set[tuple[int, int]] = set()

    @property
    def problems(self) -> list[Problem]:
        return self.sink.items

    def display(self, path: str) -> str:
        prefix = self.root_str + os.sep
        return path[len(prefix) :] if path.startswith(prefix) else path

    def problem(self, path: str, kind: str, message: str) -> None:
        self.sink.append(Problem(printable(self.display(path)), kind, message))

    def inside(self, path: str) -> bool:
        return path == self.root_str or path.startswith(self.root_str + os.sep)

    def visited(self, key: tuple[int, int]) -> bool:
        return key in self._visited

    def mark_visited(self, key: tuple[int, int]) -> None:
        self._visited.add(key)

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
            if not is_utf8(entry.name):
                self.problem(
                    entry.path, "bad_name", "the name is not valid UTF-8 (an old encoding?); rename it; skipped"
                )
                continue
            if entry.is_symlink():
                self.saw_link = True
                if not self._link_ok(entry):
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
        path = entry_or_path.path if isinstance(entry_or_path, os.DirEntry) else entry_or_path
        try:
            st = entry_or_path.stat() if isinstance(entry_or_path, os.DirEntry) else os.stat(entry_or_path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self._visited:
            self.problem(path, "symlink_loop", "folder reached a second time through a symbolic link; skipped")
            return False
        self._visited.add(key)
        self.walked.append((path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
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


# ----------------------------------------------------------------------------------------------
# CSV manifests


@dataclass(frozen=True)
class ManifestRow:
    line: int  # the row's line in the file (for messages)
    path: str  # resolved, inside the manifest's folder, an existing image file
    label: str
    group: str  # the group column, else the file's stem


def manifest_rows(tree: FolderTree, manifest: Path, max_rows: int | None = None) -> Iterator[ManifestRow]:
    """The usable rows of a ``path,label[,group]`` manifest, streamed; bad rows become problems.

    Raises DatasetError for an unreadable file, missing columns, or more than ``max_rows`` data rows
    (default: WORKBENCH_MANIFEST_MAX_ROWS), naming the file. Records the manifest's and its files'
    folders' states in ``tree.walked``.
    """
    limit = manifest_max_rows() if max_rows is None else max_rows
    tree.walked.append(path_state(str(manifest)))
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            yield from _manifest_rows(tree, manifest, csv.reader(fh), limit)
    except OSError as err:
        raise DatasetError(f"{manifest}: cannot read the CSV ({err.strerror or err})") from err
    except UnicodeDecodeError as err:
        raise DatasetError(f"{manifest}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from err
    except csv.Error as err:
        raise DatasetError(f"{manifest}: cannot read the CSV ({err})") from err


def _manifest_rows(tree: FolderTree, manifest: Path, reader, limit: int) -> Iterator[ManifestRow]:
    header = [c.strip().lower() for c in next(reader, [])]
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise DatasetError(
            f"{manifest}: missing column(s) {', '.join(missing)}; a manifest needs path,label "
            f"(optional group); found {', '.join(header) or 'nothing'}"
        )
    for col in header:
        if col not in ("path", "label", "group"):
            tree.problem(str(manifest), "unknown_column", f"column {col!r} is not path, label or group; ignored")
    at = {name: header.index(name) for name in ("path", "label", "group") if name in header}
    resolver = _PathResolver(tree, str(manifest.parent))
    seen: dict[str, int] = {}
    rows = 0
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue  # blank lines
        rows += 1
        if rows > limit:
            raise DatasetError(
                f"{manifest}: more than {limit:,} rows (the limit, {MANIFEST_MAX_ROWS_ENV}); split the "
                "manifest or raise the limit"
            )
        line = reader.line_num
        where = f"{manifest.name} line {line}"
        if len(fields) > len(header) and any(f.strip() for f in fields[len(header) :]):
            tree.problem(where, "bad_row", f"{where}: {len(fields)} fields but the header has {len(header)}; skipped")
            continue
        fields = fields + [""] * (len(header) - len(fields))
        raw, label = fields[at["path"]].strip(), fields[at["label"]].strip()
        if not raw or not label:
            tree.problem(raw or where, "bad_row", f"{where}: empty path or label; skipped")
            continue
        full, kind = resolver.resolve(raw)
        if kind == "bad_row":
            tree.problem(
                where, "bad_row", f"{where}: the path contains a NUL byte, is not UTF-8 or cannot be resolved; skipped"
            )
        elif kind == "outside_root":
            tree.problem(raw, "outside_root", f"{where}: the path leads outside the manifest's folder; skipped")
        elif kind == "missing_file":
            tree.problem(raw, "missing_file", f"{where}: the file does not exist; skipped")
        elif not images.is_image_name(os.path.basename(full)):
            tree.problem(raw, "not_image", f"{where}: not an image file (by its extension); skipped")
        elif full in seen:
            tree.problem(raw, "duplicate", f"{where}: already listed on line {seen[full]}; the first row is used")
        else:
            seen[full] = line
            group = fields[at["group"]].strip() if "group" in at else ""
            yield ManifestRow(line, full, label, group or os.path.splitext(os.path.basename(full))[0])
    tree.walked.extend(resolver.folder_states())


def check_train_csv(tree: FolderTree, train_csv: Path, seen: set[str]) -> None:
    """Folders that train.csv lists but the disk lacks (the folders themselves are the labels' source)."""
    limit = manifest_max_rows()
    try:
        with open(train_csv, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh)
            header = [c.strip().lower() for c in next(reader, [])]
            if "path" not in header:
                return
            at = header.index("path")
            for n, fields in enumerate(reader, start=1):
                if n > limit:
                    tree.problem(str(train_csv), "bad_row", f"more than {limit:,} rows; the rest is not checked")
                    return
                folder = fields[at].strip() if at < len(fields) else ""
                if folder and folder not in seen:
                    tree.problem(
                        str(train_csv), "missing_folder", f"train.csv lists {folder!r}, which is not in images/"
                    )
    except (OSError, csv.Error) as err:
        tree.problem(str(train_csv), "bad_row", f"cannot read train.csv ({err}); labels come from folder names")


class _PathResolver:
    """Resolves manifest paths with one ``lstat`` per row: a folder's real path is worked out once
    (a million rows in a few folders cost a million ``realpath`` calls, each an lstat per component,
    otherwise); only a file that is itself a link is resolved in full."""

    def __init__(self, tree: FolderTree, base: str):
        self.tree = tree
        self.base = base
        self.folders: dict[str, str] = {}

    def resolve(self, raw: str) -> tuple[str, str]:
        """(resolved path, "" when it is a file inside the root, else the problem kind)."""
        if "\x00" in raw:
            return "", "bad_row"
        full = ""
        try:
            joined = raw if os.path.isabs(raw) else os.path.join(self.base, raw)
            parent, name = os.path.split(joined)
            if name in ("", ".", ".."):
                full = os.path.realpath(joined)
            else:
                real_parent = self.folders.get(parent)
                if real_parent is None:
                    real_parent = os.path.realpath(parent)
                    if len(self.folders) < MANIFEST_TRACKED_FOLDERS:
                        self.folders[parent] = real_parent
                full = os.path.join(real_parent, name)
            st = os.lstat(full) if self.tree.inside(full) else None
            if st is not None and stat.S_ISLNK(st.st_mode):
                self.tree.saw_link = True  # its target's folder is not tracked: the manifest is rechecked each time
                full = os.path.realpath(full)
                st = os.stat(full) if self.tree.inside(full) else None
        except (FileNotFoundError, NotADirectoryError):
            return full, "missing_file"
        except (OSError, ValueError):
            return "", "bad_row"
        if not self.tree.inside(full):
            return full, "outside_root"
        if not stat.S_ISREG(st.st_mode):
            return full, "missing_file"
        return (full, "") if is_utf8(full) else ("", "bad_row")

    def folder_states(self) -> list[State]:
        """The states of the folders the rows' files lie in (or lack): adding a listed file changes one."""
        if len(self.folders) >= MANIFEST_TRACKED_FOLDERS:
            return [path_state(self.base)]
        return [path_state(p) for p in sorted(set(self.folders.values()) | {self.base})]
