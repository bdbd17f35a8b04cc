"""Walking a dataset folder safely, and the problems a scan reports.

:class:`FolderTree` lists a folder's entries sorted by name, skips junk (``._`` twins, ``.DS_Store``,
``Thumbs.db``), follows symbolic links only while they stay inside the dataset root, cuts link loops,
and notes each refusal as a :class:`Problem` naming the path, what is wrong and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.data import images


@dataclass
class Problem:
    path: str  # the file or folder at fault (relative to the dataset root when inside it)
    kind: str  # short machine-readable reason, see core.data.datasets
    message: str  # what is wrong and what to do


class FolderTree:
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
