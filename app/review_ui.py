"""Pieces of the Review page: the run picker, cached loading of a run's predictions, the headline
numbers, the clickable confusion matrix, the filtered gallery, more views and image cards.

Names (classes, paths, person ids) come from user files: they are shown with ``st.text`` (never
markdown or HTML) and escaped for plotly by ``widgets.plot_label``, as plotly labels understand a
few HTML tags. Session-state and widget keys start with ``review_``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import explain_ui, widgets
from core.data import tasks, thumbnails
from core.errors import WorkbenchError
from core.evaluation import metrics, review
from core.runs.folder import RunFolder
from core.training import kfold

THUMB_SIDE = 160  # gallery cards: a few KB of JPEG each
LARGE_SIDE = 384  # the selected photo
CARD_COLUMNS = 6
PAGE_SIZES = [12, 24, 48, 96]
FOCUS_KEY = "review_focus"  # (grid, path) of the card whose person is shown
CELL_KEY = "review_cell"  # (true, pred) picked in the confusion matrix, or None
CELL_SEEN_KEY = "review_cell_seen"  # the last chart selection acted on (a removed filter stays removed)
MORE_VIEWS = ("Best vs worst per class", "Suspected label errors")


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


# ---- page sections --------------------------------------------------------------------------------


def pick_run(models_dir: Path) -> RunFolder:
    """The run to review, kept in the URL (?run=); a new run drops the previous run's cell and focus."""
    found = runs_with_predictions(models_dir)
    if not found:
        st.info(
            "No run has validation predictions yet: train one on the Training page (they appear after its first epoch)."
        )
        st.stop()
    ids = [run.id for run in found]
    wanted = st.query_params.get("run")
    run_id = st.selectbox("Run", ids, index=ids.index(wanted) if wanted in ids else 0)
    if st.query_params.get("run") != run_id:
        st.query_params["run"] = run_id
        run_keys = (explain_ui.SELECTION_KEY, explain_ui.SELECTION_SEEN_KEY, explain_ui.SIMILAR_KEY)
        for key in (CELL_KEY, CELL_SEEN_KEY, FOCUS_KEY, *run_keys):
            st.session_state.pop(key, None)
    return found[ids.index(run_id)]


def load_run_or_stop(run: RunFolder) -> tuple[pd.DataFrame, list[str], str]:
    try:
        frame, classes, task = load_run(run)
    except WorkbenchError as err:
        widgets.error(err)
        st.stop()
    if frame.empty:
        st.info("This run's validation predictions are empty.")
        st.stop()
    return frame, classes, task


def headline(summary: metrics.Summary) -> None:
    """Count, accuracy, macro F1 (and attribute accuracies), then the per-class table."""
    cols = st.columns(3 + len(summary.attribute_accuracy))
    cols[0].metric("Images", f"{summary.count}")
    cols[1].metric("Accuracy", f"{summary.accuracy:.1%}")
    cols[2].metric("Macro F1", f"{summary.macro_f1:.3f}")
    for col, (name, value) in zip(cols[3:], summary.attribute_accuracy.items(), strict=True):
        col.metric(f"{name.capitalize()} accuracy", f"{value:.1%}")
    with st.expander("Per-class precision, recall and F1 (click a column to sort)"):
        st.dataframe(
            summary.per_class.sort_values("f1"),
            hide_index=True,
            column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("precision", "recall", "f1")},
        )


