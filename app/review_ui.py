"""Pieces of the Review page: cached loading of a run's predictions, plotly figures, image cards.

Names (classes, paths, person ids) come from user files: they are shown with ``st.text`` (never
markdown or HTML) and escaped for plotly, whose labels understand a few HTML tags.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data import tasks, thumbnails
from core.evaluation import review
from core.runs.folder import RunFolder
from core.training import kfold

THUMB_SIDE = 160  # gallery cards: a few KB of JPEG each
LARGE_SIDE = 384  # the selected photo
CARD_COLUMNS = 6
FOCUS_KEY = "review_focus"  # path of the card whose person is shown


def runs_with_predictions(models_dir: Path) -> list[RunFolder]:
    return review.runs_with_predictions(models_dir)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(max_entries=4, show_spinner="Reading predictions…")
def _load(run_root: str, stamp: int) -> tuple[pd.DataFrame, list[str], str]:
    frame, classes, task = review.run_predictions(run_root)
    return review.enrich(frame, task, len(classes)), classes, task


def load_run(run: RunFolder) -> tuple[pd.DataFrame, list[str], str]:
    """Enriched predictions, class names and task, cached until the predictions file changes."""
    return _load(str(run.root), _mtime(run.val_predictions))


@st.cache_data(max_entries=4, show_spinner="Ranking suspected label errors…")
def _issues(run_root: str, stamp: tuple) -> tuple[pd.DataFrame, bool]:
    frame, classes, task = review.run_predictions(run_root)
    folds = kfold.finished_fold_predictions(run_root)
    source = folds if folds is not None else frame
    issues = review.suspected_label_errors(source, classes, task)
    # The cards need each image's prediction and probabilities beside the suggestion.
    shown = issues.merge(source.drop(columns=["label", "group"], errors="ignore"), on="path", how="left")
    return shown, folds is not None


def label_issues(run: RunFolder) -> tuple[pd.DataFrame, bool]:
    """Suspected label errors with the predictions behind them (for the cards), from the k-fold
    predictions of ``label-issues --kfold`` when present (every training image), else from the
    validation predictions; and whether k-fold was used."""
    folds = sorted((run.root / "folds").glob("fold-*/val_predictions.parquet"))
    return _issues(str(run.root), (_mtime(run.val_predictions), *(_mtime(p) for p in folds)))


# ---- figures ------------------------------------------------------------------------------------


def _labels(names: list[str]) -> list[str]:
    return [html.escape(str(n)) for n in names]


def confusion_figure(matrix: np.ndarray, names: list[str], normalized: bool, hide_diagonal: bool) -> go.Figure:
    """A heatmap (rows true, columns predicted) with an invisible marker on every cell, so a click
    selects a point: heatmap traces cannot be selected in plotly, scatter points can."""
    k = len(names)
    labels = _labels(names)
    z = matrix.astype(float)
    if hide_diagonal:
        z[np.arange(k), np.arange(k)] = np.nan
    # Empty cells stay blank: a grid of "0%" hides the few cells that matter.
    text = [[("" if np.isnan(v) or v == 0 else (f"{v:.0%}" if normalized else f"{int(v)}")) for v in row] for row in z]
    true_idx, pred_idx = np.divmod(np.arange(k * k), k)
    fig = go.Figure(
        [
            go.Heatmap(
                z=z, x=labels, y=labels, text=text, texttemplate="%{text}", colorscale="Blues",
                hoverinfo="skip", showscale=False, xgap=1, ygap=1,
            ),
            go.Scatter(
                x=[labels[p] for p in pred_idx], y=[labels[t] for t in true_idx], mode="markers",
                marker={"symbol": "square", "size": 18, "opacity": 0},
                selected={"marker": {"opacity": 0}}, unselected={"marker": {"opacity": 0}},
                customdata=np.stack([true_idx, pred_idx], axis=1),
                hovertemplate="true %{y}<br>predicted %{x}<extra></extra>", showlegend=False,
            ),
        ]
    )  # fmt: skip
    fig.update_layout(
        height=max(320, 26 * k + 160), margin={"l": 10, "r": 10, "t": 30, "b": 10},
        # Fixed ranges: the markers would otherwise pad the axes and shift cells off the heatmap's grid.
        xaxis={"title": "predicted", "side": "top", "type": "category", "range": [-0.5, k - 0.5]},
        yaxis={"title": "true", "type": "category", "range": [k - 0.5, -0.5]},
        clickmode="event+select", dragmode=False,
    )  # fmt: skip
    return fig


def attribute_figure(matrix: np.ndarray, attribute: str, normalized: bool) -> go.Figure:
    labels = _labels(list(tasks.ATTRIBUTE_NAMES[attribute]))
    text = [[f"{v:.0%}" if normalized else f"{int(v)}" for v in row] for row in matrix]
    fig = go.Figure(
        go.Heatmap(z=matrix, x=labels, y=labels, text=text, texttemplate="%{text}", colorscale="Blues", showscale=False)
    )
    fig.update_layout(
        title=attribute, height=230, margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"side": "top", "type": "category"}, yaxis={"autorange": "reversed", "type": "category"},
    )  # fmt: skip
    return fig


def selected_cell(event, k: int) -> tuple[int, int] | None:
    """(true, predicted) of the clicked cell in a plotly selection event, or None."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) == 2:
            true, pred = int(data[0]), int(data[1])
        elif point.get("curve_number") == 1 and isinstance(point.get("point_index"), int):
            true, pred = divmod(point["point_index"], k)
        else:
            continue
        if 0 <= true < k and 0 <= pred < k:
            return true, pred
    return None


