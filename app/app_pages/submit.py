"""Submission: predict the eval set with one run or an ensemble, check the result, download submission.csv;
record leaderboard scores beside the validation scores of the runs that made each submission."""

from __future__ import annotations

import streamlit as st

from app import leaderboard_ui, submit_ui
from core import settings
from core.evaluation import leaderboard

st.title("Submission")

submit_ui.prediction_form()

submissions_dir = settings.load().submissions_dir
history = leaderboard.list_submissions(submissions_dir)  # page-launched jobs and `predict --out` folders alike
if history.empty:
    st.info(
        "No submissions yet: choose runs above and press Predict, or write one with "
        "`python -m core predict --out submissions/<name>/submission.csv`."
    )
else:
    job_id = submit_ui.selected_job(history)
    # no widget key: the index follows the selection (a new launch selects its own job)
    choice = st.selectbox("Submission", history["id"].tolist(), index=history["id"].tolist().index(job_id))
    if choice != job_id:
        submit_ui.select_job(choice)
    submit_ui.show_submission(history.set_index("id").loc[choice].to_dict() | {"id": choice})
    submit_ui.history_table(history)
    leaderboard_ui.leaderboard_section(history, choice, submissions_dir)

st.divider()
submit_ui.import_form()
