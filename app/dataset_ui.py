"""Pieces of the Dataset page: charts, statistics panels, the gallery, the problems table, upload.

Every name from the data (class, folder, file) reaches the browser as text: tables, plotly labels
escaped as HTML entities (plotly reads a few tags in labels), never ``unsafe_allow_html``.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app import widgets
from core import settings
from core.data import datasets, thumbnails
from core.errors import WorkbenchError

GALLERY_PAGE = 24
THUMB_SIDE = 160
STATS_SAMPLE = 200


def plot_label(text: str) -> str:
    """A data string made safe for a plotly label: shown literally, never read as markup."""
    return html.escape(str(text), quote=False)


def overview(index: datasets.DatasetIndex) -> None:
    counts = datasets.class_distribution(index)["images"]
    cols = st.columns(5)
    cols[0].metric("Images", f"{len(index.frame):,}")
    cols[1].metric("People" if index.has_attributes else "Groups", f"{index.frame['group'].nunique():,}")
    cols[2].metric("Classes", len(index.classes))
    ratio = datasets.imbalance_ratio(index)
    cols[3].metric(
        "Imbalance", "∞ (empty class)" if ratio == float("inf") else f"{ratio:.1f}×",
        help=f"largest class / smallest class ({int(counts.max())} / {int(counts.min())} images)",
    )  # fmt: skip
    cols[4].metric("Problems", len(index.problems))
    st.caption(f"{index.format} format · {widgets.plain(index.root)}")


def class_chart(index: datasets.DatasetIndex) -> None:
    st.subheader("Class distribution")
    dist = datasets.class_distribution(index)
    dist["class"] = [plot_label(n) for n in dist["class_name"]]
    colour = None
    if index.has_attributes:
        dist["mask"] = [plot_label(datasets.MASK_NAMES[datasets.decode_class(i)[0]]) for i in dist["label"]]
        colour = "mask"
    fig = px.bar(dist, x="class", y="images", color=colour, hover_data={"people": True, "label": True})
    fig.update_layout(xaxis_title=None, xaxis_tickangle=-45, height=420, margin={"t": 10}, legend_title_text="")
    fig.update_xaxes(categoryorder="array", categoryarray=list(dist["class"]))
    st.plotly_chart(fig, key="class_chart")


def attribute_panels(index: datasets.DatasetIndex) -> None:
    if not index.has_attributes:
        return
    st.subheader("Attributes")
    cols = st.columns(3)
    for col, attribute in zip(cols, datasets.ATTRIBUTE_NAMES, strict=True):
        series = datasets.attribute_distribution(index, attribute)
        frame = pd.DataFrame({"value": [plot_label(v) for v in series.index], "images": series.to_numpy()})
        fig = px.bar(frame, x="value", y="images", title=attribute.capitalize())
        fig.update_layout(xaxis_title=None, height=280, margin={"t": 40, "b": 10})
        col.plotly_chart(fig, key=f"attr_{attribute}")
    left, right = st.columns(2)
    left.markdown("**Gender × age band — people**")
    left.dataframe(datasets.gender_age_table(index, "people"))
    right.markdown("**Gender × age band — images**")
    right.dataframe(datasets.gender_age_table(index, "images"))


def image_statistics(index: datasets.DatasetIndex) -> None:
    st.subheader("Image sizes and channel statistics")
    left, right = st.columns(2)
    sizes = datasets.size_table(index)
    with left:
        st.markdown("**Sizes (width × height, after EXIF rotation)**")
        st.dataframe(sizes.head(50), hide_index=True)
        if len(sizes) > 1:
            st.caption(f"{len(sizes)} distinct sizes; a Resize step makes them uniform for training.")
    with right:
        st.markdown("**Per-channel mean / std (RGB, 0–1)** — the values to put in Normalize")
        key = f"channel_stats::{index.root}::{len(index.frame)}"
        if st.button(f"Measure on a sample of {min(STATS_SAMPLE, len(index.frame))} images", key="stats_button"):
            bar = st.progress(0.0, text="Decoding the sample…")
            try:
                st.session_state[key] = datasets.channel_stats(
                    index, sample=STATS_SAMPLE, seed=0,
                    progress=lambda done, total: bar.progress(done / total, text=f"Decoded {done}/{total}"),
                )  # fmt: skip
            except WorkbenchError as err:
                st.error(str(err))
            bar.empty()
        stats = st.session_state.get(key)
        if stats:
            st.code(f"Normalize(\n    mean={stats['mean']},\n    std={stats['std']},\n)", language="python")
            st.caption(f"measured on {stats['n']} images decoded at reduced size")
        else:
            st.caption("Not measured yet: the button decodes a random sample (a few seconds).")


def gallery(index: datasets.DatasetIndex) -> None:
    st.subheader("Gallery")
    dist = datasets.class_distribution(index)
    present = dist[dist["images"] > 0]
    if present.empty:
        st.info("No images to show.")
        return
    labels = list(present["label"])
    counts = dict(zip(present["label"], present["images"], strict=True))
    label = st.selectbox(
        "Class", labels, key="gallery_class",
        format_func=lambda i: f"{index.classes[i]} ({counts[i]} images)",
    )  # fmt: skip
    rows = index.frame[index.frame["label"] == label]
    start, stop = widgets.pager(len(rows), GALLERY_PAGE, key=f"gallery_page_{label}")
    page = rows.iloc[start:stop]
    thumbs = [thumbnails.thumbnail_or_placeholder(p, THUMB_SIDE) for p in page["path"]]
    widgets.image_grid(thumbs, [caption(row) for row in page.itertuples(index=False)], columns=6)
    st.caption(f"Images {start + 1}–{stop} of {len(rows)}")


def caption(row) -> str:
    if row.photo:
        return f"{row.person_id} · {row.photo}"
    return str(row.group)


def problems_table(index: datasets.DatasetIndex) -> None:
    st.subheader(f"Problems ({len(index.problems)})")
    if not index.problems:
        st.success("No problems found: every file was readable and named as expected.")
        return
    frame = pd.DataFrame([{"path": p.path, "kind": p.kind, "message": p.message} for p in index.problems])
    kinds = frame["kind"].value_counts()
    st.caption("By kind: " + ", ".join(f"{k} × {n}" for k, n in kinds.items()))
    st.dataframe(frame, hide_index=True, key="problems_table")


def verify_panel(index: datasets.DatasetIndex) -> None:
    with st.expander("Verify all images (full decode)"):
        st.caption("The scan reads headers only. This decodes every image once to find corrupt pixel data.")
        key = f"verify::{index.root}"
        if st.button("Verify all images", key="verify_button"):
            bar = st.progress(0.0, text="Decoding…")
            try:
                verified = datasets.scan(
                    index.root if index.manifest is None else index.manifest, verify=True,
                    progress=lambda done, total: bar.progress(done / max(total, 1), text=f"Decoded {done}/{total}"),
                )  # fmt: skip
                st.session_state[key] = {"n_images": len(verified.frame), "problems": verified.problems}
            except WorkbenchError as err:
                st.error(str(err))
            bar.empty()
        result = st.session_state.get(key)
        if result:
            new = [p for p in result["problems"] if p not in index.problems]
            st.write(f"{result['n_images']} images decode; {len(new)} more problem(s) found by decoding.")
            if new:
                st.dataframe(pd.DataFrame([vars(p) for p in new]), hide_index=True)


def upload_panel() -> None:
    with st.expander("Upload a dataset (.zip)"):
        try:
            from core.data import archive
        except ImportError:
            st.info("Uploading is not available in this version.")
            return
        roots = settings.load().data_roots
        st.caption(f"The archive is unpacked into a new folder under {roots[0]} and then opened here.")
        upload = st.file_uploader("Dataset archive", type=["zip"], key="dataset_zip")
        name = st.text_input("Folder name", value=Path(upload.name).stem if upload else "", key="dataset_zip_name")
        if st.button("Extract and open", key="dataset_zip_go", disabled=upload is None or not name.strip()):
            try:
                with st.spinner("Extracting…"):
                    target = archive.extract_dataset_zip(upload, roots[0], name.strip())
            except WorkbenchError as err:
                st.error(str(err))
                return
            st.session_state[widgets.DATASET_KEY] = str(target)
            st.query_params["dataset"] = str(target)
            st.rerun()
