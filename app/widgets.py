"""Small shared UI pieces: plain-text helpers, the dataset picker, cached index loading, an image grid
and a pager.

Session-state keys are named ``<page>_<thing>`` in snake case (``train_run``, ``review_cell``,
``sidebar_dataset``); URL query parameters (``?run=``, ``?sub=``, ``?dataset=``) keep their short names.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import streamlit as st

from core import settings
from core.errors import WorkbenchError

DATASET_KEY = "sidebar_dataset"
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")  # ':' starts :red[...] and :icon: directives


def plain(text: object) -> str:
    """Text for st.caption/st.markdown/st.error shown literally: file, folder, class and op names come
    from users, and markdown would otherwise turn them into links, images or formatting."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def plot_label(text: object) -> str:
    """A data string made safe for a plotly label, title or legend: plotly reads a few HTML tags there
    (``<a href>`` becomes a live link), so class, run and file names are escaped as HTML entities."""
    return html.escape(str(text), quote=False)


def plot_labels(names) -> list[str]:
    return [plot_label(name) for name in names]


def error(message: object, details: list | tuple = ()) -> None:
    """An error box whose text is shown literally: messages name files, zip members, ids and folders
    that users chose, and st.error would render them as Markdown (links, images). ``details`` become
    a bulleted list, each item shown literally too."""
    body = plain(message)
    if details:
        body += "\n\n" + "\n".join(f"- {plain(item)}" for item in details)
    st.error(body)


def warning(message: object) -> None:
    """A warning box with its text shown literally (see ``error``)."""
    st.warning(plain(message))


def candidate_datasets() -> list[Path]:
    """Folders directly under each configured data root, by core's one rule (a link is offered only
    when it leads inside a data root)."""
    from core.data import roots

    return roots.list_datasets(settings.load().data_roots)


def _fingerprint(root: str) -> tuple:
    """Cheap modification state of a dataset: mtimes of the root and its first two levels."""
    parts = []
    base = Path(root)
    for path in [base, *base.glob("*"), *base.glob("*/*")][:200]:
        try:
            parts.append((str(path), os.stat(path).st_mtime_ns))
        except OSError:
            continue
    return tuple(parts)


@st.cache_data(max_entries=4, show_spinner="Scanning the dataset…")
def _scan_cached(root: str, fingerprint: int):
    """The index, or the error that refused the dataset: a failure is cached too, so a huge bad
    manifest is not read again on every rerun. Reopening is fast through core's persisted index."""
    from core.data import roots

    return roots.open_dataset(root, settings.load().data_roots)


def load_index(root: str | Path):
    """The DatasetIndex of ``root``, cached by root and modification state. Raises WorkbenchError."""
    fp = _fingerprint(str(root))
    found = _scan_cached(str(root), hash(fp))
    if isinstance(found, WorkbenchError):
        raise found
    return found


def dataset_sidebar() -> None:
    """Sidebar select box of datasets under the data roots; the choice lives in session and URL."""
    options = candidate_datasets()
    with st.sidebar:
        st.markdown("**Dataset**")
        if not options:
            st.info(
                "No datasets under the data roots. Run `make run` (it generates data/demo) or set WORKBENCH_DATA_ROOTS."
            )
            st.session_state[DATASET_KEY] = None
            return
        labels = [str(p) for p in options]
        wanted = st.query_params.get("dataset") or st.session_state.get(DATASET_KEY)
        default = (
            labels.index(wanted)
            if wanted in labels
            else next((i for i, p in enumerate(options) if p.name == "demo"), 0)
        )
        choice = st.selectbox(
            "Dataset folder", labels, index=default, format_func=lambda s: Path(s).name, label_visibility="collapsed"
        )
        st.session_state[DATASET_KEY] = choice
        st.caption(plain(choice))


def current_dataset_root() -> str | None:
    return st.session_state.get(DATASET_KEY)


def require_index():
    """The current dataset's index, or an info/error box and ``st.stop()``."""
    root = current_dataset_root()
    if not root:
        st.info("Pick a dataset in the sidebar.")
        st.stop()
    try:
        return load_index(root)
    except WorkbenchError as err:
        error(err)
        st.stop()


def pager(total: int, page_size: int, key: str) -> tuple[int, int]:
    """A page number input; returns (start, stop) of the items on the current page."""
    pages = max(1, -(-total // page_size))
    page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1, key=key)
    start = (int(page) - 1) * page_size
    return start, min(total, start + page_size)


def image_grid(images: list[bytes], captions: list[str], columns: int = 6) -> None:
    """Thumbnails (JPEG bytes) in rows of ``columns``; captions are plain text, never HTML."""
    for row_start in range(0, len(images), columns):
        cols = st.columns(columns)
        row = slice(row_start, row_start + columns)
        for col, img, cap in zip(cols, images[row], captions[row], strict=False):
            with col:
                st.image(img, width="stretch")
                st.caption(plain(cap))
