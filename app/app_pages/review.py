"""Review: where and why a run is wrong. Metrics, a clickable confusion matrix, the misclassified
gallery, best vs worst per class, and suspected label errors."""

from __future__ import annotations

import streamlit as st

from app import review_ui as ui
from app import widgets
from core import settings
from core.data import tasks
from core.errors import WorkbenchError
from core.evaluation import metrics, review

CELL_KEY = "review_cell"  # (true, pred) picked in the confusion matrix, or None
CELL_SEEN_KEY = "review_cell_seen"  # the last chart selection acted on (a removed filter stays removed)
PAGE_SIZES = [12, 24, 48, 96]

st.title("Review")

runs = ui.runs_with_predictions(settings.load().models_dir)
if not runs:
    st.info("No run has validation predictions yet: train one on the Training page (they appear after its first epoch).")
    st.stop()

ids = [run.id for run in runs]
wanted = st.query_params.get("run")
run_id = st.selectbox("Run", ids, index=ids.index(wanted) if wanted in ids else 0)
if st.query_params.get("run") != run_id:
    st.query_params["run"] = run_id
    for key in (CELL_KEY, CELL_SEEN_KEY, ui.FOCUS_KEY):
        st.session_state.pop(key, None)
run = runs[ids.index(run_id)]

try:
    frame, classes, task = ui.load_run(run)
except WorkbenchError as err:
    st.error(str(err))
    st.stop()
if frame.empty:
    st.info("This run's validation predictions are empty.")
    st.stop()

k = len(classes)
true, pred = frame["label"].to_numpy(), frame["pred"].to_numpy()
summary = metrics.summarize(true, pred, classes, task)
competition = bool(summary.attribute_accuracy)

# ---- headline numbers and per-class table ---------------------------------------------------------
cols = st.columns(3 + len(summary.attribute_accuracy))
cols[0].metric("Images", f"{summary.count}")
cols[1].metric("Accuracy", f"{summary.accuracy:.1%}")
cols[2].metric("Macro F1", f"{summary.macro_f1:.3f}")
for col, (name, value) in zip(cols[3:], summary.attribute_accuracy.items(), strict=True):
    col.metric(f"{name.capitalize()} accuracy", f"{value:.1%}")

with st.expander("Per-class precision, recall and F1 (click a column to sort)"):
    st.dataframe(
        summary.per_class.sort_values("f1"), hide_index=True,
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("precision", "recall", "f1")},
    )  # fmt: skip

# ---- confusion matrices -------------------------------------------------------------------------
st.subheader("Confusion matrix")
left, right = st.columns([3, 1]) if competition else (st.container(), None)
with left:
    c1, c2 = st.columns(2)
    normalized = c1.toggle("Normalise by row", value=True)
    hide_diagonal = c2.toggle("Hide the diagonal", value=False)
    matrix = metrics.confusion(true, pred, k, normalize=normalized)
    event = st.plotly_chart(
        ui.confusion_figure(matrix, classes, normalized, hide_diagonal),
        key="review_confusion", on_select="rerun", selection_mode="points",
    )  # fmt: skip
    st.caption("Click a cell to show its images in the gallery below.")
if right is not None:
    with right:
        for name, mat in metrics.attribute_confusions(true, pred, normalize=normalized).items():
            st.plotly_chart(ui.attribute_figure(mat, name, normalized), key=f"review_attr_{name}")

clicked = ui.selected_cell(event, k)
if clicked is not None and clicked != st.session_state.get(CELL_SEEN_KEY):
    st.session_state[CELL_KEY] = clicked
st.session_state[CELL_SEEN_KEY] = clicked

# ---- gallery ------------------------------------------------------------------------------------
st.subheader("Misclassified images")
cell = st.session_state.get(CELL_KEY)
if cell is not None:
    t, p = cell
    chip = f"✕ true {widgets.plain(classes[t])} → predicted {widgets.plain(classes[p])}"
    if st.button(chip, key="review_clear_cell", help="Remove this filter"):
        st.session_state[CELL_KEY] = None
        st.rerun()

f1, f2, f3, f4, f5 = st.columns([3, 3, 2, 2, 1])
name_of = dict(enumerate(classes)).get
true_filter = f1.multiselect("True class", list(range(k)), format_func=name_of, key="review_true")
pred_filter = f2.multiselect("Predicted class", list(range(k)), format_func=name_of, key="review_pred")
attribute = f3.selectbox("Wrong attribute", ["any", *tasks.ATTRIBUTES], key="review_attr") if competition else "any"
sort = f4.radio("Sort by", review.SORTS, horizontal=True, key="review_sort")
page_size = f5.selectbox("Per page", PAGE_SIZES, index=PAGE_SIZES.index(24), key="review_page_size")

show_correct = cell is not None and cell[0] == cell[1]  # a diagonal cell asks for the right ones
items = review.select(
    frame,
    true=cell[0] if cell else (true_filter or None),
    pred=cell[1] if cell else (pred_filter or None),
    attribute_error=None if attribute == "any" else attribute,
    correct=None if show_correct else False,
    sort=sort,
)
if cell is not None and (true_filter or pred_filter):
    st.caption("The class filters are set aside while a confusion-matrix cell is selected.")
pages = review.page_count(len(items), page_size)
signature = (cell, tuple(true_filter), tuple(pred_filter), attribute, sort, page_size, run_id)
st.text(f"{len(items)} images, {pages} pages")
if items.empty:
    st.info("No image matches these filters.")
else:
    number = st.pagination(pages, key=f"review_page_{abs(hash(signature))}") if pages > 1 else 1
    ui.card_grid(review.page(items, number, page_size), classes, key="gallery")

# ---- more views -----------------------------------------------------------------------------------
view = st.segmented_control(
    "More views", ["Best vs worst per class", "Suspected label errors"], key="review_view"
)
if view == "Best vs worst per class":
    chosen = st.selectbox("Class", list(range(k)), format_func=name_of, key="review_bw_class")
    best, worst = review.best_and_worst(frame, chosen, n=6)
    b, w = st.columns(2)
    with b:
        st.markdown("**Surest right** (highest probability of the true class)")
        ui.card_grid(best, classes, key="best", columns=3)
    with w:
        st.markdown("**Worst** (lowest probability of the true class)")
        ui.card_grid(worst, classes, key="worst", columns=3)
    if best.empty:
        st.text("No validation images of this class.")
elif view == "Suspected label errors":
    issues, from_folds = ui.label_issues(run)
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
        "Download CSV", review.issues_csv(issues[review.ISSUE_EXPORT_COLUMNS]), file_name=f"label-issues-{run_id}.csv", mime="text/csv",
        key="review_issues_csv",
    )  # fmt: skip
    shown = issues[issues["score"] > 0]
    st.text(f"{len(shown)} images where the model prefers another label")
    if not shown.empty:
        merged = shown.assign(score=shown["score"].round(2))
        issue_pages = review.page_count(len(merged), page_size)
        number = st.pagination(issue_pages, key=f"review_issue_page_{page_size}") if issue_pages > 1 else 1
        ui.card_grid(
            review.page(merged, number, page_size), classes, key="issues",
            extra={"suggested_name": "suggest", "score": "score", "kind": "by", "attribute": "changes"},
        )  # fmt: skip
