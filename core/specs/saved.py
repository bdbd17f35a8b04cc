"""Specs as JSON files, and train/eval pairs saved by name under the specs folder (settings.specs_dir).

A spec file is a JSON list of steps; a pair file is ``{"name": ..., "train": [...], "eval": [...]}``.
Errors name the file (and "(train)"/"(eval)" inside a pair). The ``parse_*``/``load_*`` functions
return validated plain lists (what the page's editor holds); ``load_spec_pair`` returns
TransformSpecs for callers that go on to build or check them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import SpecError
from core.specs.presets import PRESETS, preset
from core.specs.spec import TransformSpec, as_spec


def spec_to_json(spec: Any) -> str:
    """A spec as pretty JSON text (one step per line is easiest to read and diff)."""
    steps = as_spec(spec).to_list()
    return "[\n" + ",\n".join("  " + json.dumps(s) for s in steps) + "\n]\n"


def pair_to_json(train: Any, eval_: Any, name: str = "") -> str:
    doc = {"name": name, "train": as_spec(train).to_list(), "eval": as_spec(eval_).to_list()}
    return json.dumps(doc, indent=2) + "\n"


def _parse_json(text: str | bytes, source: str) -> Any:
    try:
        return json.loads(text)
    except UnicodeDecodeError as err:
        raise SpecError(f"{source}: not a text file ({err.reason})") from err
    except json.JSONDecodeError as err:
        raise SpecError(f"{source}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err


def _spec_document(text: str | bytes, source: str) -> tuple[TransformSpec, TransformSpec | None]:
    doc = _parse_json(text, source)
    if isinstance(doc, dict) and "train" in doc:
        unknown = set(doc) - {"name", "train", "eval"}
        if unknown:
            raise SpecError(f"{source}: unknown keys {sorted(unknown)}; a pair has name, train and eval")
        train = TransformSpec.parse(doc["train"], f"{source} (train)")
        eval_ = TransformSpec.parse(doc["eval"], f"{source} (eval)") if "eval" in doc else None
        return train, eval_
    return TransformSpec.parse(doc, source), None


def _read_spec_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise SpecError(f"{path}: cannot read the file ({err.strerror or err})") from err


def parse_spec_json(text: str | bytes, source: str = "spec") -> list[dict]:
    """JSON text of a spec (a list of steps) -> validated plain spec; errors start with ``source``."""
    return TransformSpec.parse(_parse_json(text, source), source).to_list()


def parse_spec_document(text: str | bytes, source: str = "spec") -> tuple[list[dict], list[dict] | None]:
    """A spec (list) or a pair ({"train": [...], "eval": [...]}) -> (train, eval or None), validated, plain."""
    train, eval_ = _spec_document(text, source)
    return train.to_list(), eval_.to_list() if eval_ is not None else None


def load_spec_file(path: str | os.PathLike) -> list[dict]:
    """A spec JSON file -> validated plain spec; SpecError names the file."""
    return _spec_file(path).to_list()


def load_spec_document(path: str | os.PathLike) -> tuple[list[dict], list[dict] | None]:
    """A spec or pair JSON file -> (train, eval or None), validated, plain; SpecError names the file."""
    return parse_spec_document(_read_spec_bytes(Path(path)), str(path))


def load_spec_pair(
    train_path: str | os.PathLike, eval_path: str | os.PathLike | None = None
) -> tuple[TransformSpec, TransformSpec]:
    """(train, eval) TransformSpecs from two spec files, or from one pair file when ``eval_path`` is None."""
    if eval_path is None:
        train, eval_ = _spec_document(_read_spec_bytes(Path(train_path)), str(train_path))
        if eval_ is None:
            raise SpecError(f"{train_path}: holds one spec; give the evaluation spec as a second file")
        return train, eval_
    return _spec_file(train_path), _spec_file(eval_path)


def _spec_file(path: str | os.PathLike) -> TransformSpec:
    return TransformSpec.parse(_parse_json(_read_spec_bytes(Path(path)), str(path)), str(path))


_PAIR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_pair_name(name: str) -> str:
    """The name if it is usable as a file name; SpecError otherwise."""
    if not isinstance(name, str) or not _PAIR_NAME.fullmatch(name) or name.endswith(".json") or ".." in name:
        raise SpecError(
            f"{name!r} is not a usable name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _specs_dir(folder: str | os.PathLike | None) -> Path:
    if folder is not None:
        return Path(folder)
    from core import settings

    return settings.load().specs_dir


def _pair_path(name: str, folder: str | os.PathLike | None) -> Path:
    from core.fsutil import resolve_inside

    base = _specs_dir(folder)
    return resolve_inside(base, f"{check_pair_name(name)}.json")


def save_named_pair(
    name: str, train: Any, eval_: Any, folder: str | os.PathLike | None = None, overwrite: bool = False
) -> Path:
    """Save a validated (train, eval) pair as <specs_dir>/<name>.json (atomically); returns the path.

    An existing pair of that name is replaced only with ``overwrite``: a saved pair may be what a
    run was trained with, and losing it silently loses how to reproduce the run."""
    from core.fsutil import atomic_write_text

    text = pair_to_json(train, eval_, name=check_pair_name(name))
    path = _pair_path(name, folder)
    if path.exists() and not overwrite:
        raise SpecError(f"a pair named {name!r} already exists ({path}): choose another name, or tick Overwrite")
    atomic_write_text(path, text)
    return path


def list_named_pairs(folder: str | os.PathLike | None = None) -> list[str]:
    """Names of the saved pairs, sorted."""
    base = _specs_dir(folder)
    if not base.is_dir():
        return []
    return sorted(p.stem for p in base.glob("*.json") if p.is_file() and _PAIR_NAME.fullmatch(p.stem))


def load_named_pair(name: str, folder: str | os.PathLike | None = None) -> tuple[list[dict], list[dict]]:
    """(train, eval) of a saved pair, validated; SpecError when missing or invalid."""
    path = _pair_path(name, folder)
    if not path.is_file():
        raise SpecError(f"no saved spec pair named {name!r} in {path.parent}")
    train, eval_ = parse_spec_document(path.read_bytes(), str(path))
    if eval_ is None:
        raise SpecError(f'{path}: a saved pair needs both "train" and "eval"')
    return train, eval_


def resolve_pair(
    name: str, img_size: Sequence[int] | None = None, folder: str | os.PathLike | None = None
) -> tuple[list[dict], list[dict]]:
    """A preset by name, else a saved pair by name (img_size retargets presets only)."""
    if name in PRESETS:
        return preset(name, img_size)
    return load_named_pair(name, folder)
