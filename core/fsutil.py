"""Small filesystem helpers: atomic writes, paths kept inside a root, spreadsheet-safe cells."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import UnsafePathError


def resolve_inside(root: str | os.PathLike, candidate: str | os.PathLike) -> Path:
    """Resolve ``candidate`` (relative to ``root`` unless absolute) and require it inside ``root``.

    Symlinks are followed, so a link pointing outside the root is refused too.
    """
    root_path = Path(root).resolve()
    cand = Path(candidate)
    full = (cand if cand.is_absolute() else root_path / cand).resolve()
    if full != root_path and root_path not in full.parents:
        raise UnsafePathError(f"{candidate}: path leads outside {root_path}; keep files inside the dataset folder")
    return full


def is_inside(root: str | os.PathLike, candidate: str | os.PathLike) -> bool:
    try:
        resolve_inside(root, candidate)
    except (UnsafePathError, OSError, RuntimeError):
        return False
    return True


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, fsync, ``os.replace``, fsync the folder.

    The file gets the permissions an ordinary ``open(path, "w")`` would give it: the existing file's
    mode when it is replaced, else 0666 less the umask (mkstemp alone would make every file 0600,
    unreadable to the group that shares a models folder). The folder is synced after the rename so
    that a power cut cannot bring back the old file. On any error (disk full included) the temp file
    is removed and the old ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_folder(path.parent)


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode) & 0o777
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only swap it,
    which would briefly give files created by other threads the wrong mode)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable; a file system that cannot sync folders is let be."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text), "w")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """Read JSON; a missing or half-written file gives ``default`` instead of an exception."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return default


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets run as a formula at a cell's start


def looks_like_formula(value: Any) -> bool:
    """A string a spreadsheet would run as a formula when the file is opened there."""
    return isinstance(value, str) and value.startswith(FORMULA_PREFIXES)


def spreadsheet_safe(value: Any) -> Any:
    """Neutralise a cell a spreadsheet would run as a formula (leading = + - @) by prefixing a quote."""
    return "'" + value if looks_like_formula(value) else value
