"""Dataset page: what the chosen dataset holds, how balanced it is, what it looks like, what is broken."""

import streamlit as st

from app import checks_ui, dataset_ui, widgets

st.title("Dataset")
dataset_ui.upload_panel()
index = widgets.require_index()

dataset_ui.overview(index)
dataset_ui.class_chart(index)
dataset_ui.attribute_panels(index)
dataset_ui.gallery(index)
dataset_ui.image_statistics(index)
dataset_ui.problems_table(index)
checks_ui.duplicates_section(index)
checks_ui.quality_section(index)
dataset_ui.verify_panel(index)
