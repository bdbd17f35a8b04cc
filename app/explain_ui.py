"""Why a run is wrong, on the Review page: Grad-CAM overlays on the cards and the embedding map.

Grad-CAM: a toggle (``review_gradcam``); when on, each card shows the heat map of the predicted and of
the true class side by side (core.evaluation.gradcam; its cache keeps paging quick). A transformer
backbone gets core's "not available" message once, under the toggle.

Embedding map: the run's validation embeddings (``embeddings.npy``, saved by training at the best
epoch, or computed here by ``python -m core embed``) projected to 2-D and drawn with plotly's WebGL
scatter. A box or lasso selection becomes a list of paths in ``review_map_selection``, which the
gallery below shows; "More like this" on a card lists that photo's nearest neighbours.

Names reach plotly escaped by ``widgets.plot_label`` and everything else as plain text.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from app import background, widgets
from core import settings
from core.errors import WorkbenchError

GRADCAM_KEY = "review_gradcam"  # the toggle
CONTEXT_KEY = "review_explain"  # {"root": run folder, "cam": bool, "embeddings": bool} for the cards
SELECTION_KEY = "review_map_selection"  # paths selected on the map, or None
SELECTION_SEEN_KEY = "review_map_seen"  # the last chart selection acted on (a cleared one stays cleared)
SIMILAR_KEY = "review_similar"  # the path whose neighbours are shown
INLINE_EMBED_LIMIT = 500  # fewer validation photos than this are embedded in the page's own run
NEIGHBOURS = 12
COLOUR_BY = ("true class", "predicted class", "correct / wrong", "confidence", "person")
CAM_SIDE = 160
JOB_REFRESH_S = 1.0


# ---- shared context -------------------------------------------------------------------------------


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def context() -> dict:
    return st.session_state.get(CONTEXT_KEY) or {}


@st.cache_resource(max_entries=2, show_spinner="Loading the run's model…")
def _run_model(run_root: str, stamp: int):
    from core.evaluation import infer

    return infer.load_run(run_root, "cpu")


def _checkpoint_stamp(run_root: str) -> int:
    return max((_stamp(p) for p in Path(run_root).glob("*.pt")), default=0)


def run_model(run_root: str):
    """The run's model on the CPU, loaded once per checkpoint."""
    return _run_model(run_root, _checkpoint_stamp(run_root))


# ---- Grad-CAM -------------------------------------------------------------------------------------


def gradcam_toggle(run) -> None:
    """The "Show Grad-CAM" toggle; records for the cards whether overlays can be drawn for ``run``."""
    ctx = {"root": str(run.root), "cam": False, "embeddings": _embeddings_file(run.root).is_file()}
    on = st.toggle("Show Grad-CAM", key=GRADCAM_KEY, help="Heat maps of the predicted and the true class on each card")
    if on:
        from core.evaluation import gradcam

        try:
            model = run_model(str(run.root))
            if gradcam.is_transformer(model.model):
                raise gradcam.GradCamUnavailable(
                    f"Grad-CAM is not available for this backbone ({model.model_name}): it has no convolutional stage"
                )
            ctx["cam"] = True
        except WorkbenchError as err:
            st.info(widgets.plain(err))
    st.session_state[CONTEXT_KEY] = ctx


@st.cache_data(max_entries=1024, show_spinner=False)
def _overlay_jpeg(run_root: str, stamp: int, path: str, target: int, side: int) -> bytes:
    from core.evaluation import gradcam

    picture = gradcam.overlay_for(_run_model(run_root, stamp), path, target)
    picture.thumbnail((side, side))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def overlay_pair(path: str, true: int, pred: int, side: int = CAM_SIDE) -> None:
    """The predicted class's and the true class's heat maps side by side (when the toggle is on)."""
    ctx = context()
    if not ctx.get("cam"):
        return
    root = ctx["root"]
    left, right = st.columns(2)
    for col, target, what in ((left, pred, "pred"), (right, true, "true")):
        try:
            col.image(_overlay_jpeg(root, _checkpoint_stamp(root), str(path), int(target), side), caption=what)
        except WorkbenchError as err:
            col.caption(widgets.plain(err))


# ---- the embedding map ----------------------------------------------------------------------------


def _embeddings_file(run_root) -> Path:
    from core.evaluation import embeddings

    return embeddings.embedding_paths(run_root)[0]


@st.cache_data(max_entries=4, show_spinner="Drawing the embedding map…")
def _map_frame(run_root: str, stamp: int) -> pd.DataFrame:
    """The embeddings' index with x, y (the 2-D projection), cached until the file changes."""
    from core.evaluation import embeddings

    features, index = embeddings.load_embeddings(run_root)
    xy = embeddings.project_2d(features)
    out = index.reset_index(drop=True).copy()
    out["path"] = out["path"].astype(str)
    out["x"], out["y"] = xy[:, 0], xy[:, 1]
    return out


@st.cache_resource(max_entries=2, show_spinner=False)
def _features(run_root: str, stamp: int) -> tuple[np.ndarray, list[str]]:
    from core.evaluation import embeddings

    features, index = embeddings.load_embeddings(run_root)
    return features, index["path"].astype(str).tolist()


def _job_folder(run_root: str) -> Path:
    key = hashlib.sha1(str(Path(run_root).resolve()).encode()).hexdigest()[:16]
    return settings.load().cache_dir / "explain" / f"embed-{key}"


