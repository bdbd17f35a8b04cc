"""The workbench library: datasets, transforms, training, review and inference. Never imports streamlit."""
