"""Pieces of the Dataset page: charts, statistics panels, the gallery, the problems table, upload.

Every name from the data (class, folder, file) reaches the browser as text: tables, plotly labels
escaped as HTML entities by ``widgets.plot_label`` (plotly reads a few tags in labels), never
``unsafe_allow_html``. Session-state keys start with ``dataset_``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app import widgets
from core import settings
from core.data import datasets, stats, tasks, thumbnails
from core.errors import WorkbenchError

GALLERY_PAGE = 24
THUMB_SIDE = 160
STATS_SAMPLE = 200


def overview(index: datasets.DatasetIndex) -> None:
    counts = stats.class_distribution(index)["images"]
    cols = st.columns(6)
    cols[0].metric("Images", f"{len(index.frame):,}")
    cols[1].metric("People" if index.has_attributes else "Groups", f"{index.frame['group'].nunique():,}")
    cols[2].metric("Classes", len(index.classes))
    ratio = stats.imbalance_ratio(index)
    cols[3].metric(
        "Imbalance",
        "∞ (empty class)" if ratio == float("inf") else f"{ratio:.1f}×",
        help=f"largest class / smallest class ({int(counts.max())} / {int(counts.min())} images)",
    )
    cols[4].metric("Problems", len(index.problems) + index.more_problems)
    cols[5].metric("Index in memory", f"{index.memory_bytes() / 1e6:.1f} MB")
    left, right = st.columns([6, 1])
    left.caption(f"{index.format} format · {widgets.plain(index.root)}")
    if right.button("Rescan", key="dataset_rescan", help="Read the folder again instead of the saved index"):
        rescan(index.root)
    cache_caption()


@st.cache_data(ttl=30, max_entries=4, show_spinner=False)
def _cache_usage(cache_dir: str) -> dict[str, int]:
    from core import cachebudget

    return cachebudget.cache_usage(cache_dir)  # walks a few folders: refreshed every 30 s, not every rerun


def cache_caption() -> None:
    """Disk used by the workbench's caches (each is bounded and safe to delete)."""
    cache_dir = settings.load().cache_dir
    usage = _cache_usage(str(cache_dir))
    parts = " · ".join(f"{name} {size / 1e6:,.1f} MB" for name, size in usage.items())
    st.caption(f"Caches in {widgets.plain(str(cache_dir))}: {parts}")


def rescan(root: str) -> None:
    """Scan ``root`` again (replacing its persisted index) and drop the page's cached copy."""
    from core.data import roots

    with st.spinner("Rescanning…"):
        found = roots.open_dataset(root, settings.load().data_roots, rescan=True)
    if isinstance(found, WorkbenchError):
        widgets.error(found)
        return
    widgets._scan_cached.clear()
    st.rerun()


def class_chart(index: datasets.DatasetIndex) -> None:
    st.subheader("Class distribution")
    dist = stats.class_distribution(index)
    dist["class"] = widgets.plot_labels(dist["class_name"])
    colour = None
    if index.has_attributes:
        dist["mask"] = [widgets.plot_label(tasks.MASK_NAMES[tasks.decode_class(i)[0]]) for i in dist["label"]]
        colour = "mask"
    fig = px.bar(dist, x="class", y="images", color=colour, hover_data={"people": True, "label": True})
    fig.update_layout(xaxis_title=None, xaxis_tickangle=-45, height=420, margin={"t": 10}, legend_title_text="")
    fig.update_xaxes(categoryorder="array", categoryarray=list(dist["class"]))
    st.plotly_chart(fig, key="dataset_class_chart")


def attribute_panels(index: datasets.DatasetIndex) -> None:
    if not index.has_attributes:
        return
    st.subheader("Attributes")
    cols = st.columns(3)
    for col, attribute in zip(cols, tasks.ATTRIBUTES, strict=True):
        series = stats.attribute_distribution(index, attribute)
        frame = pd.DataFrame({"value": widgets.plot_labels(series.index), "images": series.to_numpy()})
        fig = px.bar(frame, x="value", y="images", title=attribute.capitalize())
        fig.update_layout(xaxis_title=None, height=280, margin={"t": 40, "b": 10})
        col.plotly_chart(fig, key=f"dataset_attr_{attribute}")
    left, right = st.columns(2)
    left.markdown("**Gender × age band — people**")
    left.dataframe(stats.gender_age_table(index, "people"))
    right.markdown("**Gender × age band — images**")
    right.dataframe(stats.gender_age_table(index, "images"))