def confusion_section(frame: pd.DataFrame, classes: list[str], competition: bool) -> None:
    """The clickable confusion matrix (a click sets the gallery's cell filter) and, for the 18
    competition classes, one small matrix per attribute."""
    st.subheader("Confusion matrix")
    true, pred, k = frame["label"].to_numpy(), frame["pred"].to_numpy(), len(classes)
    left, right = st.columns([3, 1]) if competition else (st.container(), None)
    with left:
        c1, c2 = st.columns(2)
        normalized = c1.toggle("Normalise by row", value=True, key="review_normalize")
        hide_diagonal = c2.toggle("Hide the diagonal", value=False, key="review_hide_diagonal")
        matrix = metrics.confusion(true, pred, k, normalize=normalized)
        event = st.plotly_chart(
            confusion_figure(matrix, classes, normalized, hide_diagonal),
            key="review_confusion",
            on_select="rerun",
            selection_mode="points",
        )
        st.caption("Click a cell to show its images in the gallery below.")
    if right is not None:
        with right:
            for name, mat in metrics.attribute_confusions(true, pred, normalize=normalized).items():
                st.plotly_chart(attribute_figure(mat, name, normalized), key=f"review_attr_{name}")
    clicked = selected_cell(event, k)
    if clicked is not None and clicked != st.session_state.get(CELL_SEEN_KEY):
        st.session_state[CELL_KEY] = clicked
    st.session_state[CELL_SEEN_KEY] = clicked


def gallery_section(frame: pd.DataFrame, classes: list[str], competition: bool, run_id: str) -> int:
    """The misclassified images under the cell chip and the filters; returns the page size chosen."""
    st.subheader("Misclassified images" if not st.session_state.get(explain_ui.SELECTION_KEY) else "Selected images")
    cell = st.session_state.get(CELL_KEY)
    if cell is not None:
        t, p = cell
        chip = f"✕ true {widgets.plain(classes[t])} → predicted {widgets.plain(classes[p])}"
        if st.button(chip, key="review_clear_cell", help="Remove this filter"):
            st.session_state[CELL_KEY] = None
            st.rerun()

    k = len(classes)
    f1, f2, f3, f4, f5 = st.columns([3, 3, 2, 2, 1])
    name_of = dict(enumerate(classes)).get
    true_filter = f1.multiselect("True class", list(range(k)), format_func=name_of, key="review_true")
    pred_filter = f2.multiselect("Predicted class", list(range(k)), format_func=name_of, key="review_pred")
    attribute = f3.selectbox("Wrong attribute", ["any", *tasks.ATTRIBUTES], key="review_attr") if competition else "any"
    sort = f4.radio("Sort by", review.SORTS, horizontal=True, key="review_sort")
    page_size = f5.selectbox("Per page", PAGE_SIZES, index=PAGE_SIZES.index(24), key="review_page_size")

    on_map = explain_ui.selection_chip()
    # A diagonal cell asks for the right ones; a map selection shows every selected photo, right or wrong.
    show_correct = (cell is not None and cell[0] == cell[1]) or on_map is not None
    items = review.select(
        frame if on_map is None else frame[frame["path"].astype(str).isin(on_map)],
        true=cell[0] if cell else (true_filter or None),
        pred=cell[1] if cell else (pred_filter or None),
        attribute_error=None if attribute == "any" else attribute,
        correct=None if show_correct else False,
        sort=sort,
    )
    if cell is not None and (true_filter or pred_filter):
        st.caption("The class filters are set aside while a confusion-matrix cell is selected.")
    pages = review.page_count(len(items), page_size)
    # A new filter starts a new pager (at page 1): the pager's key follows the filters.
    signature = (cell, tuple(true_filter), tuple(pred_filter), attribute, sort, page_size, run_id, tuple(on_map or ()))
    st.text(f"{len(items)} images, {pages} pages")
    if items.empty:
        st.info("No image matches these filters.")
    else:
        number = st.pagination(pages, key=f"review_page_{abs(hash(signature))}") if pages > 1 else 1
        card_grid(review.page(items, number, page_size), classes, key="gallery")
    return page_size


def more_views(frame: pd.DataFrame, classes: list[str], run: RunFolder, page_size: int) -> None:
    view = st.segmented_control("More views", MORE_VIEWS, key="review_view")
    if view == MORE_VIEWS[0]:
        best_and_worst_view(frame, classes)
    elif view == MORE_VIEWS[1]:
        label_issues_view(run, classes, page_size)


