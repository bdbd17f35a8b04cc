"""Small filesystem helpers: atomic writes, paths kept inside a root, spreadsheet-safe cells."""

from __future__ import annotations

import json
import os
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
    """Write through ``write(fileobj)`` into a temp file beside ``path``, fsync, then ``os.replace``.

    On any error (disk full included) the temp file is removed and the old ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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


_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """Neutralise a cell a spreadsheet would run as a formula (leading = + - @) by prefixing a quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value
