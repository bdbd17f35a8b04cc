"""Streamlit UI. Never builds tensors: pages read widgets, call core, draw."""
