"""Pieces of the Submission page: the prediction form, the live job panel, results, history, import form.

Everything is read from submissions/<id>/ folders (config.json, status.json, submission.csv and its
summary), so a prediction survives reloads and app restarts. No tensors here: core does the work.
Session-state and widget keys start with ``submit_``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app import widgets
from core import runs, settings
from core.data import tasks
from core.errors import UnsafePathError, WorkbenchError
from core.evaluation import predjobs, submission
from core.fsutil import resolve_inside
from core.runs import jobs

JOB_KEY = "submit_job"  # the submission shown; mirrored in the URL as ?sub=<id>
REFRESH_S = 1.0
SAMPLE_COUNT = 12


def run_label(run: dict) -> str:
    size = "x".join(str(v) for v in run.get("img_size") or []) or "?"
    return f"{run['id']} · {run.get('model') or '?'} · task {run.get('task') or '?'} · {size} · {run.get('state')}"


def default_eval_folder() -> str:
    """The current dataset's eval/ folder (or the dataset itself when it is an eval folder)."""
    root = widgets.current_dataset_root()
    if not root:
        return ""
    for candidate in (Path(root) / "eval", Path(root)):
        if (candidate / "info.csv").is_file():
            return str(candidate)
    return str(Path(root) / "eval")


def resolve_eval_folder(text: str) -> Path:
    """The eval folder the user typed, resolved once: a relative path is read against the data roots
    (the first where it exists), never the server's working directory, and the result must lie inside
    a data root. The job is given this resolved path. Raises UnsafePathError."""
    roots = settings.load().data_roots
    inside = []
    for root in roots:
        try:
            inside.append(resolve_inside(root, text.strip()))
        except (UnsafePathError, OSError, RuntimeError):
            continue
    if not text.strip() or not inside:
        raise UnsafePathError(
            f"{text.strip() or '(empty)'}: choose a folder inside the data roots ({', '.join(map(str, roots))})"
        )
    return next((path for path in inside if path.is_dir()), inside[0])


# ---- launching ---------------------------------------------------------------------------------------


def prediction_form() -> None:
    st.subheader("Predict")
    available = predjobs.predictable_runs(settings.load().models_dir)
    if not available:
        st.info("No runs with a checkpoint yet: train one on the Training page, or import a checkpoint below.")
        return
    by_id = {r["id"]: r for r in available}
    with st.form("submit_predict"):
        chosen = st.multiselect(
            "Runs (several = an ensemble averaging their probabilities)",
            list(by_id),
            default=[available[0]["id"]],
            format_func=lambda rid: run_label(by_id[rid]),
            key="submit_runs",
        )
        tta = st.toggle("Test-time augmentation (average with the mirrored image)", value=False, key="submit_tta")
        data = st.text_input("Eval folder (info.csv + images/)", value=default_eval_folder(), key="submit_data")
        st.caption("Each run predicts with its own eval transforms and image size, as it was trained.")
        launched = st.form_submit_button("Predict", type="primary")
    if not launched:
        return
    if not chosen:
        st.error("Choose at least one run.")
        return
    run_tasks = {str(by_id[r]["task"]) for r in chosen}
    if len(run_tasks) > 1:
        widgets.error(
            f"These runs predict different tasks ({', '.join(sorted(run_tasks))}); an ensemble needs one task."
        )
        return
    try:
        folder = predjobs.create_prediction_job([by_id[r]["path"] for r in chosen], resolve_eval_folder(data), tta)
        jobs.launch(folder, jobs.job_argv(folder))
    except WorkbenchError as err:
        widgets.error(err)
        return
    select_job(folder.id)
    st.success(f"Prediction {widgets.plain(folder.id)} started.")


def select_job(job_id: str) -> None:
    st.session_state[JOB_KEY] = job_id
    st.query_params["sub"] = job_id


def selected_job(history: pd.DataFrame) -> str | None:
    wanted = st.session_state.get(JOB_KEY) or st.query_params.get("sub")
    ids = history["id"].tolist()
    return wanted if wanted in ids else (ids[0] if ids else None)


# ---- one submission -----------------------------------------------------------------------------------


@st.fragment(run_every=REFRESH_S)
def live_panel(folder: Path) -> None:
    """Progress of a queued/running job; a full rerun when it ends, so the results appear."""
    status = jobs.reconcile(runs.RunFolder(folder))
    state = status.get("state")
    if state in runs.FINAL_STATES:
        st.rerun()
    done, total = int(status.get("step") or 0), int(status.get("total_steps") or 0)
    text = f"{state}: {status.get('message') or ''} ({done}/{total or '?'})"
    st.progress(done / total if total else 0.0, text=widgets.plain(text))
    if st.button("Cancel", key=f"submit_cancel_{folder.name}"):
        try:
            jobs.cancel(runs.RunFolder(folder))
        except WorkbenchError as err:
            widgets.error(err)


