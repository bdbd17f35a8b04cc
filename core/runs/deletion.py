"""Deleting a run: its folder, and the decoded-image caches that no other run would read.

A run's decoded-image cache entries (``<cache_dir>/decoded/<key>.u8`` + ``<key>.json``, see
core.training.loader) are not recorded in the run folder, but they are derivable: training keys an entry
by the dataset's image list (paths, sizes, mtimes), the deterministic prefix of a spec and its output
size, and it builds one entry for the train spec and one for the eval spec (when they differ) when the
config says ``cache: "memmap"``. ``delete_run`` re-derives those keys by scanning the run's dataset.

The rule for sharing: an entry is removed only when no other run under the same models folder (archived
runs included) uses the same dataset folder and a spec with the same deterministic prefix — such a run
would read that very entry (the same images give the same key). An entry whose dataset has changed or
vanished since cannot be found this way and is left alone: the cache folder is safe to empty by hand.

Thumbnails belong to the dataset (the Dataset page reads them whatever the runs), so they are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from core import runs, settings
from core.errors import RunError, WorkbenchError
from core.runs import jobs
from core.runs.folder import ACTIVE_STATES, RunFolder
from core.runs.journal import resolve_run


def delete_run(
    ref: RunFolder | str | os.PathLike,
    models_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Delete a run folder and its unshared decoded-image cache entries.

    Refused (RunError) while the run's job is queued or running: cancel it first. Returns
    ``{"run": id, "path": folder, "cache_removed": [files], "cache_kept": [keys still used by other runs]}``.
    """
    run = resolve_run(ref, models_dir)
    status = jobs.reconcile(run)
    if status.get("state") in ACTIVE_STATES:
        raise RunError(f"run {run.id} is {status['state']} (pid {status.get('pid')}): cancel it before deleting it")
    # Hold the writer lock while deleting, so a resume racing this delete is refused, not half-run.
    lock_fd = runs.lock_run_folder(run)
    try:
        if runs.read_status(run).get("state") in ACTIVE_STATES:
            raise RunError(f"run {run.id} was relaunched: cancel it before deleting it")
        config = runs.read_config(run)
        by_prefix = _keys_by_prefix(config)
        parent = Path(models_dir) if models_dir else run.root.parent
        shared = _shared_keys(run, config, by_prefix, parent)
        keys = set(by_prefix.values())
        shutil.rmtree(run.root)
    finally:
        runs.unlock_run_folder(lock_fd)
    folder = Path(cache_dir or settings.load().cache_dir) / "decoded"
    removed = []
    for key in sorted(keys - shared):
        for path in (folder / f"{key}.u8", folder / f"{key}.json"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(str(path))
    return {"run": run.id, "path": str(run.root), "cache_removed": removed, "cache_kept": sorted(shared)}


def _cache_recipe(config: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(resolved dataset folder, {prefix id: prefix}) for the specs a training config caches, or None.

    The prefix is what core.training.loader caches: the spec's leading deterministic steps."""
    if config.get("kind", "train") != "train" or config.get("cache") != "memmap" or not config.get("data"):
        return None
    from core.training.loader import split_of

    prefixes = {}
    for name in ("train_spec", "eval_spec"):
        try:
            prefix = split_of(config.get(name) or []).prefix_spec
        except WorkbenchError:
            continue
        if len(prefix):
            prefixes[_prefix_id(prefix)] = prefix
    return _dataset_folder(str(config["data"])), prefixes


def _dataset_folder(data: str) -> str:
    """The dataset folder a relative ``data`` meant: background jobs run in the repository folder."""
    path = Path(data)
    if not path.is_absolute() and not path.exists():
        path = settings.REPO_ROOT / path
    return str(path.resolve())


def _prefix_id(prefix) -> str:
    return json.dumps([dict(step) for step in prefix], sort_keys=True, default=list)


def run_cache_keys(run: RunFolder) -> set[str]:
    """The decoded-cache keys training this run built or read (empty when the dataset cannot be scanned)."""
    return set(_keys_by_prefix(runs.read_config(run)).values())


def _keys_by_prefix(config: dict[str, Any]) -> dict[str, str]:
    """{prefix as JSON: cache key} for the config's cached specs ({} when nothing is cached or findable)."""
    recipe = _cache_recipe(config)
    if not recipe or not recipe[1]:
        return {}
    from core.data import datasets
    from core.training.loader import cache_key, split_of

    data, prefixes = recipe
    try:
        frame = datasets.scan(data).frame.reset_index(drop=True)
    except (WorkbenchError, OSError):
        return {}  # the dataset is gone or broken: its entries cannot be told apart
    paths = frame["path"].astype(str).tolist()
    sizes = list(zip(frame["height"].astype(int), frame["width"].astype(int), strict=True))
    keys = {}
    for pid, prefix in prefixes.items():
        out_hw = split_of(prefix).prefix_output_size(sizes)
        if out_hw is not None:
            keys[pid] = cache_key(paths, prefix, out_hw)
    return keys


def _shared_keys(run: RunFolder, config: dict[str, Any], keys: dict[str, str], parent: Path) -> set[str]:
    """Keys of ``run`` that another run under ``parent`` would read: same dataset folder, same prefix."""
    mine = _cache_recipe(config)
    if not keys or mine is None:
        return set()
    shared: set[str] = set()
    for other in runs.list_run_folders(parent):
        if other.root.resolve() == run.root.resolve():
            continue
        try:
            theirs = _cache_recipe(runs.read_config(other))
        except (RunError, OSError):
            continue
        if theirs and theirs[0] == mine[0]:
            shared |= {keys[pid] for pid in theirs[1] if pid in keys}
    return shared
