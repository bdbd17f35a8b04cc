"""The persisted dataset index, and the units an incremental scan is made of: reopening a
100,000-photo dataset reads folder states instead of 100,000 image headers.

Measured (bench/scale.py, 113,400 photos on 2 busy cores): a full header scan takes 7-9 s. A
reopen must still check that nothing changed, so what is checked is kept cheap: the state (inode,
modification time) of every folder each unit walked. A unit is one top-level folder (a person
folder of the mask layout, a class folder with its sub-folders) or a whole CSV manifest (the file
and the folders its rows point into). A unit whose folders all match is reused as stored; any other
is walked again, alone, and only its files' headers are read. Replacing a file in place (same name)
changes no folder's modification time: ``scan --rescan`` (``rescan=True``) forces a full scan. A
unit that met a symbolic link is never reused (a link's target changes without any folder of the
dataset changing). A failed scan is stored too (the refusing unit's message, or no usable rows), so
a refused manifest is not read again until it changes. The eval folder is kept while its info.csv
and images/ are unchanged.

Layout, a few files per dataset under ``<cache_dir>/index/``: ``<key>.frame.parquet`` (the rows;
``path`` is rebuilt from root + rel), ``<key>.eval.parquet`` (the eval folder's rows, when there is
one), ``<key>.units.json`` (each unit's folder states and problems; the eval folder's) and
``<key>.meta.json`` (small: root, format, classes, version, and a token the others carry as well, so
that files from two different writes are never trusted together). Each is written atomically, the
meta last. ``key`` is a hash of the resolved root, and the stored root must equal the asked one: an
index is never used for another root. A file that cannot be read as expected is ignored (the next
scan rebuilds it). Every save evicts the indexes of roots that no longer exist and all but the
``MAX_INDEXES`` most recently used.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.data import images
from core.data.evalset import EvalSet, scan_eval
from core.data.tree import FolderTree, Problem, ProblemList, State, path_state
from core.errors import DatasetError, ImageError
from core.fsutil import atomic_write, atomic_write_json, read_json

INDEX_VERSION = 1
MAX_INDEXES = 32  # datasets whose index is kept; the least recently used go first
STALE_TEMP_S = 3600  # a temp file this old is left over from a killed writer
ProgressFn = Callable[[int, int], None]
# Header reads wait on the file system (GIL released): a few threads overlap those waits.
HEADER_THREADS = 4
_TOKEN_KEY = b"workbench_index_token"
_SUFFIXES = (".frame.parquet", ".eval.parquet", ".units.json", ".meta.json")


@dataclass
class UnitRecord:
    """What one unit of a dataset held when it was scanned, and what keeps that valid."""

    key: str  # the top-level folder's name, or the manifest's file name
    states: list[State]  # every folder (or file) whose change makes the unit stale
    problems: list[Problem] = field(default_factory=list)
    dropped: int = 0  # problems beyond the cap, counted only
    cacheable: bool = True  # False when the walk met a symbolic link
    error: str | None = None  # the DatasetError message when the unit refused the whole dataset

    def is_current(self) -> bool:
        """True when every recorded folder still has the recorded state (costs one stat each)."""
        return self.cacheable and all(path_state(state[0]) == tuple(state) for state in self.states)

    def folder_keys(self) -> list[tuple[int, int]]:
        """(device, inode) of the folders walked: a reused unit still marks them visited (loops)."""
        return [(state[1], state[2]) for state in self.states if state[1] >= 0]

    def reusable(self, tree: FolderTree) -> bool:
        """Current, and none of its folders already walked by an earlier unit (a loop a full scan would
        cut); then its folders count as walked."""
        if not self.is_current():
            return False
        keys = self.folder_keys()  # the states equal the disk's: well-formed
        if any(map(tree.visited, keys)):
            return False
        for key in keys:
            tree.mark_visited(key)
        return True


@dataclass
class StoredIndex:
    root: str  # the resolved dataset root it was made for
    format: str
    base: str  # the folder the units are listed in
    units: dict[str, UnitRecord]  # in listing order
    frame: pd.DataFrame  # the rows of every unit (core.data.datasets.FRAME_COLUMNS)
    classes: list[str] = field(default_factory=list)
    eval: EvalSet | None = None  # the eval folder, scanned
    eval_states: list[State] = field(default_factory=list)  # its info.csv's and images/' states then

    def rows_of(self, keys: list[str], unit_column: str) -> pd.DataFrame:
        """The stored rows of the units ``keys``; ``unit_column`` names each row's unit."""
        if self.format == "csv":
            return self.frame  # one unit: the manifest
        import pyarrow as pa
        import pyarrow.compute as pc

        # pandas' isin on a string column costs ~1 s for 113,000 rows; pyarrow's is_in ~20 ms
        column = pa.array(self.frame[unit_column], type=pa.string())
        keep = pc.is_in(column, value_set=pa.array(keys, type=pa.string())).to_numpy(zero_copy_only=False)
        return self.frame[keep.astype(bool)]

    def differs_from(self, other: StoredIndex) -> bool:
        """Whether ``other`` (made by a scan that started from this one) holds anything new."""
        return (
            len(other.units) != len(self.units)
            or any(record is not self.units.get(key) for key, record in other.units.items())
            or other.eval is not self.eval
        )