def show_submission(row: dict) -> None:
    """One submission from the history: a page-launched prediction job, or a folder ``predict --out`` wrote."""
    folder = Path(row["path"])
    if row["source"] == "job":
        show_job(folder)
        return
    st.markdown(f"**{widgets.plain(row['id'])}** — written by `python -m core predict --out`")
    st.text(f"Runs: {run_names(row['runs'])} · TTA: {'on' if row['tta'] else 'off'} · data: {row['data']}")
    show_result(folder, row["id"])


def run_names(paths: list) -> str:
    return ", ".join(Path(p).name for p in paths or [])


def show_job(folder: Path) -> None:
    run = runs.RunFolder(folder)
    status = jobs.reconcile(run)
    config = runs.read_config(run)
    st.markdown(f"**{widgets.plain(run.id)}** — {status.get('state')}")
    # st.text, not markdown: folder names are user data
    st.text(
        f"Runs: {run_names(config.get('runs', []))} · TTA: {'on' if config.get('tta') else 'off'} · "
        f"data: {config.get('data')}"
    )
    state = status.get("state")
    if state in runs.ACTIVE_STATES:
        live_panel(folder)
        return
    if state != "completed":
        widgets.error(status.get("error") or f"The prediction ended {state}.")
        problems = predjobs.job_image_problems(folder)
        if problems:
            st.dataframe(pd.DataFrame({"missing or unreadable image": problems}), hide_index=True)
        return
    show_result(folder, run.id)


def show_result(folder: Path, sub_id: str) -> None:
    """A finished submission: the validator's verdict, the download, the class distribution, samples."""
    summary = predjobs.job_summary(folder)
    csv_path = folder / predjobs.SUBMISSION_FILE
    if not summary or not csv_path.is_file():
        st.warning("The submission's submission.csv or its summary is missing.")
        return
    validator_box(csv_path, summary)
    st.download_button(
        "Download submission.csv",
        csv_path.read_bytes(),
        file_name=f"submission-{sub_id}.csv",
        mime="text/csv",
        type="primary",
        key=f"submit_download_{sub_id}",
    )
    st.caption(f"{summary['images']} images · {summary.get('images_per_s')} images/s")
    distribution_chart(summary)
    sample_grid(folder, summary)


def validator_box(csv_path: Path, summary: dict) -> None:
    """Re-run the validator on the file as it is now (it may have been edited since)."""
    info = summary.get("info_csv")
    if not info:
        st.info("Not an eval folder with info.csv: the file holds plain predictions.")
        return
    try:
        problems = submission.validate_submission(csv_path, info, num_classes=len(summary["classes"]))
    except WorkbenchError as err:
        widgets.warning(f"Could not validate: {err}")
        return
    for warning in submission.submission_warnings(csv_path):
        widgets.warning(warning)  # ids a spreadsheet would read as formulas: kept exact, but said
    if problems:
        widgets.error("submission.csv does not validate:", details=problems)
    else:
        st.success(
            f"Valid: {summary['images']} rows in info.csv's order, columns ImageID,ans, classes 0–{len(summary['classes']) - 1}."
        )


def training_counts(summary: dict) -> pd.Series | None:
    """Images per class in the dataset the (first) run trained on, else the current dataset."""
    candidates = []
    for member in summary.get("runs", []):
        config = (
            runs.read_config(runs.RunFolder(member["path"])) if Path(member["path"], "config.json").is_file() else {}
        )
        if config.get("data"):
            candidates.append(config["data"])
    if widgets.current_dataset_root():
        candidates.append(widgets.current_dataset_root())
    for root in candidates:
        try:
            index = widgets.load_index(root)
            labels, _ = index.task_labels(summary["task"])
        except (WorkbenchError, KeyError, ValueError):
            continue
        return pd.Series(labels).value_counts().reindex(range(len(summary["classes"])), fill_value=0)
    return None


