"""Training: launch a background job, watch the runs, follow one live, compare several.

Everything shown is read from run folders (core.runs.folder / core.runs.jobs), so jobs survive reloads and
app restarts; this page never holds a job in memory.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app import train_ui, widgets
from core import runs, settings
from core.data.tasks import TASK_NAMES as TASKS
from core.errors import WorkbenchError
from core.runs import jobs
from core.specs import transforms
from core.training.config import CACHES, DEVICES, LOSSES, OPTIMIZERS, SCHEDULERS, TrainConfig
from core.training.models import MODEL_NAMES

# How often the page re-draws while a job runs. Every re-draw costs the browser far more than the
# server. Measured with 4 headless Chromium tabs watching one job, per tab: ~0.28 of a core with
# these at 2/5/5 s, ~0.18 at 3/15/10 s, ~0.02 with nothing refreshing; the server stays under 0.05
# of a core per session. So only the progress line is quick.
REFRESH_S = 3.0  # progress line and ETA of the selected run while it is queued or running
TABLE_REFRESH_S = 15.0  # runs table while any run is queued or running
CURVES_REFRESH_S = 10.0  # curves and log of the selected run while it is active
LIVE_SHARE_S = 1.0  # how long sessions share one read of a running job's metrics and charts
TASK_LABELS = {
    "class": "all 18 classes",
    "mask": "mask (3)",
    "gender": "gender (2)",
    "age": "age band (3)",
}
RUN_KEY = "train_run"  # the selected run; mirrored in the URL as ?run=<id>

st.title("Training")


def pick_transform_pair(img_hw: tuple[int, int]) -> tuple[list, list, tuple[int, int] | None]:
    """The train/eval specs from a preset (resized to img_hw) or a saved pair (which fixes its own size)."""
    saved = transforms.list_named_pairs()
    options = [f"preset: {name}" for name in transforms.PRESETS] + [f"saved: {name}" for name in saved]
    choice = st.selectbox(
        "Train / eval transforms", options, key="train_pair",
        help="Presets, or pairs saved on the Augmentations page. The eval spec is also used for inference.",
    )  # fmt: skip
    kind, name = choice.split(": ", 1)
    if kind == "preset":
        train_spec, eval_spec = transforms.preset(name, img_hw)
        return list(train_spec), list(eval_spec), None
    train_spec, eval_spec = transforms.load_named_pair(name)
    return list(train_spec), list(eval_spec), tuple(transforms.output_size(eval_spec))


def new_run_form(data_root: str | None) -> None:
    defaults = TrainConfig(data=data_root or "data")
    st.subheader("New run")
    if not data_root:
        st.info("Pick a dataset in the sidebar to train on it.")
        return
    st.caption(f"Dataset: {widgets.plain(data_root)}")
    c1, c2, c3, c4 = st.columns(4)
    name = c1.text_input("Run name (optional)", key="train_name", placeholder="automatic")
    task = c2.selectbox("Task", TASKS, format_func=lambda t: TASK_LABELS.get(t, t), key="train_task")
    model = c3.selectbox("Backbone", MODEL_NAMES, index=MODEL_NAMES.index(defaults.model), key="train_model")
    pretrained = c4.checkbox(
        "Pretrained weights", value=defaults.pretrained, key="train_pretrained",
        help="ImageNet weights from the local torch cache (never downloaded).",
    )  # fmt: skip

    c1, c2, c3 = st.columns([2, 1, 1])
    height = c2.number_input("Image height", 8, 4096, defaults.img_hw[0], step=8, key="train_h")
    width = c3.number_input("Image width", 8, 4096, defaults.img_hw[1], step=8, key="train_w")
    with c1:
        try:
            train_spec, eval_spec, fixed_hw = pick_transform_pair((int(height), int(width)))
        except WorkbenchError as err:
            st.error(str(err))
            return
    img_hw = fixed_hw or (int(height), int(width))
    if fixed_hw:
        st.caption(f"This saved pair produces {fixed_hw[0]}×{fixed_hw[1]} images; the size fields are ignored.")
    for finding in transforms.check_pair(train_spec, eval_spec):
        st.warning(f"Train/eval check: {finding}")

    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", 1, 1000, defaults.epochs, key="train_epochs")
    max_steps = c2.number_input(
        "Max steps (0 = use epochs)", 0, 10_000_000, defaults.max_steps, key="train_max_steps"
    )
    batch_size = c3.number_input("Batch size", 1, 4096, defaults.batch_size, key="train_batch")
    device = c4.selectbox("Device", DEVICES, index=DEVICES.index(defaults.device), key="train_device")

    with st.expander("Optimiser, loss and data"):
        c1, c2, c3, c4 = st.columns(4)
        optimizer = c1.selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(defaults.optimizer), key="train_opt")
        lr = c2.number_input("Learning rate", 1e-7, 10.0, defaults.lr, format="%.6f", key="train_lr")
        momentum = c3.number_input("Momentum (SGD)", 0.0, 0.999, defaults.momentum, key="train_momentum")
        weight_decay = c4.number_input("Weight decay", 0.0, 1.0, defaults.weight_decay, format="%.6f", key="train_wd")
        c1, c2, c3, c4 = st.columns(4)
        scheduler = c1.selectbox("Scheduler", SCHEDULERS, index=SCHEDULERS.index(defaults.scheduler), key="train_sched")
        warmup = c2.number_input("Warm-up steps", 0, 1_000_000, defaults.warmup_steps, key="train_warmup")
        loss = c3.selectbox("Loss", LOSSES, index=LOSSES.index(defaults.loss), key="train_loss")
        balanced = c4.checkbox("Balanced sampling", value=defaults.balanced_sampling, key="train_balanced")
        c1, c2, c3, c4 = st.columns(4)
        val_fraction = c1.number_input("Validation fraction", 0.05, 0.9, defaults.val_fraction, key="train_val")
        seed = c2.number_input("Seed", 0, 2**31 - 1, defaults.seed, key="train_seed")
        cache = c3.selectbox(
            "Decoded-image cache", CACHES, index=CACHES.index(defaults.cache), key="train_cache",
            help="memmap: decode each image once into a uint8 cache; later epochs and runs skip decoding.",
        )  # fmt: skip
        workers = c4.number_input("Loader workers", 0, 64, defaults.workers, key="train_workers")
        log_every = st.number_input("Log every N steps", 1, 100_000, defaults.log_every, key="train_log_every")

    config = {
        **defaults.to_dict(),
        "data": data_root, "task": task, "model": model, "pretrained": pretrained,
        "train_spec": train_spec, "eval_spec": eval_spec, "img_size": list(img_hw),
        "epochs": int(epochs), "max_steps": int(max_steps), "batch_size": int(batch_size), "device": device,
        "optimizer": optimizer, "lr": float(lr), "momentum": float(momentum), "weight_decay": float(weight_decay),
        "scheduler": scheduler, "warmup_steps": int(warmup), "loss": loss, "balanced_sampling": balanced,
        "val_fraction": float(val_fraction), "seed": int(seed), "cache": cache, "workers": int(workers),
        "log_every": int(log_every),
    }  # fmt: skip
    if st.button("Launch training", type="primary", key="train_launch"):
        try:
            run = jobs.launch_training(config, name=name.strip() or None)
        except WorkbenchError as err:
            st.error(str(err))
            return
        st.session_state[RUN_KEY] = run.id
        st.success(f"Launched {run.id}. It runs in the background: you can leave this page.")


def runs_table_panel(models_dir: Path) -> None:
    """The runs table; while a job is active the fragment re-reads the folders so it does not go stale."""
    table = jobs.list_runs(models_dir)
    st.dataframe(
        train_ui.runs_table(table),
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "best val macro F1": st.column_config.NumberColumn(format="%.3f"),
            "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        },
    )


def pick_run(table) -> str | None:
    """The selected run id, kept in session state and the URL (?run=) so a reload keeps it."""
    ids = list(table["id"])
    if not ids:
        return None
    if st.session_state.get(RUN_KEY) not in ids:
        wanted = st.query_params.get("run")
        st.session_state[RUN_KEY] = wanted if wanted in ids else ids[0]
    run_id = st.selectbox("Selected run", ids, key=RUN_KEY)
    st.query_params["run"] = run_id
    return run_id


# Everyone watching a run shares one read of its metrics and one set of charts per second: with
# several sessions refreshing every REFRESH_S, reading and charting per session was most of the
# server's work (profiled with 8 sessions).
@st.cache_data(ttl=LIVE_SHARE_S, max_entries=32, show_spinner=False)
def live_metrics(run_root: str) -> pd.DataFrame:
    return runs.read_metrics(runs.RunFolder(Path(run_root)))


@st.cache_data(ttl=LIVE_SHARE_S, max_entries=64, show_spinner=False)
def live_curves(run_root: str, smoothing: float) -> list[dict]:
    """The run's CURVES charts as plotly dicts (cheap to copy out of the cache)."""
    metrics = {Path(run_root).name: live_metrics(run_root)}
    return [train_ui.curve_figure(metrics, *curve, smoothing).to_dict() for curve in train_ui.CURVES]


