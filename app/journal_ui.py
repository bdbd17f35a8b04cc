"""The run journal on the Training page: filters for the runs table, and the selected run's display
name, tags, star, Markdown notes, archive/restore and delete (with a confirmation step).

Everything is read from and written to the run folder through core.runs.journal and
core.runs.deletion, so what a user writes here survives app restarts and shows in the CLI too.
Widget keys start with ``train_`` (this is the Training page's UI); per-run widgets carry the run id,
so switching runs never carries one run's unsaved text into another.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app import widgets
from core import runs
from core.errors import WorkbenchError
from core.runs import deletion, journal

FILTER_TAG_KEY = "train_filter_tag"
FILTER_STARRED_KEY = "train_filter_starred"
SHOW_ARCHIVED_KEY = "train_show_archived"
CONFIRM_DELETE_KEY = "train_confirm_delete"  # the run id whose delete waits for "Yes, delete"
FLASH_KEY = "train_flash"  # (kind, message) shown once after an action that reruns the page
ALL_TAGS = "(all tags)"
STAR = "★"


# ---- filtering the runs table ------------------------------------------------------------------------


def filter_controls(table: pd.DataFrame) -> dict[str, Any]:
    """The tag, star and archived filters above the runs table; returns journal.filter_runs' arguments."""
    c1, c2, c3, _ = st.columns([2, 1.2, 1.2, 1.6])
    tags = journal.all_tags(table)
    tag = c1.selectbox("Filter by tag", [ALL_TAGS, *tags], key=FILTER_TAG_KEY, format_func=str)
    starred = c2.toggle(f"{STAR} Starred only", key=FILTER_STARRED_KEY)
    archived = c3.toggle("Show archived", key=SHOW_ARCHIVED_KEY, help="Archived runs are hidden, not deleted.")
    return {"include_archived": archived, "tag": None if tag == ALL_TAGS else tag, "starred": starred or None}


def apply_filters(table: pd.DataFrame, filters: dict[str, Any]) -> pd.DataFrame:
    return journal.filter_runs(table, **filters)


def run_label(row: dict[str, Any]) -> str:
    """How a run is named in pickers: its star, display name, and the id when the name differs."""
    star = f"{STAR} " if row.get("starred") else ""
    archived = " (archived)" if row.get("archived") else ""
    name, run_id = str(row.get("name") or row["id"]), str(row["id"])
    return f"{star}{name}{'' if name == run_id else f' · {run_id}'}{archived}"


def tags_text(tags: Any) -> str:
    return " ".join(tags) if isinstance(tags, list) else ""


def parse_tags(text: str) -> list[str]:
    """Tags typed as words separated by spaces or commas, each checked by the journal (RunError names it)."""
    return list(dict.fromkeys(journal.check_tag(t) for t in re.split(r"[\s,]+", text.strip()) if t))


# ---- flash messages -----------------------------------------------------------------------------------


def flash(kind: str, message: str) -> None:
    """A message for the next page run (the action that set it reruns the page, which drops this run's output)."""
    st.session_state[FLASH_KEY] = (kind, message)


def show_flash() -> None:
    kind, message = st.session_state.pop(FLASH_KEY, (None, None))
    if kind == "success":
        st.success(widgets.plain(message))
    elif kind == "info":
        st.info(widgets.plain(message))


# ---- the selected run's journal ---------------------------------------------------------------------


def journal_panel(run: runs.RunFolder, models_dir: Path) -> None:
    """Name, tags, star, notes, archive/restore and delete of one run."""
    entry = journal.read_journal(run)
    with st.container(border=True):  # not an expander: the notes editor below is one, and they cannot nest
        st.markdown("**Journal**")
        left, right = st.columns([3, 2])
        with left:
            name_and_tags_form(run, entry)
        with right:
            star_button(run, entry)
            archive_button(run, entry)
            delete_controls(run, models_dir)
        notes_section(run)


