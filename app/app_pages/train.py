"""Training: launch a background job, watch the runs, follow one live, compare several.

Everything shown is read from run folders, so jobs survive reloads and app restarts; this page never
holds a job in memory. The drawing lives in app/train_ui.py.
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
table = jobs.list_runs(models_dir)  # read once per run; the table's fragment re-reads on its own timer
if table.empty:
    st.info(f"No runs yet in {widgets.plain(models_dir)}. Launch one above.")
    st.stop()
ui.runs_section(table, models_dir)
ui.compare_section(table, models_dir)
