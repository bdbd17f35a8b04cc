"""Review: where and why a run is wrong. Metrics, a clickable confusion matrix, the embedding map, the
misclassified gallery (with Grad-CAM overlays), best vs worst per class, and suspected label errors."""

from __future__ import annotations

import streamlit as st

from app import explain_ui
from app import review_ui as ui
from core import settings
from core.evaluation import metrics

st.title("Review")

run = ui.pick_run(settings.load().models_dir)
frame, classes, task = ui.load_run_or_stop(run)
summary = metrics.summarize(frame["label"].to_numpy(), frame["pred"].to_numpy(), classes, task)
competition = bool(summary.attribute_accuracy)  # the 18 mask × gender × age classes

ui.headline(summary)
ui.confusion_section(frame, classes, competition)
explain_ui.map_section(run, frame, classes)
explain_ui.gradcam_toggle(run)
page_size = ui.gallery_section(frame, classes, competition, run.id)
ui.similar_view(frame, classes, run)
ui.more_views(frame, classes, run, page_size)