def live_panel(run: runs.RunFolder) -> None:
    """Status, progress with ETA and controls of one run (re-run by the fragment while active)."""
    status = jobs.reconcile(run)
    state = status.get("state", "queued")
    seen_key = f"train_seen_state_{run.id}"
    previous = st.session_state.get(seen_key)
    st.session_state[seen_key] = state
    if previous in runs.ACTIVE_STATES and state in runs.FINAL_STATES:
        st.rerun()  # refresh the runs table and stop the timer

    message = status.get("message")
    st.markdown(f"**{widgets.plain(run.id)}** — {state}" + (f" · {widgets.plain(message)}" if message and message != state else ""))
    if state == "failed" and status.get("error"):
        st.error(status["error"])
    step, total = status.get("step") or 0, status.get("total_steps") or 0
    if state == "completed":
        step = total  # heartbeats are throttled: the last one can predate the final step
    if total:
        eta = train_ui.eta_seconds(status) if state in runs.ACTIVE_STATES else None
        text = f"step {step} / {total}" + (f" · ETA {train_ui.format_duration(eta)}" if eta is not None else "")
        st.progress(1.0 if state == "completed" else min(1.0, step / total), text=text)

    c1, c2, _ = st.columns([1, 1, 4])
    if state in runs.ACTIVE_STATES and c1.button("Cancel", key=f"cancel_{run.id}"):
        try:
            jobs.cancel(run)
            st.toast("Cancel requested: the job saves a checkpoint and stops.")
        except WorkbenchError as err:
            st.error(str(err))
    if state in ("cancelled", "failed") and c2.button("Resume", key=f"resume_{run.id}"):
        try:
            jobs.resume(run)
            st.rerun()
        except WorkbenchError as err:
            st.error(str(err))