@dataclass
class ScanUnit:
    """One unit during a scan: reused as stored, or walked now (its items then get their headers read)."""

    key: str
    reused: UnitRecord | None  # the stored record when the unit is unchanged
    sink: ProblemList | None = None  # the walked unit's problems
    items: list = field(default_factory=list)  # what the walk found (candidate files)
    rows: list = field(default_factory=list)  # the items kept, with their headers
    record: UnitRecord | None = None

    def finish(self) -> UnitRecord:
        """The unit's record: the stored one, or the walk's with every problem found since."""
        if self.reused is not None:
            return self.reused
        self.record.problems, self.record.dropped = self.sink.items, self.sink.dropped
        return self.record


def walk_units(tree: FolderTree, listed: list, stored: StoredIndex | None, walk: Callable) -> list[ScanUnit]:
    """Each ``(key, entry)`` of the root's listing, reused from ``stored`` when its folders are
    unchanged, else ``walk(entry)`` (its problems and folder states recorded by ``tree``). A walk
    refusing the whole dataset (DatasetError) is recorded as the unit's error."""
    top = tree.sink
    units: list[ScanUnit] = []
    for key, entry in listed:
        old = stored.units.get(key) if stored is not None else None
        if old is not None and old.reusable(tree):
            units.append(ScanUnit(key, old))
            continue
        unit = ScanUnit(key, None, sink=ProblemList(top.cap))
        tree.sink, tree.walked, tree.saw_link = unit.sink, [], isinstance(entry, os.DirEntry) and entry.is_symlink()
        try:
            unit.items = walk(entry)
        except DatasetError as err:
            unit.record = UnitRecord(key, list(tree.walked), error=str(err))
        # a unit that walked no folder (its folder was reached earlier through a link) has no state to check
        unit.record = unit.record or UnitRecord(key, list(tree.walked), cacheable=not tree.saw_link and tree.walked)
        units.append(unit)
    tree.sink = top
    return units


def read_headers(tree: FolderTree, units: list[ScanUnit]) -> None:
    """Headers of every item of the walked ``units``; failures become their unit's problems."""
    units = [u for u in units if u.reused is None]
    results = iter(_map_paths(images.read_header, [c.path for u in units for c in u.items], HEADER_THREADS))
    for unit in units:
        tree.sink = unit.sink
        for cand in unit.items:
            result = next(results)
            if isinstance(result, ImageError):
                tree.problem(cand.path, result.kind, result.message + "; skipped")
            else:
                unit.rows.append((cand, result))


def verify_rows(tree: FolderTree, units: list[ScanUnit], progress: ProgressFn | None) -> None:
    """Decode every kept image once (Pillow releases the GIL while decoding, so threads use both cores)."""
    threads = max(1, min(4, os.cpu_count() or 1))
    results = iter(_map_paths(images.verify, [c.path for u in units for c, _ in u.rows], threads, progress))
    for unit in units:
        rows, unit.rows, tree.sink = unit.rows, [], unit.sink
        for row in rows:
            err = next(results)
            if isinstance(err, ImageError):
                tree.problem(
                    row[0].path, "undecodable" if err.kind == "unreadable" else err.kind, err.message + "; skipped"
                )
            else:
                unit.rows.append(row)


