"""Dataset checks on the Dataset page: duplicate groups (and the pairs that matter), image-quality issues.

Both passes read every image once, so they are computed on request and cached per dataset (its root
plus a cheap modification fingerprint) under ``settings.cache_dir / "explain"``: a small dataset in
the page's own run, a big one as a background ``python -m core duplicates|quality`` job whose
progress a fragment follows (app.background). Results are the CLI's CSVs, paths relative to the
dataset root. Names are shown as plain text; keys start with ``dataset_``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st

from app import background, widgets
from core import settings
from core.data import thumbnails
from core.errors import WorkbenchError

INLINE_LIMIT = 500  # fewer images than this are checked in the page's own run
RESULT_FILE = "result.csv"
GROUPS_PER_PAGE = 10
WORST_SHOWN = 24
THUMB_SIDE = 140
JOB_REFRESH_S = 1.0
QUALITY_NOTE = (
    "Thresholds are relative to this dataset, as CleanVision's are: a photo is flagged when its statistic is more "
    "than 3.5 robust standard deviations (median absolute deviation × 1.4826) from the dataset's median on the bad "
    "side and past a bound where the problem is visible (e.g. dark: even its brightest tenth below 25% of white). "
    "The score is that distance: larger is worse."
)
ISSUE_MEANING = {
    "dark": "even the brightest tenth of the pixels is dark",
    "bright": "even the darkest tenth is bright (washed out)",
    "blurry": "little fine detail compared with one scale coarser",
    "low_information": "a nearly flat grey-level histogram (blank)",
    "grayscale": "no colour",
    "odd_aspect": "width / height far from the dataset's",
    "odd_size": "pixel count far from the dataset's",
}


# ---- the passes -----------------------------------------------------------------------------------


def dataset_key(index) -> str:
    """Root + modification fingerprint + image count: a changed dataset gets fresh results."""
    root = str(Path(index.root).resolve())
    stamp = repr((root, widgets._fingerprint(str(index.root)), len(index.frame)))
    return hashlib.sha1(stamp.encode()).hexdigest()[:16]


def job_folder(kind: str, index) -> Path:
    return settings.load().cache_dir / "explain" / f"{kind}-{dataset_key(index)}"


def read_result(folder: Path, root: str | Path) -> pd.DataFrame | None:
    """The pass's CSV with paths made absolute under ``root`` (the CLI writes them relative)."""
    file = folder / RESULT_FILE
    if not file.is_file():
        return None
    frame = pd.read_csv(file, dtype=str, keep_default_na=False)
    for column in ("path", "path_a", "path_b"):
        if column in frame.columns:
            frame[column] = [_absolute(root, cell) for cell in frame[column]]
    for column in ("distance", "score"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def _absolute(root: str | Path, cell: str) -> str:
    if cell[:1] == "'" and cell[1:2] in ("=", "+", "-", "@", "\t", "\r"):  # fsutil.spreadsheet_safe's guard
        cell = cell[1:]
    return cell if Path(cell).is_absolute() else str(Path(root) / cell)


def _run_inline(kind: str, index, folder: Path) -> None:
    from core.cli import explain
    from core.data import duplicates, quality
    from core.fsutil import atomic_write_text

    resolved, paths = explain.image_files(index.root)
    table = duplicates.find_duplicates(paths) if kind == "duplicates" else quality.quality_report(paths)
    for column in ("path", "path_a", "path_b"):
        if column in table.columns:
            table[column] = [Path(p).relative_to(resolved).as_posix() for p in table[column]]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / RESULT_FILE, table.to_csv(index=False))


def pass_panel(kind: str, index, what: str) -> pd.DataFrame | None:
    """The cached result of ``kind`` ("duplicates" or "quality") for ``index``, or a button / progress."""
    folder = job_folder(kind, index)
    job = background.state(folder)
    if job.status == "running":
        st.fragment(_progress, run_every=JOB_REFRESH_S)(folder, what)
        return None
    found = read_result(folder, index.root)
    if found is not None:
        return found
    if job.status == "failed":
        widgets.error(f"The {kind} pass failed:", [job.log_tail.strip()[-800:]])
    images = len(index.frame)
    if st.button(f"Find {what}", key=f"dataset_{kind}_button"):
        if images < INLINE_LIMIT:
            try:
                with st.spinner(f"Checking {images} images…"):
                    _run_inline(kind, index, folder)
            except WorkbenchError as err:
                widgets.error(err)
                return None
        else:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / RESULT_FILE).unlink(missing_ok=True)
            background.launch(folder, [kind, str(index.root), "--out", str(folder / RESULT_FILE)])
        st.rerun()
    st.caption(
        f"Not checked yet: the button reads every image once ({images:,} images; big sets run in the background)."
    )
    return None


def _progress(folder: Path, what: str) -> None:
    job = background.state(folder)
    if job.status == "running":
        st.progress(job.fraction, text=f"Finding {what}: {job.done:,}/{job.total or '?'}")
        return
    st.rerun()


# ---- duplicates and leakage -----------------------------------------------------------------------


def runs_on_dataset(index) -> list:
    """Runs with validation predictions whose config names this dataset (they can show leakage)."""
    from core import runs
    from core.evaluation import review

    root = Path(index.root).resolve()
    found = []
    for run in review.runs_with_predictions(settings.load().models_dir):
        try:
            data = runs.read_config(run).get("data")
        except WorkbenchError:
            continue
        if data and Path(str(data)).resolve() == root:
            found.append(run)
    return found


