"""The run journal: what a person writes about a run, kept beside it in the run folder.

Two files, both owned by this module (the job never touches them, so a running run can be noted)::

    <run>/journal.json   {"name": str | null, "tags": [str, ...], "starred": bool, "archived": bool,
                          "sweep": sweep id | null, "trial": int | null}   (written atomically)
    <run>/notes.md       free Markdown notes (written atomically)

``archived`` hides a run from lists (``annotate`` drops it) while its folder stays on disk; ``sweep`` and
``trial`` link a run to the experiment plan (core.sweeps) that launched it. A missing or damaged
journal.json reads as the defaults, so every existing run has a journal.

Read-modify-write of journal.json is serialised by an flock on ``<run>/.journal.lock``: a tag added on
the page while the CLI stars the run keeps both. Deleting a run lives in ``core.runs.deletion`` (it must
ask the job machinery whether the run is active, and ``core.runs.jobs`` imports this module).
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from core import settings
from core.errors import RunError
from core.fsutil import atomic_write_json, atomic_write_text, read_json
from core.runs.folder import RunFolder

JOURNAL_FILE = "journal.json"
NOTES_FILE = "notes.md"
_LOCK_FILE = ".journal.lock"
DEFAULTS: dict[str, Any] = {"name": None, "tags": [], "starred": False, "archived": False, "sweep": None, "trial": None}
JOURNAL_COLUMNS = ["name", "tags", "starred", "archived", "sweep", "trial"]

MAX_NAME = 200
MAX_NOTES_BYTES = 1 << 20  # notes are prose, not a place for data
# Tags are typed on a command line and shown as chips: one word, no spaces or commas.
# fullmatch: "$" would also accept a trailing newline.
_TAG_OK = re.compile(r"[^\W][\w.:/+-]{0,49}")


def journal_path(run: RunFolder) -> Path:
    return run.root / JOURNAL_FILE


def notes_path(run: RunFolder) -> Path:
    return run.root / NOTES_FILE


def resolve_run(ref: RunFolder | str | os.PathLike, models_dir: str | os.PathLike | None = None) -> RunFolder:
    """A run given as a folder, a path, or a run id under the models folder; RunError when there is none."""
    if isinstance(ref, RunFolder):
        run = ref
    else:
        path = Path(ref)
        parent = Path(models_dir) if models_dir else settings.load().models_dir
        run = RunFolder(path if path.is_dir() or path.is_absolute() or os.sep in str(ref) else parent / str(ref))
    if not run.config.is_file():
        raise RunError(f"run {ref} not found: give a run folder or a run id under the models folder")
    return run


# ---- journal.json ----------------------------------------------------------------------------------


def read_journal(run: RunFolder) -> dict[str, Any]:
    """The run's journal with every field present (defaults for a missing or damaged file)."""
    raw = read_json(journal_path(run), default=None)
    journal = dict(DEFAULTS, tags=[])
    if isinstance(raw, dict):
        for key in DEFAULTS:
            if key in raw:
                journal[key] = raw[key]
    journal["tags"] = [str(t) for t in journal["tags"]] if isinstance(journal["tags"], list) else []
    journal["starred"] = bool(journal["starred"])
    journal["archived"] = bool(journal["archived"])
    return journal