def _map_paths(fn, paths: list[str], threads: int, progress: ProgressFn | None = None) -> list:
    """``fn(path)`` for each path in order, ImageError returned rather than raised. File system waits
    and Pillow's decoding release the GIL, so a few threads overlap them."""

    def chunk(part: list[str]) -> list:
        out = []
        for path in part:
            try:
                out.append(fn(path))
            except ImageError as err:
                out.append(err)
        return out

    # Executor.map makes one future per item for threads (chunksize is ignored): hand it chunks.
    size = 50 if progress else 512
    parts = [paths[i : i + size] for i in range(0, len(paths), size)]
    results: list = []
    if progress:
        progress(0, len(paths))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for part in pool.map(chunk, parts) if len(parts) > 1 and threads > 1 else map(chunk, parts):
            results.extend(part)
            if progress:
                progress(len(results), len(paths))
    return results


def eval_set(eval_dir: Path, stored: StoredIndex | None) -> tuple[EvalSet, list[State]]:
    """The eval folder and the states it was read at: the stored one while its info.csv and images/
    are unchanged (75,000 rows cost ~0.2 s to read), else scanned now."""
    states = [path_state(str(eval_dir / "info.csv")), path_state(str(eval_dir / "images"))]  # before reading
    if stored is not None and stored.eval is not None and stored.eval_states == states:
        return stored.eval, stored.eval_states
    return scan_eval(eval_dir), states


def default_folder() -> Path:
    from core import settings

    return settings.load().cache_dir / "index"


class IndexStore:
    """The persisted indexes under one folder (default: ``<WORKBENCH_CACHE_DIR>/index``)."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()

    def files_for(self, root: str | os.PathLike) -> tuple[Path, Path, Path, Path]:
        """(frame, eval frame, units, meta) files where the index of the resolved ``root`` lives."""
        key = hashlib.sha256(os.fsencode(str(root))).hexdigest()[:24]
        return tuple(self.folder / f"{key}{suffix}" for suffix in _SUFFIXES)

    def load(self, root: str | os.PathLike, fmt: str | None = None, base: str | os.PathLike | None = None):
        """The StoredIndex of ``root`` (of format ``fmt`` listed in ``base``, when given); None when
        absent, unreadable, of another version, another root or another layout."""
        frame_file, eval_file, units_file, meta_file = self.files_for(root)
        meta = read_json(meta_file)
        if not isinstance(meta, dict) or meta.get("version") != INDEX_VERSION or meta.get("root") != str(root):
            return None
        if (fmt is not None and meta.get("format") != fmt) or (base is not None and meta.get("base") != str(base)):
            return None
        try:
            stored = self._read(str(root), meta, frame_file, eval_file, units_file)
        except Exception:  # noqa: BLE001 - any damage (truncated, foreign, hand-edited) means: scan again
            return None
        _touch(meta_file)
        return stored

    def _read(self, root: str, meta: dict, frame_file: Path, eval_file: Path, units_file: Path) -> StoredIndex | None:
        import pyarrow.parquet as pq

        token = meta["token"]
        table = pq.read_table(frame_file)
        with _no_gc():  # 16,000 units are ~200,000 small objects: collections would scan them over and over
            units = json.loads(units_file.read_bytes())
            records = _units_from_json(units["units"])
        if {_token_of(table), units["token"]} != {token}:
            return None  # files from two different writes
        frame = table.to_pandas()
        if meta["path_from_rel"]:
            frame.insert(0, "path", root + os.sep + frame["rel"])
        stored = StoredIndex(root, str(meta["format"]), str(meta["base"]), records, frame, list(meta["classes"]))
        if units["eval"] is not None:
            ev, eval_table = units["eval"], pq.read_table(eval_file)
            if _token_of(eval_table) != token:
                return None
            ids = eval_table.to_pandas()
            paths = ev["images"] + os.sep + ids["ImageID"].str.strip()
            frame = pd.DataFrame({"ImageID": ids["ImageID"], "path": paths, "exists": ids["exists"]})
            problems = [Problem(*p) for p in ev["problems"]]
            stored.eval = EvalSet(
                Path(ev["root"]), Path(ev["info_csv"]), frame, list(ev["missing"]), problems, ev["images"]
            )
            stored.eval_states = [tuple(state) for state in ev["states"]]
        return stored

    def save_if_changed(self, old: StoredIndex | None, new: StoredIndex) -> None:
        if old is None or old.differs_from(new):
            self.save(new)

    def save(self, stored: StoredIndex) -> None:
        """Write the frames and the units, then the meta naming their token (the commit); then evict.
        Failures are let be: the index is a cache, and the scan it would speed up is done."""
        frame_file, eval_file, units_file, meta_file = self.files_for(stored.root)
        token = uuid.uuid4().hex
        frame = stored.frame
        # Every row's path is the root and its rel (both resolved): stored once, not 100,000 times.
        path_from_rel = bool((frame["path"] == stored.root + os.sep + frame["rel"]).all())
        units = {"token": token, "units": [_unit_to_json(u) for u in stored.units.values()], "eval": None}
        ev = stored.eval
        if ev is not None:
            units["eval"] = {
                "root": str(ev.root), "info_csv": str(ev.info_csv), "images": ev.images_dir,
                "missing": list(ev.missing), "problems": [[p.path, p.kind, p.message] for p in ev.problems],
                "states": [list(state) for state in stored.eval_states],
            }  # fmt: skip
        meta = {
            "version": INDEX_VERSION, "root": stored.root, "format": stored.format, "base": stored.base,
            "classes": list(stored.classes), "token": token, "rows": int(len(frame)), "path_from_rel": path_from_rel,
        }  # fmt: skip
        try:
            _write_parquet(frame_file, frame.drop(columns="path") if path_from_rel else frame, token)
            if ev is not None:
                _write_parquet(eval_file, ev.frame[["ImageID", "exists"]], token)
            atomic_write(units_file, lambda fh: fh.write(json.dumps(units)), "w")
            atomic_write_json(meta_file, meta)
        except Exception:  # noqa: BLE001 - disk full, read-only cache, a name that is not UTF-8...: no index
            return
        if ev is None:
            _remove(eval_file)
        self.evict()

    def evict(self) -> list[Path]:
        """Delete the indexes of roots that no longer exist, all but the MAX_INDEXES most recently
        used, files whose meta is gone, and stale temp files. Returns the files deleted."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        now = time.time()
        groups: dict[str, list[Path]] = {}
        removed: list[Path] = []
        for name in names:
            path = self.folder / name
            if name.startswith("."):  # an atomic write's temp file: stale when its writer was killed
                if name.endswith(".tmp") and now - _mtime(path) > STALE_TEMP_S:
                    removed += _remove(path)
            elif name.endswith(_SUFFIXES):
                groups.setdefault(name.split(".", 1)[0], []).append(path)
        live: list[tuple[float, list[Path]]] = []
        for key, files in groups.items():
            meta_file = self.folder / f"{key}{_SUFFIXES[-1]}"
            meta = read_json(meta_file) if meta_file in files else None
            root = meta.get("root") if isinstance(meta, dict) else None
            if isinstance(root, str) and os.path.exists(root):
                live.append((_mtime(meta_file), files))
            elif meta is not None or now - max(map(_mtime, files)) > STALE_TEMP_S:  # not a write in progress
                removed += _remove(*files)
        live.sort(key=lambda item: item[0], reverse=True)
        for _used, files in live[MAX_INDEXES:]:
            removed += _remove(*files)
        return removed


