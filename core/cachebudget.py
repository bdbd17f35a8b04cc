"""Keep a folder of cache files under a byte budget, least recently used first.

A cache folder (``<cache_dir>/decoded/`` of memmapped images, for one) only ever grows: every new
spec or image size adds an entry. ``enforce_budget`` deletes the entries used longest ago until the
folder fits its budget. An entry is one file, or the files ``group`` maps to one key (a memmap and
its metadata, by ``by_stem``): they go together, and the entry counts as used when any of its files
was. A file's last use is the later of its access and modification times; as many file systems
update access times lazily (relatime), a reader calls ``touch_used`` when it reuses a file.

Never deleted: files in (or under a folder in) ``protected`` (those a running job uses), the whole
entry of such a file, and files modified less than ``min_age_s`` ago (a build in progress writes its
temp file continuously). On Linux a file another process still has memory-mapped stays readable
after its deletion, so evicting an entry another job uses costs that job nothing; only its disk
space comes back when the job ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Eviction:
    """What ``enforce_budget`` did."""

    removed: list[Path] = field(default_factory=list)  # files deleted, oldest entry first
    freed_bytes: int = 0
    kept_bytes: int = 0  # bytes left in the folder (protected and fresh files included)


@dataclass
class _Entry:
    files: list[tuple[Path, int]] = field(default_factory=list)  # (path, size)
    last_use: float = 0.0
    evictable: bool = True

    @property
    def size(self) -> int:
        return sum(size for _path, size in self.files)


def by_stem(path: Path) -> str:
    """Group files by their name up to the first dot: ``k1.u8`` and ``k1.json`` are one entry."""
    return str(path.parent / path.name.lstrip(".").split(".", 1)[0])


def touch_used(path: str | os.PathLike) -> None:
    """Mark ``path`` as used now (its access time) without changing its modification time."""
    try:
        st = os.stat(path)
        os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
    except OSError:
        pass  # gone or read-only: it will simply look older


def enforce_budget(
    folder: str | os.PathLike,
    max_bytes: int,
    protected: Iterable[str | os.PathLike] = (),
    group: Callable[[Path], str] | None = None,
    min_age_s: float = 0.0,
) -> Eviction:
    """Delete the least recently used entries under ``folder`` until it holds at most ``max_bytes``.

    Empty sub-folders left behind are removed too. A missing folder is an empty one. Files that vanish
    or cannot be deleted meanwhile (another process evicting too) are skipped, never an error.
    """
    root = Path(folder)
    entries = _entries(root, [Path(p).resolve() for p in protected], group, time.time() - min_age_s)
    total = sum(entry.size for entry in entries.values())
    result = Eviction(kept_bytes=total)
    for entry in sorted(entries.values(), key=lambda e: e.last_use):
        if result.kept_bytes <= max_bytes:
            break
        if not entry.evictable:
            continue
        for path, size in entry.files:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                continue
            result.removed.append(path)
            result.freed_bytes += size
            result.kept_bytes -= size
    _remove_empty_folders(root, {p.parent for p in result.removed})
    return result


# The caches under settings.cache_dir, by the name the Dataset page shows: the thumbnail SQLite file
# (core.data.thumbnails), decoded-image memmaps (core.training.loader), images uploaded on the
# Augmentations page, and the persisted dataset indexes (core.data.index_store).
CACHE_FOLDERS = {"thumbnails": "thumbs", "decoded": "decoded", "uploads": "uploads", "index": "index"}


def cache_usage(cache_dir: str | os.PathLike) -> dict[str, int]:
    """Bytes on disk of each cache under ``cache_dir`` (names as in CACHE_FOLDERS; a missing one is 0)."""
    return {name: folder_bytes(Path(cache_dir) / sub) for name, sub in CACHE_FOLDERS.items()}


def folder_bytes(folder: str | os.PathLike) -> int:
    """Total size of the files under ``folder`` (links not followed; files vanishing meanwhile skipped)."""
    total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _entries(root: Path, protected: list[Path], group: Callable[[Path], str] | None, fresh_after: float) -> dict:
    entries: dict[str, _Entry] = {}
    if not root.is_dir():
        return entries
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            entry = entries.setdefault(group(path) if group else str(path), _Entry())
            entry.files.append((path, st.st_size))
            entry.last_use = max(entry.last_use, st.st_atime, st.st_mtime)
            if st.st_mtime > fresh_after or _is_protected(path, protected):
                entry.evictable = False
    return entries


def _is_protected(path: Path, protected: list[Path]) -> bool:
    if not protected:
        return False
    resolved = path.resolve()
    return any(resolved == p or p in resolved.parents for p in protected)


def _remove_empty_folders(root: Path, folders: set[Path]) -> None:
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or gone): stop climbing
            folder = folder.parent