def map_section(run, frame: pd.DataFrame, classes: list[str]) -> None:
    """The embedding map of the run's validation images, or the way to compute it."""
    st.subheader("Embedding map")
    npy = _embeddings_file(run.root)
    if not npy.is_file():
        _compute_panel(run, len(frame))
        return
    try:
        points = _map_frame(str(run.root), _stamp(npy))
    except WorkbenchError as err:
        widgets.error(err)
        _compute_panel(run, len(frame))
        return
    points = map_points(points, frame, classes)
    colour = st.selectbox("Colour by", COLOUR_BY, key="review_map_colour")
    event = st.plotly_chart(
        map_figure(points, colour), key="review_map", on_select="rerun", selection_mode=("box", "lasso")
    )
    st.caption("Drag a box or lasso over points to show those photos in the gallery below.")
    selected = selected_paths(event, points)
    if selected != st.session_state.get(SELECTION_SEEN_KEY):
        st.session_state[SELECTION_KEY] = selected or None
    st.session_state[SELECTION_SEEN_KEY] = selected


def map_points(points: pd.DataFrame, frame: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The map's rows with what colours and hovers need: true/pred names, correct, confidence, person.
    The review frame's labels and predictions win (the saved index may lack them)."""
    review_cols = [c for c in ("label", "pred", "group") if c in frame.columns]
    known = frame.drop_duplicates("path").set_index("path")[review_cols]
    out = points.drop(columns=[c for c in review_cols if c in points.columns]).join(known, on="path")
    out["row"] = np.arange(len(out))
    name_of = dict(enumerate(classes))
    out["true class"] = widgets.plot_labels(out["label"].map(name_of).fillna("?")) if "label" in out else "?"
    out["predicted class"] = widgets.plot_labels(out["pred"].map(name_of).fillna("?")) if "pred" in out else "?"
    correct = (out["label"] == out["pred"]) if {"label", "pred"} <= set(out.columns) else pd.Series(False, out.index)
    out["correct / wrong"] = np.where(correct, "correct", "wrong")
    if "confidence" not in out:
        out["confidence"] = np.nan
    out["person"] = widgets.plot_labels(out["group"].fillna("?")) if "group" in out else "?"
    out["file"] = widgets.plot_labels(Path(p).name for p in out["path"])
    return out


def map_figure(points: pd.DataFrame, colour: str):
    fig = px.scatter(
        points,
        x="x",
        y="y",
        color=colour,
        render_mode="webgl",
        custom_data=["row"],
        hover_name="file",
        hover_data={"x": False, "y": False, "row": False, "true class": True, "predicted class": True, colour: True},
    )
    fig.update_traces(marker={"size": 6, "opacity": 0.8})
    fig.update_layout(
        height=520,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        dragmode="lasso",
        legend_title_text="",
        xaxis={"visible": False},
        yaxis={"visible": False},
        showlegend=colour not in ("person",),
    )
    return fig


def selected_paths(event, points: pd.DataFrame) -> list[str]:
    """Paths of the points in a plotly box/lasso selection event (point custom data = map row)."""
    try:
        chosen = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    rows: list[int] = []
    for point in chosen:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and data:
            data = data[0]
        if isinstance(data, (int, float)) and 0 <= int(data) < len(points):
            rows.append(int(data))
    return [str(p) for p in points["path"].iloc[sorted(set(rows))]]


def _compute_panel(run, photos: int) -> None:
    """No embeddings yet: a button computes them (inline for a small set, else a background job)."""
    folder = _job_folder(str(run.root))
    job = background.state(folder)
    if job.status == "running":
        st.fragment(_job_progress, run_every=JOB_REFRESH_S)(folder)
        return
    st.caption(
        "This run has no embeddings of its validation images yet (training saves them at the best epoch; "
        "older runs lack them)."
    )
    if job.status == "failed":
        widgets.error("Computing the embeddings failed:", [job.log_tail.strip()[-800:]])
    if st.button("Compute embeddings", key="review_embed_button"):
        if photos < INLINE_EMBED_LIMIT:
            from core.evaluation import embeddings

            try:
                with st.spinner(f"Embedding {photos} photos…"):
                    embeddings.embed_run(run.root, device="cpu")
            except WorkbenchError as err:
                widgets.error(err)
                return
        else:
            background.launch(folder, ["embed", "--run", str(run.root)])
        st.rerun()


def _job_progress(folder: Path) -> None:
    job = background.state(folder)
    if job.status == "running":
        st.progress(job.fraction, text=f"Computing embeddings: {job.done}/{job.total or '?'} photos")
        return
    st.rerun()  # finished or failed: the whole page redraws with the map or the error


# ---- the selection and "more like this" -------------------------------------------------------------


def selection_chip() -> list[str] | None:
    """The map's selection as a removable chip; returns the selected paths (None: no selection)."""
    selected = st.session_state.get(SELECTION_KEY)
    if not selected:
        return None
    if st.button(f"✕ {len(selected)} photos selected on the map", key="review_clear_map", help="Remove this filter"):
        st.session_state[SELECTION_KEY] = None
        st.rerun()
    return list(selected)


def similar_button(path: str, key: str) -> None:
    if context().get("embeddings") and st.button("More like this", key=key, help="Its nearest neighbours"):
        st.session_state[SIMILAR_KEY] = str(path)


def neighbours_of(run_root: str, path: str, k: int = NEIGHBOURS) -> list[tuple[str, float]]:
    """(path, cosine distance) of the ``k`` photos nearest to ``path`` in the run's embeddings."""
    from core.evaluation import embeddings

    npy = _embeddings_file(run_root)
    features, paths = _features(str(run_root), _stamp(npy))
    try:
        row = paths.index(str(path))
    except ValueError:
        return []
    rows, dist = embeddings.nearest_neighbours(features, row, k)
    return [(paths[r], float(d)) for r, d in zip(rows, dist, strict=True)]