def run_split(run, index) -> tuple[set[str], set[str]]:
    """(train paths, validation paths) of ``run`` on this dataset: validation from its predictions,
    train = the dataset's other images."""
    from core import runs

    val = set(runs.read_predictions_safely(run.val_predictions)["path"].astype(str))
    return set(index.frame["path"].astype(str)) - val, val


def duplicates_section(index) -> None:
    from core.data import duplicates

    st.subheader("Duplicates and leakage")
    st.caption(
        "Exact duplicates share their bytes; near duplicates are re-encoded, resized or slightly shifted copies "
        "(small colour thumbnails within a distance of 5 grey levels). See README, 'Duplicates'."
    )
    dups = pass_panel("duplicates", index, "duplicates")
    if dups is None:
        return
    on_dataset = runs_on_dataset(index)
    ids = [run.id for run in on_dataset]
    chosen = st.selectbox(
        "Check leakage against run",
        [None, *ids],
        key="dataset_leak_run",
        format_func=lambda r: "(no run)" if r is None else r,
    )
    train = val = None
    if chosen is not None:
        try:
            train, val = run_split(on_dataset[ids.index(chosen)], index)
        except WorkbenchError as err:
            widgets.error(err)
    flags = duplicates.flag_pairs(dups, index.frame, train, val)
    cols = st.columns(4)
    cols[0].metric("Exact pairs", int((flags["kind"] == "exact").sum()))
    cols[1].metric("Near pairs", int((flags["kind"] == "near").sum()))
    cols[2].metric("Different people", int(flags["different_people"].sum()), help="one photo filed under two ids")
    cols[3].metric("Leakage", int(flags["leakage"].sum()) if chosen else "–", help="one in train, one in validation")
    if flags.empty:
        st.success("No duplicates found.")
        return
    duplicate_groups_gallery(flags, index)
    with st.expander("All pairs"):
        table = flags.assign(path_a=_relative(flags["path_a"], index), path_b=_relative(flags["path_b"], index))
        st.dataframe(table, hide_index=True, key="dataset_dup_pairs")


def group_notes(group: list[str], flags: pd.DataFrame) -> list[str]:
    """What matters about a group: its kind, and whether it crosses people or the run's split."""
    members = set(group)
    inside = flags[flags["path_a"].isin(members) & flags["path_b"].isin(members)]
    notes = ["exact" if (inside["kind"] == "exact").all() else "near"]
    if inside["different_people"].any():
        notes.append("different people")
    if inside["leakage"].any():
        notes.append("LEAKAGE: split across train and validation")
    return notes


def duplicate_groups_gallery(flags: pd.DataFrame, index) -> None:
    from core.data import duplicates

    groups = duplicates.duplicate_groups(flags)
    only_flagged = st.toggle("Only groups across people or the run's split", key="dataset_dup_flagged")
    if only_flagged:
        groups = [g for g in groups if len(group_notes(g, flags)) > 1]
    st.text(f"{len(groups)} duplicate groups")
    start, stop = widgets.pager(len(groups), GROUPS_PER_PAGE, key=f"dataset_dup_page_{only_flagged}")
    person = dict(zip(index.frame["path"].astype(str), index.frame["group"].astype(str), strict=False))
    for group in groups[start:stop]:
        with st.container(border=True):
            st.text(f"{len(group)} photos · " + " · ".join(group_notes(group, flags)))
            thumbs = [thumbnails.thumbnail_or_placeholder(p, THUMB_SIDE) for p in group]
            captions = [f"{person.get(p, '?')} · {Path(p).name}" for p in group]
            widgets.image_grid(thumbs, captions, columns=6)


def _relative(paths: pd.Series, index) -> list[str]:
    root = Path(index.root)
    out = []
    for p in paths:
        try:
            out.append(Path(p).relative_to(root).as_posix())
        except ValueError:
            out.append(str(p))
    return out


# ---- image quality --------------------------------------------------------------------------------


def quality_section(index) -> None:
    from core.data import quality

    st.subheader("Image quality")
    st.caption(QUALITY_NOTE)
    flags = pass_panel("quality", index, "quality issues")
    if flags is None:
        return
    counts = flags["issue"].value_counts()
    if flags.empty:
        st.success("No image is flagged for any issue.")
        return
    issue = st.selectbox(
        "Issue",
        list(quality.ISSUES),
        key="dataset_quality_issue",
        format_func=lambda i: f"{i.replace('_', ' ')} ({int(counts.get(i, 0))} images)",
    )
    st.caption(widgets.plain(f"{issue.replace('_', ' ')}: {ISSUE_MEANING.get(issue, '')}"))
    worst = flags[flags["issue"] == issue].sort_values("score", ascending=False).head(WORST_SHOWN)
    if worst.empty:
        st.info("No image is flagged for this issue.")
        return
    thumbs = [thumbnails.thumbnail_or_placeholder(p, THUMB_SIDE) for p in worst["path"]]
    captions = [f"score {s:.1f} · {r}" for s, r in zip(worst["score"], _relative(worst["path"], index), strict=True)]
    widgets.image_grid(thumbs, captions, columns=6)
