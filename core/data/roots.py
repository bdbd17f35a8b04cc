"""Which dataset folders the app may offer and open: one rule, applied by every page.

A dataset the pages open must lie inside a configured data root (``WORKBENCH_DATA_ROOTS``) once
every symbolic link is followed: a link in a data root pointing at ``/`` would otherwise be offered
and walked, while the Submission page refuses the same path. So a path is resolved once, checked,
and the resolved path is what gets scanned. A relative path is read against the data roots, never
against the server's working directory.

    list_datasets(roots) -> list[Path]                    # resolved folders to offer, inside a root
    resolve_dataset(root_or_name, roots) -> Path          # raises UnsafePathError / DatasetError
    open_dataset(root_or_name, roots, ...) -> DatasetIndex | WorkbenchError
        # resolve + scan with the persisted index; the error is returned, not raised, so that a page's
        # st.cache_data caches a failed scan too (an exception is never cached, so every rerun repeated it)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from core.data.tree import is_utf8
from core.errors import DatasetError, UnsafePathError, WorkbenchError


def _resolved_roots(roots: Iterable[str | os.PathLike]) -> list[Path]:
    return [Path(r).expanduser().resolve() for r in roots]


def _inside_any(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def list_datasets(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """The folders directly under each data root (hidden ones skipped), resolved; a link is kept only
    when its target lies inside a data root, and a folder reached twice is listed once."""
    resolved_roots = _resolved_roots(roots)
    found: list[Path] = []
    seen: set[Path] = set()
    for root in resolved_roots:
        try:
            children = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError:
            continue  # a configured root that is missing or unreadable offers nothing
        for child in children:
            if child.name.startswith(".") or not is_utf8(child.name):
                continue  # hidden, or a name no page can show (its scan would refuse it too)
            try:
                target = Path(child.path).resolve(strict=True)
            except (OSError, RuntimeError):
                continue  # broken link or loop
            if target.is_dir() and _inside_any(target, resolved_roots) and target not in seen:
                seen.add(target)
                found.append(target)
    return found


def resolve_dataset(root_or_name: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Path:
    """The dataset folder (or CSV manifest) ``root_or_name`` names, resolved and inside a data root.

    A relative path or a bare name is read against each data root in turn (the first where it exists).
    Raises UnsafePathError for a path that is empty or leads outside every data root (links
    followed), DatasetError for one that does not exist.
    """
    resolved_roots = _resolved_roots(roots)
    text = os.fspath(root_or_name).strip() if root_or_name is not None else ""
    where = ", ".join(map(str, resolved_roots)) or "none configured"
    if not text or "\x00" in text:
        raise UnsafePathError(f"{text or '(empty)'!r}: choose a dataset inside the data roots ({where})")
    given = Path(text).expanduser()
    candidates = [given] if given.is_absolute() else [root / given for root in resolved_roots]
    inside = []
    for candidate in candidates:
        try:
            full = candidate.resolve()
        except (OSError, RuntimeError):
            continue
        if _inside_any(full, resolved_roots):
            inside.append(full)
    if not inside:
        raise UnsafePathError(f"{text}: leads outside the data roots ({where}); choose a dataset inside them")
    existing = next((path for path in inside if path.exists()), None)
    if existing is None:
        raise DatasetError(f"{text}: no such dataset folder in the data roots ({where})")
    return existing


def open_dataset(
    root_or_name: str | os.PathLike,
    roots: Iterable[str | os.PathLike],
    *,
    rescan: bool = False,
    index_dir: str | os.PathLike | None = None,
):
    """``resolve_dataset`` then ``datasets.scan(..., use_index=True)``: the DatasetIndex, or the
    WorkbenchError that refused it (returned, so a cache can keep it; it pickles)."""
    from core.data import datasets

    try:
        path = resolve_dataset(root_or_name, roots)
        return datasets.scan(path, use_index=True, rescan=rescan, index_dir=index_dir)
    except (DatasetError, UnsafePathError) as err:
        return err
    except WorkbenchError as err:  # e.g. ConfigError from a bad limit: as a plain DatasetError, picklable
        return DatasetError(str(err))