def best_and_worst_view(frame: pd.DataFrame, classes: list[str]) -> None:
    name_of = dict(enumerate(classes)).get
    chosen = st.selectbox("Class", list(range(len(classes))), format_func=name_of, key="review_bw_class")
    best, worst = review.best_and_worst(frame, chosen, n=6)
    b, w = st.columns(2)
    with b:
        st.markdown("**Surest right** (highest probability of the true class)")
        card_grid(best, classes, key="best", columns=3)
    with w:
        st.markdown("**Worst** (lowest probability of the true class)")
        card_grid(worst, classes, key="worst", columns=3)
    if best.empty:
        st.text("No validation images of this class.")


def label_issues_view(run: RunFolder, classes: list[str], page_size: int) -> None:
    issues, from_folds = label_issues(run)
    source = (
        "every training image, from the out-of-sample predictions of `label-issues --kfold`"
        if from_folds
        else "this run's validation images only: `python -m core label-issues --run RUN --kfold 5 "
        "--out issues.csv` scores every training image with out-of-sample predictions"
    )
    st.caption(
        "Ranked by the evidence against the given label (log-odds; above 0 the model prefers the "
        f"suggestion). 'person' rows add up all of a person's photos. Scored on {source}."
    )
    st.download_button(
        "Download CSV",
        review.issues_csv(issues[review.ISSUE_EXPORT_COLUMNS]),
        file_name=f"label-issues-{run.id}.csv",
        mime="text/csv",
        key="review_issues_csv",
    )
    shown = issues[issues["score"] > 0]
    st.text(f"{len(shown)} images where the model prefers another label")
    if shown.empty:
        return
    merged = shown.assign(score=shown["score"].round(2))
    issue_pages = review.page_count(len(merged), page_size)
    number = st.pagination(issue_pages, key=f"review_issue_page_{page_size}") if issue_pages > 1 else 1
    card_grid(
        review.page(merged, number, page_size),
        classes,
        key="issues",
        extra={"suggested_name": "suggest", "score": "score", "kind": "by", "attribute": "changes"},
    )


# ---- figures ------------------------------------------------------------------------------------


def confusion_figure(matrix: np.ndarray, names: list[str], normalized: bool, hide_diagonal: bool) -> go.Figure:
    """A heatmap (rows true, columns predicted) with an invisible marker on every cell, so a click
    selects a point: heatmap traces cannot be selected in plotly, scatter points can."""
    k = len(names)
    labels = widgets.plot_labels(names)
    z = matrix.astype(float)
    if hide_diagonal:
        z[np.arange(k), np.arange(k)] = np.nan
    # Empty cells stay blank: a grid of "0%" hides the few cells that matter.
    text = [[("" if np.isnan(v) or v == 0 else (f"{v:.0%}" if normalized else f"{int(v)}")) for v in row] for row in z]
    true_idx, pred_idx = np.divmod(np.arange(k * k), k)
    fig = go.Figure(
        [
            go.Heatmap(
                z=z,
                x=labels,
                y=labels,
                text=text,
                texttemplate="%{text}",
                colorscale="Blues",
                hoverinfo="skip",
                showscale=False,
                xgap=1,
                ygap=1,
            ),
            go.Scatter(
                x=[labels[p] for p in pred_idx],
                y=[labels[t] for t in true_idx],
                mode="markers",
                marker={"symbol": "square", "size": 18, "opacity": 0},
                selected={"marker": {"opacity": 0}},
                unselected={"marker": {"opacity": 0}},
                customdata=np.stack([true_idx, pred_idx], axis=1),
                hovertemplate="true %{y}<br>predicted %{x}<extra></extra>",
                showlegend=False,
            ),
        ]
    )
    fig.update_layout(
        height=max(320, 26 * k + 160),
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        # Fixed ranges: the markers would otherwise pad the axes and shift cells off the heatmap's grid.
        xaxis={"title": "predicted", "side": "top", "type": "category", "range": [-0.5, k - 0.5]},
        yaxis={"title": "true", "type": "category", "range": [k - 0.5, -0.5]},
        clickmode="event+select",
        dragmode=False,
    )
    return fig


