"""Training: launch a background job, watch the runs, follow one live, keep a journal of them, compare.

Everything shown is read from run folders, so jobs survive reloads and app restarts; this page never
holds a job in memory. The drawing lives in app/train_ui.py (runs), app/journal_ui.py (name, tags,
star, notes, archive, delete) and app/backbone_ui.py (the backbone chooser's facts).
"""

from __future__ import annotations

import streamlit as st

from app import train_form, widgets
from app import train_ui as ui
from core import settings
from core.runs import jobs

st.title("Training")
train_form.new_run_form(widgets.current_dataset_root())

st.subheader("Runs")
models_dir = settings.load().models_dir
# Read once per run, archived runs included (the filters choose); the table's fragment re-reads on its timer.
table = jobs.list_runs(models_dir, include_archived=True)
if table.empty:
    st.info(f"No runs yet in {widgets.plain(models_dir)}. Launch one above.")
    st.stop()
shown = ui.runs_section(table, models_dir)
ui.compare_section(shown, models_dir)
