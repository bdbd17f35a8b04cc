"""Configuration read from the environment, with defaults that suit a laptop.

| variable                    | default            | meaning                                              |
|-----------------------------|--------------------|------------------------------------------------------|
| WORKBENCH_DATA_ROOTS        | ./data             | os.pathsep-separated folders the app may open datasets under |
| WORKBENCH_MODELS_DIR        | ./models           | where training runs are written                      |
| WORKBENCH_SUBMISSIONS_DIR   | ./submissions      | where prediction jobs and submission.csv files go    |
| WORKBENCH_SPECS_DIR         | ./specs            | named train/eval transform spec pairs (Augmentations page) |
| WORKBENCH_CACHE_DIR         | ./.cache           | thumbnails and decoded-image caches                  |
| WORKBENCH_THUMBNAIL_CACHE_MB| 512                | thumbnail disk cache budget; least recently used out first; 0 = off |
| WORKBENCH_DECODED_CACHE_MB  | 4096               | decoded-image (memmap) cache budget, kept with core.cachebudget |
| WORKBENCH_MAX_JOBS          | 1                  | background jobs that may run at once                 |
| WORKBENCH_TRAIN_THREADS     | 0 (measured)       | torch CPU threads for training; fixed for bit-exact resumes |
| WORKBENCH_UPLOAD_MAX_MEMBERS| 100000             | zip upload: most members                             |
| WORKBENCH_UPLOAD_MAX_BYTES  | 4 GiB              | zip upload: most uncompressed bytes                  |
| WORKBENCH_UPLOAD_MAX_RATIO  | 200                | zip upload: highest per-member compression ratio     |
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _path(name: str, default: str) -> Path:
    value = os.environ.get(name) or default
    path = Path(value)
    return (path if path.is_absolute() else Path.cwd() / path).resolve()


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as err:
        from core.errors import ConfigError

        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from err


@dataclass(frozen=True)
class Settings:
    data_roots: tuple[Path, ...]  # folders whose sub-folders the app may open as datasets
    models_dir: Path  # training runs: models/<run-id>/
    submissions_dir: Path  # prediction jobs: submissions/<job-id>/
    specs_dir: Path  # saved train/eval transform spec pairs: specs/<name>.json
    cache_dir: Path  # thumbnails and decoded-image caches (safe to delete)
    max_jobs: int = 1  # background jobs running at once; more wait as queued
    train_threads: int = 0  # torch CPU threads for training: 0 = measured as the job runs (core.training.cputhreads)
    upload_max_members: int = 100_000  # zip upload limits, see core.data.archive
    upload_max_bytes: int = 4 << 30
    upload_max_ratio: int = 200
    thumbnail_cache_mb: int = 512  # thumbnail disk cache (one SQLite file): LRU-evicted past this many MiB
    # <cache_dir>/decoded/ memmaps, LRU-evicted past this many MiB: the full competition train set at
    # half resolution (18,900 x 192x256x3) is ~2.8 GB, so one such cache and a few small ones fit.
    decoded_cache_mb: int = 4096
    extra: dict = field(default_factory=dict)


def load() -> Settings:
    """Read the settings from the environment (call again after changing it)."""
    roots_raw = os.environ.get("WORKBENCH_DATA_ROOTS") or "data"
    roots = tuple(
        (Path(p) if Path(p).is_absolute() else Path.cwd() / p).resolve() for p in roots_raw.split(os.pathsep) if p
    )
    return Settings(
        data_roots=roots,
        models_dir=_path("WORKBENCH_MODELS_DIR", "models"),
        submissions_dir=_path("WORKBENCH_SUBMISSIONS_DIR", "submissions"),
        specs_dir=_path("WORKBENCH_SPECS_DIR", "specs"),
        cache_dir=_path("WORKBENCH_CACHE_DIR", ".cache"),
        max_jobs=max(1, _int("WORKBENCH_MAX_JOBS", 1)),
        train_threads=max(0, _int("WORKBENCH_TRAIN_THREADS", 0)),
        upload_max_members=_int("WORKBENCH_UPLOAD_MAX_MEMBERS", 100_000),
        upload_max_bytes=_int("WORKBENCH_UPLOAD_MAX_BYTES", 4 << 30),
        upload_max_ratio=_int("WORKBENCH_UPLOAD_MAX_RATIO", 200),
        thumbnail_cache_mb=max(0, _int("WORKBENCH_THUMBNAIL_CACHE_MB", 512)),
        decoded_cache_mb=max(0, _int("WORKBENCH_DECODED_CACHE_MB", 4096)),
    )


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Ask glibc to reuse freed blocks of up to 32 MiB instead of returning them to the kernel.

    A batch of activations is a few MiB. With glibc's defaults it is often mmap'ed and unmapped on
    every forward pass, and each new batch pays page faults to map and zero it again: measured 0.4-0.5
    ms of system time per image and ~20% slower predictions at batch 64 on a CPU. Fixed thresholds
    keep those blocks in the heap. Process-wide, so the CLI (and so every background job) calls it,
    not the library functions. Returns False where this is not glibc (the defaults then stay).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
    )
