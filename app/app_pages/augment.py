"""Augmentations page: build two transform pipelines, see their samples side by side, check train vs eval."""

import streamlit as st

from app import augment_ui as ui
from app import widgets

st.title("Augmentations")
st.caption(
    "Two pipelines, A and B, each a training spec with its evaluation counterpart. The same specs drive "
    "training and inference, so what you see here is what the model gets."
)
ui.ensure_state()

picked = ui.image_picker()
n, seed = ui.sample_controls()
previews = st.container()  # samples sit above the editors; drawn once the editors have run

specs = {}
for pipe, column in zip(ui.PIPES, st.columns(len(ui.PIPES), gap="large"), strict=True):
    with column:
        specs[pipe] = ui.pipeline_panel(pipe)

with previews:
    if picked is None:
        st.stop()
    source, caption = picked
    try:
        ui.source_array(source)
    except ui.WorkbenchError as err:
        widgets.error(err)
        st.stop()
    ui.samples_grid(source, caption, specs, n, seed)
    ui.model_input_section(source, specs, seed)
    st.divider()
