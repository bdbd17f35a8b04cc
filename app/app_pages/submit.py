"""Submission: predict the eval set with one run or an ensemble, check the result, download submission.csv."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import submit_ui
from core import settings
from core.evaluation import predjobs

st.title("Submission")

submit_ui.prediction_form()

history = predjobs.list_prediction_jobs(settings.load().submissions_dir)
if history.empty:
    st.info("No predictions yet: choose runs above and press Predict.")
else:
    job_id = submit_ui.selected_job(history)
    # no widget key: the index follows the selection (a new launch selects its own job)
    choice = st.selectbox("Submission", history["id"].tolist(), index=history["id"].tolist().index(job_id))
    if choice != job_id:
        submit_ui.select_job(choice)
    submit_ui.show_job(Path(history.set_index("id").loc[choice, "path"]))
    submit_ui.history_table(history)

st.divider()
submit_ui.import_form()