def image_statistics(index: datasets.DatasetIndex) -> None:
    st.subheader("Image sizes and channel statistics")
    left, right = st.columns(2)
    sizes = stats.size_table(index)
    with left:
        st.markdown("**Sizes (width × height, after EXIF rotation)**")
        st.dataframe(sizes.head(50), hide_index=True)
        if len(sizes) > 1:
            st.caption(f"{len(sizes)} distinct sizes; a Resize step makes them uniform for training.")
    with right:
        st.markdown("**Per-channel mean / std (RGB, 0–1)** — the values to put in Normalize")
        measured = st.session_state.setdefault("dataset_channel_stats", {})  # by (root, image count)
        key = (index.root, len(index.frame))
        if st.button(
            f"Measure on a sample of {min(STATS_SAMPLE, len(index.frame))} images", key="dataset_stats_button"
        ):
            bar = st.progress(0.0, text="Decoding the sample…")
            try:
                measured[key] = stats.channel_stats(
                    index,
                    sample=STATS_SAMPLE,
                    seed=0,
                    progress=lambda done, total: bar.progress(done / total, text=f"Decoded {done}/{total}"),
                )
            except WorkbenchError as err:
                widgets.error(err)
            bar.empty()
        found = measured.get(key)
        if found:
            st.code(f"Normalize(\n    mean={found['mean']},\n    std={found['std']},\n)", language="python")
            st.caption(f"measured on {found['n']} images decoded at reduced size")
        else:
            st.caption("Not measured yet: the button decodes a random sample (a few seconds).")


def gallery(index: datasets.DatasetIndex) -> None:
    st.subheader("Gallery")
    dist = stats.class_distribution(index)
    present = dist[dist["images"] > 0]
    if present.empty:
        st.info("No images to show.")
        return
    labels = list(present["label"])
    counts = dict(zip(present["label"], present["images"], strict=True))
    label = st.selectbox(
        "Class",
        labels,
        key="dataset_gallery_class",
        format_func=lambda i: f"{index.classes[i]} ({counts[i]} images)",
    )
    total = int(counts[label])
    start, stop = widgets.pager(total, GALLERY_PAGE, key=f"dataset_gallery_page_{label}")
    page = index.class_rows(label, start, stop)  # costs the same in a dataset of any size
    thumbs = [thumbnails.thumbnail_or_placeholder(p, THUMB_SIDE) for p in page["path"]]
    widgets.image_grid(thumbs, [caption(row) for row in page.itertuples(index=False)], columns=6)
    st.caption(f"Images {start + 1}–{stop} of {total}")


def caption(row) -> str:
    if row.photo:
        return f"{row.person_id} · {row.photo}"
    return str(row.group)


def problems_table(index: datasets.DatasetIndex) -> None:
    st.subheader(f"Problems ({len(index.problems) + index.more_problems})")
    if index.more_problems:
        st.caption(f"and {index.more_problems:,} more problems (counted, not listed)")
    if not index.problems:
        st.success("No problems found: every file was readable and named as expected.")
        return
    frame = pd.DataFrame([{"path": p.path, "kind": p.kind, "message": p.message} for p in index.problems])
    kinds = frame["kind"].value_counts()
    st.caption("By kind: " + ", ".join(f"{k} × {n}" for k, n in kinds.items()))
    st.dataframe(frame, hide_index=True, key="dataset_problems")


def verify_panel(index: datasets.DatasetIndex) -> None:
    with st.expander("Verify all images (full decode)"):
        st.caption("The scan reads headers only. This decodes every image once to find corrupt pixel data.")
        verified_by_root = st.session_state.setdefault("dataset_verified", {})
        if st.button("Verify all images", key="dataset_verify_button"):
            bar = st.progress(0.0, text="Decoding…")
            try:
                verified = datasets.scan(
                    index.root if index.manifest is None else index.manifest,
                    verify=True,
                    progress=lambda done, total: bar.progress(done / max(total, 1), text=f"Decoded {done}/{total}"),
                )
                verified_by_root[index.root] = {"n_images": len(verified.frame), "problems": verified.problems}
            except WorkbenchError as err:
                widgets.error(err)
            bar.empty()
        result = verified_by_root.get(index.root)
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
        st.caption(f"The archive is unpacked into a new folder under {widgets.plain(roots[0])} and then opened here.")
        upload = st.file_uploader("Dataset archive", type=["zip"], key="dataset_zip", on_change=_name_from_upload)
        name = st.text_input("Folder name", key="dataset_zip_name")
        if st.button("Extract and open", key="dataset_zip_go", disabled=upload is None or not name.strip()):
            try:
                with st.spinner("Extracting…"):
                    target = archive.extract_dataset_zip(upload, roots[0], name.strip())
            except WorkbenchError as err:
                widgets.error(err)
                return
            st.session_state[widgets.DATASET_KEY] = str(target)
            st.query_params["dataset"] = str(target)
            st.rerun()


def _name_from_upload() -> None:
    """A new archive proposes its own name as the folder name. A keyed text_input ignores a changing
    ``value=``, so the proposal goes into the widget's state, before the widget is drawn."""
    upload = st.session_state.get("dataset_zip")
    st.session_state["dataset_zip_name"] = Path(upload.name).stem if upload is not None else ""
