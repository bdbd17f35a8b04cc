"""Entry point: ``streamlit run app/main.py``. Shared sidebar (dataset picker) and page navigation."""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/main.py` puts app/ on sys.path, not the repository root that holds `core`.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import streamlit as st  # noqa: E402

from app import widgets  # noqa: E402

# Emoji icons: Material icon names make the browser fetch a web font, which fails offline.
st.set_page_config(page_title="Image classification workbench", page_icon="🖼️", layout="wide")

PAGES = [
    st.Page("app_pages/dataset.py", title="Dataset", icon="📊", url_path="dataset", default=True),
    st.Page("app_pages/augment.py", title="Augmentations", icon="🎛️", url_path="augment"),
    st.Page("app_pages/train.py", title="Training", icon="🏋️", url_path="train"),
    st.Page("app_pages/experiments.py", title="Experiments", icon="🧪", url_path="experiments"),
    st.Page("app_pages/review.py", title="Review", icon="🔍", url_path="review"),
    st.Page("app_pages/submit.py", title="Submission", icon="📤", url_path="submit"),
]

navigation = st.navigation(PAGES)
widgets.dataset_sidebar()
navigation.run()