@contextmanager
def _journal_lock(run: RunFolder) -> Iterator[None]:
    if not run.root.is_dir():
        raise RunError(f"run {run.id}: folder {run.root} not found")
    fd = os.open(run.root / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_journal(run: RunFolder, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` (journal keys only) into journal.json under the journal lock; return the journal."""
    unknown = sorted(set(fields) - set(DEFAULTS))
    if unknown:
        raise RunError(f"{unknown[0]}: not a journal field (known: {', '.join(DEFAULTS)})")
    with _journal_lock(run):
        journal = read_journal(run)
        journal.update(fields)
        atomic_write_json(journal_path(run), journal)
    return journal


def _edit_tags(run: RunFolder, change) -> dict[str, Any]:
    with _journal_lock(run):
        journal = read_journal(run)
        journal["tags"] = change(journal["tags"])
        atomic_write_json(journal_path(run), journal)
    return journal


def set_name(run: RunFolder, name: str | None) -> dict[str, Any]:
    """A display name for the run (None or "" clears it: the run id shows instead)."""
    name = (name or "").strip()
    if "\n" in name or len(name) > MAX_NAME:
        raise RunError(f"name: keep the display name to one line of at most {MAX_NAME} characters")
    return update_journal(run, name=name or None)


def check_tag(tag: str) -> str:
    tag = str(tag).strip()
    if not _TAG_OK.fullmatch(tag):
        raise RunError(
            f"tag {tag!r} is not allowed: one word of at most 50 letters, digits or . : / + - _ "
            "(no spaces or commas), starting with a letter or digit"
        )
    return tag


def add_tags(run: RunFolder, tags: Iterable[str]) -> dict[str, Any]:
    """Add tags (kept in the order first given, each once)."""
    new = [check_tag(t) for t in tags]
    return _edit_tags(run, lambda old: list(dict.fromkeys([*old, *new])))


def remove_tags(run: RunFolder, tags: Iterable[str]) -> dict[str, Any]:
    """Remove tags; a tag the run does not have is ignored."""
    gone = {str(t).strip() for t in tags}
    return _edit_tags(run, lambda old: [t for t in old if t not in gone])


def set_starred(run: RunFolder, starred: bool = True) -> dict[str, Any]:
    return update_journal(run, starred=bool(starred))


def archive(run: RunFolder) -> dict[str, Any]:
    """Hide the run from lists; its folder, checkpoints and predictions stay on disk."""
    return update_journal(run, archived=True)


def restore(run: RunFolder) -> dict[str, Any]:
    """Show an archived run in lists again."""
    return update_journal(run, archived=False)


def link_to_sweep(run: RunFolder, sweep_id: str, trial: int) -> dict[str, Any]:
    """Record that ``run`` is trial ``trial`` of sweep ``sweep_id`` (core.sweeps calls it)."""
    return update_journal(run, sweep=str(sweep_id), trial=int(trial))


# ---- notes.md -------------------------------------------------------------------------------------


def read_notes(run: RunFolder) -> str:
    """The run's Markdown notes ("" when none). Show them rendered as Markdown, never as HTML."""
    try:
        return notes_path(run).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def write_notes(run: RunFolder, text: str) -> None:
    """Replace the run's notes (atomically); empty text removes notes.md."""
    text = str(text)
    if len(text.encode("utf-8")) > MAX_NOTES_BYTES:
        raise RunError(f"notes: at most {MAX_NOTES_BYTES // 1024} KiB of text; keep data files elsewhere")
    if not run.root.is_dir():
        raise RunError(f"run {run.id}: folder {run.root} not found")
    if text.strip():
        atomic_write_text(notes_path(run), text if text.endswith("\n") else text + "\n")
    else:
        notes_path(run).unlink(missing_ok=True)


def append_note(run: RunFolder, text: str) -> str:
    """Add a paragraph to the notes (what ``jobs note`` does); return the whole notes."""
    old = read_notes(run).rstrip("\n")
    new = f"{old}\n\n{text.strip()}" if old else text.strip()
    write_notes(run, new)
    return read_notes(run)


# ---- lists of runs --------------------------------------------------------------------------------


def annotate(
    frame: pd.DataFrame,
    include_archived: bool = False,
    tag: str | None = None,
    starred: bool | None = None,
) -> pd.DataFrame:
    """``frame`` (rows with a ``path`` column, as ``jobs.list_runs`` gives) with the journal's columns.

    Adds name (the display name, else the old name column, else the run id), tags (list), starred,
    archived, sweep and trial. Archived runs are dropped unless ``include_archived``; ``tag`` keeps runs
    carrying that tag and ``starred=True`` keeps starred runs only.
    """
    frame = frame.copy()
    journals = [read_journal(RunFolder(p)) for p in frame.get("path", pd.Series(dtype=str))]
    fallback = frame["name"] if "name" in frame.columns else frame.get("id", pd.Series([None] * len(frame)))
    frame["name"] = [j["name"] or old for j, old in zip(journals, fallback.tolist(), strict=True)]
    for column in JOURNAL_COLUMNS[1:]:
        frame[column] = pd.Series([j[column] for j in journals], index=frame.index, dtype=object)
    frame["starred"] = frame["starred"].astype(bool)
    frame["archived"] = frame["archived"].astype(bool)
    return filter_runs(frame, include_archived=include_archived, tag=tag, starred=starred)


def filter_runs(
    frame: pd.DataFrame, include_archived: bool = False, tag: str | None = None, starred: bool | None = None
) -> pd.DataFrame:
    """Rows of an annotated frame kept by the filters (see ``annotate``)."""
    keep = pd.Series(True, index=frame.index)
    if not include_archived:
        keep &= ~frame["archived"].astype(bool)
    if tag:
        keep &= frame["tags"].map(lambda tags: tag in (tags or []))
    if starred:
        keep &= frame["starred"].astype(bool)
    return frame[keep].reset_index(drop=True)


def all_tags(frame: pd.DataFrame) -> list[str]:
    """Every tag used in an annotated frame, sorted (for a filter picker)."""
    return sorted({t for tags in frame.get("tags", []) for t in (tags or [])})
