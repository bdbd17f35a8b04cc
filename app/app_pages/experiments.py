"""Experiments: plan many runs at once (a sweep: a base config, a search space, a sampler, a budget),
watch the trials, compare them in Optuna's plots, open the best one in Review; cancel or resume.

The trials are ordinary runs trained by background workers, so a plan survives reloads and app
restarts. The drawing lives in app/experiments_ui.py.
"""

from __future__ import annotations

import streamlit as st

from app import experiments_ui as ui
from app import widgets
from core import settings

st.title("Experiments")
st.caption(
    "An experiment plan trains many runs for you: Optuna picks each trial's settings from the search space, "
    "and hopeless trials are pruned. Every trial is an ordinary run, listed on the Training page."
)
models_dir = settings.load().models_dir
ui.plan_form(widgets.current_dataset_root(), models_dir)
ui.sweeps_section(models_dir)