def curves_panel(run: runs.RunFolder) -> None:
    """The run's curves and log; refreshed less often than the progress line, since every refresh
    re-draws three charts in every browser watching (the browsers' largest cost, measured)."""
    if train_ui.has_curves(live_metrics(str(run.root))):
        smoothing = st.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="train_smoothing")
        cols = st.columns(len(train_ui.CURVES))
        figures = live_curves(str(run.root), smoothing)
        for col, figure, (title, _, _) in zip(cols, figures, train_ui.CURVES, strict=True):
            with col:
                if figure["data"]:
                    st.plotly_chart(figure, key=f"curve_{title}")
                else:  # plotly refuses a figure dict without traces
                    st.caption(f"{title}: no values logged yet")
    else:
        st.caption("No metrics yet: curves appear after the first logged steps.")
    with st.expander("Log", expanded=runs.read_status(run).get("state") == "failed"):
        st.code(runs.tail(run.log, 6000) or "(empty)", language=None)


def compare_section(table, models_dir: Path) -> None:
    st.subheader("Compare runs")
    chosen = st.multiselect("Runs to compare", list(table["id"]), key="train_compare")
    if len(chosen) < 2:
        st.caption("Pick two or more runs to overlay their curves and see which settings differ.")
        return
    folders = {run_id: runs.RunFolder(models_dir / run_id) for run_id in chosen}
    metrics = {run_id: runs.read_metrics(folder) for run_id, folder in folders.items()}
    cols = st.columns(len(train_ui.CURVES))
    for col, (title, train_col, val_col) in zip(cols, train_ui.CURVES, strict=True):
        with col:
            st.plotly_chart(train_ui.curve_figure(metrics, title, train_col, val_col, 0.6), key=f"cmp_{title}")
    configs = {run_id: runs.read_config(folder) for run_id, folder in folders.items()}
    scores = {run_id: jobs.best_scores(folder) for run_id, folder in folders.items()}
    st.markdown("Settings that differ, and each run's best scores")
    st.dataframe(train_ui.config_diff(configs, scores))


new_run_form(widgets.current_dataset_root())

st.subheader("Runs")
models_dir = settings.load().models_dir
table = jobs.list_runs(models_dir)
if table.empty:
    st.info(f"No runs yet in {models_dir}. Launch one above.")
    st.stop()
any_active = table["state"].isin(runs.ACTIVE_STATES).any()
st.fragment(runs_table_panel, run_every=TABLE_REFRESH_S if any_active else None)(models_dir)
selected = pick_run(table)
if selected:
    run_state = table.loc[table["id"] == selected, "state"].item()
    refresh = REFRESH_S if run_state in runs.ACTIVE_STATES else None
    folder = runs.RunFolder(models_dir / selected)
    st.fragment(live_panel, run_every=refresh)(folder)
    st.fragment(curves_panel, run_every=CURVES_REFRESH_S if refresh else None)(folder)
compare_section(table, models_dir)