def attribute_figure(matrix: np.ndarray, attribute: str, normalized: bool) -> go.Figure:
    labels = widgets.plot_labels(tasks.ATTRIBUTE_NAMES[attribute])
    text = [[f"{v:.0%}" if normalized else f"{int(v)}" for v in row] for row in matrix]
    fig = go.Figure(
        go.Heatmap(z=matrix, x=labels, y=labels, text=text, texttemplate="%{text}", colorscale="Blues", showscale=False)
    )
    fig.update_layout(
        title=attribute,
        height=230,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"side": "top", "type": "category"},
        yaxis={"autorange": "reversed", "type": "category"},
    )
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
                if "label" in row.index and "pred" in row.index:
                    explain_ui.overlay_pair(str(row["path"]), int(row["label"]), int(row["pred"]))
                lines = [f"{label}: {row[c]}" for c, label in (extra or {}).items()]
                if prob_cols[0] in row.index:
                    lines.append(card_lines(row, classes, row[prob_cols].to_numpy(dtype=float)))
                st.text("\n".join(lines))
                if st.button(
                    "Person",
                    key=f"review_{key}_person_{start + offset}",
                    help="This photo larger, with the person's others",
                ):
                    st.session_state[FOCUS_KEY] = (key, str(row["path"]))
                explain_ui.similar_button(str(row["path"]), key=f"review_{key}_similar_{start + offset}")
    focus = st.session_state.get(FOCUS_KEY)
    if isinstance(focus, tuple) and focus[0] == key:
        match = items[items["path"].astype(str) == focus[1]] if "label" in items and "pred" in items else items[:0]
        classes_of = (int(match["label"].iloc[0]), int(match["pred"].iloc[0])) if len(match) else None
        person_panel(focus[1], classes_of=classes_of)


def person_panel(path: str, index_frame: pd.DataFrame | None = None, classes_of: tuple[int, int] | None = None) -> None:
    """The focused photo large (with its Grad-CAM overlays when on; ``classes_of`` = (true, predicted)),
    with all photos of the same person beside it."""
    with st.container(border=True):
        head, close = st.columns([6, 1])
        head.text(f"Selected: {path}")
        if close.button("Close", key="review_close_focus"):
            st.session_state.pop(FOCUS_KEY, None)
            st.rerun()
        big, others = st.columns([2, 5])
        big.image(thumbnail(path, LARGE_SIDE))
        if classes_of is not None:
            with big:
                explain_ui.overlay_pair(path, classes_of[0], classes_of[1], side=LARGE_SIDE)
        photos = [p for p in review.person_photos(path, index_frame) if p != path]
        with others:
            st.text(f"The person's other photos ({len(photos)}):")
            cols = st.columns(4)
            for i, (other, thumb) in enumerate(zip(photos, review.thumbnails(photos, THUMB_SIDE), strict=True)):
                with cols[i % 4]:
                    st.image(thumb, width="stretch")
                    st.text(Path(other).name)


def similar_view(frame: pd.DataFrame, classes: list[str], run: RunFolder) -> None:
    """The nearest neighbours (in the run's embeddings) of the card whose "More like this" was pressed."""
    path = st.session_state.get(explain_ui.SIMILAR_KEY)
    if not path:
        return
    with st.container(border=True):
        head, close = st.columns([6, 1])
        head.text(f"More like: {path}")
        if close.button("Close", key="review_close_similar"):
            st.session_state.pop(explain_ui.SIMILAR_KEY, None)
            st.rerun()
        try:
            found = explain_ui.neighbours_of(str(run.root), path)
        except WorkbenchError as err:
            widgets.error(err)
            return
        if not found:
            st.text("This photo is not in the run's embeddings.")
            return
        order = {p: i for i, (p, _) in enumerate(found)}
        rows = frame[frame["path"].astype(str).isin(order)].copy()
        rows["distance"] = rows["path"].astype(str).map(dict(found)).round(3)
        rows = rows.sort_values("distance", kind="stable")
        st.text(f"{len(rows)} nearest neighbours, closest first")
        card_grid(rows, classes, key="similar", extra={"distance": "distance"})