def name_and_tags_form(run: runs.RunFolder, entry: dict[str, Any]) -> None:
    with st.form(f"train_journal_{run.id}", border=False):
        name = st.text_input(
            "Display name", value=entry["name"] or "", placeholder=run.id, key=f"train_display_name_{run.id}"
        )
        tags = st.text_input(
            "Tags (words separated by spaces)",
            value=tags_text(entry["tags"]),
            key=f"train_tags_{run.id}",
            placeholder="baseline lr-sweep",
        )
        saved = st.form_submit_button("Save name and tags", key=f"train_save_journal_{run.id}")
    if saved:
        save_name_and_tags(run, entry, name, tags)


def save_name_and_tags(run: runs.RunFolder, entry: dict[str, Any], name: str, tags: str) -> None:
    """Write only what changed since the form was drawn, so a tag the CLI added meanwhile is kept."""
    try:
        wanted = parse_tags(tags)  # every tag checked before anything is written
        journal.set_name(run, name)
        shown = entry["tags"]
        journal.remove_tags(run, [t for t in shown if t not in wanted])
        journal.add_tags(run, [t for t in wanted if t not in shown])
    except WorkbenchError as err:
        widgets.error(err)
        return
    flash("success", f"Saved the name and tags of {run.id}.")
    st.rerun()


def star_button(run: runs.RunFolder, entry: dict[str, Any]) -> None:
    starred = entry["starred"]
    label = f"{STAR} Starred (unstar)" if starred else "☆ Star"
    if st.button(label, key=f"train_star_{run.id}", help="Starred runs can be listed alone."):
        journal.set_starred(run, not starred)
        st.rerun()


def archive_button(run: runs.RunFolder, entry: dict[str, Any]) -> None:
    if entry["archived"]:
        if st.button("Restore", key=f"train_restore_{run.id}", help="Show this run in lists again."):
            journal.restore(run)
            flash("success", f"Restored {run.id}.")
            st.rerun()
    elif st.button("Archive", key=f"train_archive_{run.id}", help="Hide it from lists; the folder stays on disk."):
        journal.archive(run)
        flash("info", f"Archived {run.id}: hidden from lists, kept on disk. Turn on Show archived to restore it.")
        st.rerun()


def delete_controls(run: runs.RunFolder, models_dir: Path) -> None:
    """Delete asks first; core refuses while the run's job is queued or running (its message is shown)."""
    if st.session_state.get(CONFIRM_DELETE_KEY) != run.id:
        if st.button("Delete…", key=f"train_delete_{run.id}", help="Remove the run folder and its unshared caches."):
            st.session_state[CONFIRM_DELETE_KEY] = run.id
            st.rerun()
        return
    widgets.warning(f"Delete run {run.id}: its folder, checkpoints and predictions? This cannot be undone.")
    yes, no = st.columns(2)
    if no.button("Keep it", key=f"train_delete_no_{run.id}"):
        st.session_state.pop(CONFIRM_DELETE_KEY, None)
        st.rerun()
    if yes.button("Yes, delete", type="primary", key=f"train_delete_yes_{run.id}"):
        st.session_state.pop(CONFIRM_DELETE_KEY, None)
        try:
            result = deletion.delete_run(run, models_dir)
        except WorkbenchError as err:
            widgets.error(err)
            return
        freed = len(result["cache_removed"])
        flash("success", f"Deleted {run.id}" + (f" and {freed} cache files it alone used." if freed else "."))
        st.rerun()


def notes_section(run: runs.RunFolder) -> None:
    """The notes rendered as Markdown (the user's own text in their own run: no HTML), and an editor."""
    notes = journal.read_notes(run)
    st.markdown("**Notes**")
    if notes.strip():
        st.markdown(notes)  # never unsafe_allow_html: raw HTML in notes is shown escaped
    else:
        st.caption("No notes yet: write what you tried and why it worked or failed.")
    with st.expander("Edit notes"):
        with st.form(f"train_notes_form_{run.id}", border=False):
            text = st.text_area("Notes (Markdown)", value=notes, height=160, key=f"train_notes_{run.id}")
            saved = st.form_submit_button("Save notes", key=f"train_save_notes_{run.id}")
    if saved:
        try:
            journal.write_notes(run, text)
        except WorkbenchError as err:
            widgets.error(err)
            return
        flash("success", f"Saved the notes of {run.id}.")
        st.rerun()