def distribution_figure(summary: dict, train: pd.Series | None):
    """Predicted class shares beside the training shares; class names escaped (they are folder names)."""
    classes = widgets.plot_labels(summary["classes"])
    predicted = pd.Series(summary["counts"], index=range(len(classes)))
    frames = [pd.DataFrame({"class": classes, "share": predicted / max(1, predicted.sum()), "set": "predicted (eval)"})]
    if train is not None:
        frames.append(
            pd.DataFrame({"class": classes, "share": train.to_numpy() / max(1, train.sum()), "set": "training"})
        )
    fig = px.bar(
        pd.concat(frames),
        x="class",
        y="share",
        color="set",
        barmode="group",
        title="Predicted class distribution beside the training distribution",
    )
    fig.update_layout(yaxis_tickformat=".0%", xaxis_tickangle=-45, height=380)
    return fig


def distribution_chart(summary: dict) -> None:
    classes = summary["classes"]
    st.plotly_chart(distribution_figure(summary, training_counts(summary)), key="submit_distribution")
    empty = [classes[k] for k, n in enumerate(summary["counts"]) if n == 0]
    top = max(summary["counts"]) / max(1, sum(summary["counts"]))
    if top > 0.5 or len(empty) > len(classes) // 2:
        st.warning(
            f"The predictions look collapsed: {top:.0%} of images in one class, {len(empty)} classes never predicted."
        )


def sample_grid(folder: Path, summary: dict) -> None:
    from core.data import thumbnails

    probs_path = predjobs.output_paths(folder / predjobs.SUBMISSION_FILE)["probabilities"]
    try:
        frame = pd.read_parquet(probs_path, columns=["id", "path", "pred"])
    except (OSError, ValueError):
        return
    sample = frame.sample(min(SAMPLE_COUNT, len(frame)), random_state=0) if len(frame) else frame
    tiles, captions = [], []
    for path, pred in zip(sample["path"], sample["pred"], strict=True):
        try:
            tiles.append(thumbnails.thumbnail_jpeg(path))
        except WorkbenchError:
            tiles.append(thumbnails.placeholder_jpeg())
        captions.append(str(summary["classes"][int(pred)]))
    st.markdown("**Sample eval images with their predicted class**")
    widgets.image_grid(tiles, captions, columns=6)


# ---- history --------------------------------------------------------------------------------------------


def history_table(history: pd.DataFrame) -> None:
    """Every submission: page-launched jobs and folders ``predict --out`` wrote (source "cli")."""
    st.subheader("Earlier submissions")
    shown = history.assign(
        created=pd.to_datetime(history["created"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S"),
        runs=[run_names(paths) for paths in history["runs"]],
    )
    columns = ["id", "created", "source", "state", "runs", "tta", "images", "valid", "public", "private", "data"]
    st.dataframe(shown[columns], hide_index=True)


# ---- importing a checkpoint ---------------------------------------------------------------------------------


def import_form() -> None:
    from core.evaluation import checkpoints
    from core.training.models import MODEL_NAMES

    st.subheader("Import a checkpoint")
    st.caption(
        "A state_dict trained elsewhere (.pt/.pth loaded with weights_only=True, or .safetensors) "
        "becomes a run you can review and predict with. Files carrying pickled code are refused unrun."
    )
    with st.form("submit_import", clear_on_submit=True):
        upload = st.file_uploader("Checkpoint file", type=["pt", "pth", "safetensors"], key="submit_import_file")
        c1, c2, c3, c4, c5 = st.columns(5)
        model = c1.selectbox("Architecture", MODEL_NAMES, key="submit_import_model")
        task = c2.selectbox(
            "Task", tasks.TASK_NAMES, format_func=lambda t: tasks.competition_task(t).label, key="submit_import_task"
        )
        height = c3.number_input("Input height", min_value=16, max_value=1024, value=128, step=8, key="submit_import_h")
        width = c4.number_input("Input width", min_value=16, max_value=1024, value=96, step=8, key="submit_import_w")
        name = c5.text_input("Run name", placeholder="imported-…", key="submit_import_name")
        submitted = st.form_submit_button("Import")
    if not submitted:
        return
    if upload is None:
        st.error("Choose a checkpoint file first.")
        return
    try:
        run_id = runs.validate_run_id(name.strip()) if name.strip() else runs.new_run_id("imported")
        suffix = Path(upload.name).suffix.lower()
        with tempfile.TemporaryDirectory(dir=_scratch_dir()) as tmp:
            file = Path(tmp) / f"upload{suffix}"  # the user's file name is never used as a path
            file.write_bytes(upload.getvalue())
            folder = checkpoints.import_checkpoint(
                file, model, task, settings.load().models_dir / run_id, img_size=(int(height), int(width))
            )
    except WorkbenchError as err:
        widgets.error(err)
        return
    st.success(f"Imported as run {widgets.plain(folder.id)}: choose it above to predict.")


def _scratch_dir() -> Path:
    path = settings.load().cache_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path
