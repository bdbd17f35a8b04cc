"""Configuration read from the environment, with defaults that suit a laptop.

| variable                    | default            | meaning                                              |
|-----------------------------|--------------------|------------------------------------------------------|
| WORKBENCH_DATA_ROOTS        | ./data             | os.pathsep-separated folders the app may open datasets under |
| WORKBENCH_MODELS_DIR        | ./models           | where training runs are written                      |
| WORKBENCH_SUBMISSIONS_DIR   | ./submissions      | where prediction jobs and submission.csv files go    |
| WORKBENCH_SPECS_DIR         | ./specs            | named train/eval transform spec pairs (Augmentations page) |
| WORKBENCH_CACHE_DIR         | ./.cache           | thumbnails and decoded-image caches                  |
| WORKBENCH_MAX_JOBS          | 1                  | background jobs that may run at once                 |
| WORKBENCH_UPLOAD_MAX_MEMBERS| 100000             | zip upload: most members                             |
| WORKBENCH_UPLOAD_MAX_BYTES  | 4 GiB              | zip upload: most uncompressed bytes                  |
| WORKBENCH_UPLOAD_MAX_RATIO  | 200                | zip upload: highest per-member compression ratio     |
"""

from __future__ import annotations

import os
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
    upload_max_members: int = 100_000  # zip upload limits, see core.archive
    upload_max_bytes: int = 4 << 30
    upload_max_ratio: int = 200
    extra: dict = field(default_factory=dict)


def load() -> Settings:
    """Read the settings from the environment (call again after changing it)."""
    roots_raw = os.environ.get("WORKBENCH_DATA_ROOTS") or "data"
    roots = tuple(
        (Path(p) if Path(p).is_absolute() else Path.cwd() / p).resolve()
        for p in roots_raw.split(os.pathsep)
        if p
    )
    return Settings(
        data_roots=roots,
        models_dir=_path("WORKBENCH_MODELS_DIR", "models"),
        submissions_dir=_path("WORKBENCH_SUBMISSIONS_DIR", "submissions"),
        specs_dir=_path("WORKBENCH_SPECS_DIR", "specs"),
        cache_dir=_path("WORKBENCH_CACHE_DIR", ".cache"),
        max_jobs=max(1, _int("WORKBENCH_MAX_JOBS", 1)),
        upload_max_members=_int("WORKBENCH_UPLOAD_MAX_MEMBERS", 100_000),
        upload_max_bytes=_int("WORKBENCH_UPLOAD_MAX_BYTES", 4 << 30),
        upload_max_ratio=_int("WORKBENCH_UPLOAD_MAX_RATIO", 200),
    )