# ---- cards --------------------------------------------------------------------------------------


def thumbnail(path: str, side: int = THUMB_SIDE) -> bytes:
    return thumbnails.thumbnail_or_placeholder(path, side)


def card_lines(row: pd.Series, classes: list[str], probs: np.ndarray) -> str:
    lines = [f"true: {classes[int(row['label'])]}", f"pred: {classes[int(row['pred'])]}"]
    lines += [f"{p:4.0%} {classes[c]}" for c, p in review.top_k(probs, 3)]
    lines.append(f"person: {row['group']}")
    return "\n".join(lines)


def card_grid(
    items: pd.DataFrame, classes: list[str], key: str, extra: dict[str, str] | None = None, columns: int = CARD_COLUMNS
) -> None:
    """Thumbnail cards in rows of ``columns``. A card's 'Person' button shows that photo larger with
    the person's other photos, right below this grid."""
    prob_cols = [f"p{i}" for i in range(len(classes))]
    thumbs = review.thumbnails(items["path"].astype(str).tolist(), THUMB_SIDE)
    for start in range(0, len(items), columns):
        cols = st.columns(columns)
        for offset, col in enumerate(cols[: len(items) - start]):
            row = items.iloc[start + offset]
            with col:
                st.image(thumbs[start + offset], width="stretch")
                lines = [f"{label}: {row[c]}" for c, label in (extra or {}).items()]
                if prob_cols[0] in row.index:
                    lines.append(card_lines(row, classes, row[prob_cols].to_numpy(dtype=float)))
                st.text("\n".join(lines))
                if st.button("Person", key=f"{key}-{start + offset}", help="This photo larger, with the person's others"):
                    st.session_state[FOCUS_KEY] = (key, str(row["path"]))
    focus = st.session_state.get(FOCUS_KEY)
    if isinstance(focus, tuple) and focus[0] == key:
        person_panel(focus[1])


def person_panel(path: str, index_frame: pd.DataFrame | None = None) -> None:
    """The focused photo large, with all photos of the same person beside it."""
    with st.container(border=True):
        head, close = st.columns([6, 1])
        head.text(f"Selected: {path}")
        if close.button("Close", key="review-close-focus"):
            st.session_state.pop(FOCUS_KEY, None)
            st.rerun()
        big, others = st.columns([2, 5])
        big.image(thumbnail(path, LARGE_SIDE))
        photos = [p for p in review.person_photos(path, index_frame) if p != path]
        with others:
            st.text(f"The person's other photos ({len(photos)}):")
            cols = st.columns(4)
            for i, (other, thumb) in enumerate(zip(photos, review.thumbnails(photos, THUMB_SIDE), strict=True)):
                with cols[i % 4]:
                    st.image(thumb, width="stretch")
                    st.text(Path(other).name)