def _write_parquet(path: Path, frame: pd.DataFrame, token: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _TOKEN_KEY: token.encode()})
    atomic_write(path, lambda fh: pq.write_table(table, fh))


def _token_of(table) -> str:
    return (table.schema.metadata or {}).get(_TOKEN_KEY, b"").decode()


def _unit_to_json(unit: UnitRecord) -> list:
    problems = [[p.path, p.kind, p.message] for p in unit.problems]
    return [unit.key, [list(s) for s in unit.states], problems, unit.dropped, unit.cacheable, unit.error]


def _units_from_json(rows: list) -> dict[str, UnitRecord]:
    """Built without per-field checks (16,000 units load in a few ms): a damaged value either fails
    here (the index is ignored) or makes its unit's states differ from the disk's (it is rescanned)."""
    units = {}
    for key, states, problems, dropped, cacheable, error in rows:
        units[key] = UnitRecord(
            key, [tuple(s) for s in states], [Problem(*p) for p in problems], dropped, cacheable, error
        )
    return units


def _touch(path: Path) -> None:
    """Mark an index as used now (its meta's modification time orders the eviction)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _remove(*paths: Path) -> list[Path]:
    gone = []
    for path in paths:
        try:
            path.unlink()
        except OSError:
            continue
        gone.append(path)
    return gone


@contextlib.contextmanager
def _no_gc():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
