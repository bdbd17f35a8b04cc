"""Pieces of the Experiments page: the experiment-plan form, and the view of one plan (a sweep): its
trials, its best trial, Optuna's plots, cancel and resume.

A plan is core.sweeps' PLAN.json built from widgets: a base training config (a compact form, or the
settings of an existing run), a search space, a sampler, a trial budget and a pruner. Its trials run
as ordinary runs in background workers (``python -m core sweep worker``), so a plan survives reloads
and app restarts; this page only reads the sweep folder. Widget and session keys start with
``experiments_``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app import backbone_ui, train_form, widgets
from app.train_ui import format_duration
from core import runs
from core.errors import ConfigError, RunError, WorkbenchError
from core.specs import transforms
from core.sweeps import figures, plan, store, worker
from core.training.config import LOSSES, TrainConfig

# The sweep view re-draws a table and up to two charts: every 10 s, like the Training page's curves
# (app/train_ui.py measured that browsers, not the server, pay for each re-draw).
REFRESH_S = 10.0
SWEEP_KEY = "experiments_sweep"  # the plan shown; mirrored in the URL as ?sweep=<id>
FLASH_KEY = "experiments_flash"
FROM_FORM = "(the fields below)"
IMAGE_SIZES = ((32, 24), (64, 48), (96, 72), (128, 96), (160, 120), (192, 144), (224, 224), (256, 192), (384, 288))
SAMPLERS = {"tpe": "TPE (learns from earlier trials)", "random": "random", "grid": "grid (every combination)"}
REVIEW_PAGE = "app_pages/review.py"


def size_label(size: Any) -> str:
    return f"{size[0]}×{size[1]}"


# ---- the plan form ------------------------------------------------------------------------------------


def plan_form(data_root: str | None, models_dir: Path) -> None:
    """The new-plan form; the plan is checked by core on every change and "Create and start" launches it."""
    st.subheader("New experiment plan")
    if not data_root:
        st.info("Pick a dataset in the sidebar to plan experiments on it.")
        return
    name = st.text_input("Plan name", value="plan", key="experiments_name", max_chars=100)
    base = base_section(data_root, models_dir)
    if base is None:
        return
    space = space_section()
    c1, c2, c3, c4 = st.columns(4)
    sampler = c1.selectbox("Sampler", list(SAMPLERS), format_func=SAMPLERS.get, key="experiments_sampler")
    trials = c2.number_input(
        "Trials (budget)", min_value=1, max_value=plan.MAX_TRIALS, value=8, step=1, key="experiments_trials"
    )
    pruner = c3.selectbox(
        "Pruner",
        ["median", "none"],
        key="experiments_pruner",
        help="median: stop a trial whose validation F1 is below the median of earlier trials "
        "at the same epoch; it ends as 'pruned'.",
    )
    workers = c4.number_input(
        "Background workers",
        min_value=1,
        max_value=8,
        value=1,
        step=1,
        key="experiments_workers",
        help="Each runs one trial at a time; WORKBENCH_MAX_JOBS still limits training jobs.",
    )
    raw = {"name": name, "base": base, "space": space, "sampler": sampler, "trials": int(trials),
           "pruner": pruner, "metric": "val_f1"}  # fmt: skip
    checked = None
    if not space:
        st.info("Choose at least one thing to vary: a backbone list, transform pairs, losses, sizes or a range.")
    else:
        try:
            checked = plan.SweepPlan.from_dict(raw)
        except WorkbenchError as err:
            widgets.error(err)
    if st.button("Create and start", type="primary", key="experiments_start", disabled=checked is None):
        start_plan(checked, int(workers), models_dir)


def base_section(data_root: str, models_dir: Path) -> dict[str, Any] | None:
    """What every trial shares: a run's settings, or the compact fields (dataset from the sidebar)."""
    st.markdown("**Base: what every trial shares**")
    run_ids = [run.id for run in runs.list_run_folders(models_dir)]
    source = st.selectbox(
        "Start from the settings of a run",
        [FROM_FORM, *run_ids],
        key="experiments_base_run",
        help="A run's whole training config (everything the Training page sets); "
        "the search space below changes only what it varies.",
    )
    if source != FROM_FORM:
        return run_base(models_dir / source)
    st.caption(f"Dataset: {widgets.plain(data_root)}")
    offered = train_form.dataset_tasks(data_root)
    if offered is None:
        return None
    labels = {task.name: task.label for task in offered}
    defaults = TrainConfig(data=data_root)
    c = st.columns(4)
    task = c[0].selectbox("Task", list(labels), format_func=labels.get, key="experiments_task")
    names = backbone_ui.backbone_names()
    model = c[1].selectbox("Backbone", names, index=names.index(defaults.model), key="experiments_model")
    epochs = c[2].number_input("Epochs", min_value=1, value=defaults.epochs, step=1, key="experiments_epochs")
    batch = c[3].number_input(
        "Batch size", min_value=1, value=defaults.batch_size, step=1, key="experiments_batch_size"
    )
    c = st.columns(4)
    pair = c[0].selectbox("Train / eval transforms", pair_names(), key="experiments_pair")
    height = c[1].number_input("Image height", min_value=8, value=defaults.img_hw[0], step=8, key="experiments_h")
    width = c[2].number_input("Image width", min_value=8, value=defaults.img_hw[1], step=8, key="experiments_w")
    pretrained = c[3].checkbox(
        "Pretrained weights", key="experiments_pretrained", help=train_form.FIELD_UI["pretrained"].help
    )
    try:
        train_spec, eval_spec = transforms.resolve_pair(pair, (int(height), int(width)))
    except WorkbenchError as err:
        widgets.error(err)
        return None
    size = [int(height), int(width)] if pair in transforms.PRESETS else list(transforms.output_size(eval_spec))
    return {
        "data": data_root,
        "task": task,
        "model": model,
        "pretrained": pretrained,
        "epochs": int(epochs),
        "batch_size": int(batch),
        "img_size": size,
        "train_spec": train_spec,
        "eval_spec": eval_spec,
    }


def run_base(run_root: Path) -> dict[str, Any] | None:
    try:
        config = runs.read_config(runs.RunFolder(run_root))
        base = TrainConfig.from_dict(config).to_dict()  # an imported or prediction folder is refused, named
    except WorkbenchError as err:
        widgets.error(f"{run_root.name}: {err}")
        return None
    st.caption(
        widgets.plain(
            f"Base: {run_root.name} · {base['model']} · task {base['task']} · {size_label(base['img_size'])} · "
            f"{base['epochs']} epochs · data {base['data']}"
        )
    )
    return base


def pair_names() -> list[str]:
    return [*transforms.PRESETS, *transforms.list_named_pairs()]


def space_section() -> dict[str, Any]:
    """The search space from the widgets: lists are choices, {low, high, log, step} ranges."""
    st.markdown("**Search space: what the trials vary** (leave a field empty to keep the base's value)")
    space: dict[str, Any] = {}
    c1, c2 = st.columns(2)
    space["model"] = c1.multiselect(
        "Backbones", backbone_ui.backbone_names(), key="experiments_space_models", placeholder="type to search the zoo"
    )
    space[plan.SPECS_KEY] = c2.multiselect("Transform pairs", pair_names(), key="experiments_space_pairs")
    c1, c2, c3 = st.columns([1, 1, 1])
    space["loss"] = c1.multiselect("Losses", list(LOSSES), key="experiments_space_losses")
    sizes = c2.multiselect("Image sizes", IMAGE_SIZES, format_func=size_label, key="experiments_space_sizes")
    space["img_size"] = [list(s) for s in sizes]
    if c3.checkbox("Balanced sampling: with and without", key="experiments_space_balanced"):
        space["balanced_sampling"] = [False, True]
    c1, c2, c3 = st.columns(3)
    with c1:
        space["lr"] = range_widgets("lr", "Learning rate (log scale)", 1e-4, 1e-1, log=True)
    with c2:
        space["weight_decay"] = range_widgets("weight_decay", "Weight decay (log scale)", 1e-5, 1e-2, log=True)
    with c3:
        space["epochs"] = range_widgets("epochs", "Epochs", 1, 5, step=1)
    return {key: value for key, value in space.items() if value}


def range_widgets(field: str, label: str, low: float, high: float, log: bool = False, step: int | None = None):
    """A checkbox to vary ``field`` and its low/high (and step for whole numbers); None when not varied."""
    if not st.checkbox(f"Vary: {label}", key=f"experiments_vary_{field}"):
        return None
    number = {"step": step} if step else {"format": "%.6f", "step": low}
    a, b = st.columns(2)
    chosen = {"low": a.number_input("from", value=low, key=f"experiments_{field}_low", **number),
              "high": b.number_input("to", value=high, key=f"experiments_{field}_high", **number)}  # fmt: skip
    if log:
        chosen["log"] = True
    if step:
        chosen["step"] = step
    return chosen


def start_plan(checked: plan.SweepPlan, workers: int, models_dir: Path) -> None:
    try:
        sweep = store.create_sweep(checked, models_dir)
        worker.start_workers(sweep, workers, models_dir)
    except WorkbenchError as err:
        widgets.error(err)
        return
    select_sweep(sweep.id)
    st.success(widgets.plain(f"Started plan {sweep.id}: {checked.trials} trials run in the background."))


# ---- one plan's view -----------------------------------------------------------------------------------


def select_sweep(sweep_id: str) -> None:
    st.session_state[SWEEP_KEY] = sweep_id
    st.query_params["sweep"] = sweep_id


def sweeps_section(models_dir: Path) -> None:
    st.subheader("Plans")
    message = st.session_state.pop(FLASH_KEY, None)
    if message:
        st.success(widgets.plain(message))
    found = store.list_sweeps(models_dir)
    if not found:
        st.info("No experiment plans yet: make one above (or `python -m core sweep create plan.json`).")
        return
    by_id = {sweep.id: sweep for sweep in found}
    ids = list(by_id)
    if st.session_state.get(SWEEP_KEY) not in ids:
        wanted = st.query_params.get("sweep")
        st.session_state[SWEEP_KEY] = wanted if wanted in ids else ids[0]
    chosen = st.selectbox("Plan", ids, key=SWEEP_KEY, format_func=lambda sid: f"{by_id[sid].meta.get('name')} · {sid}")
    st.query_params["sweep"] = chosen
    sweep = by_id[chosen]
    try:
        status = store.sweep_status(sweep)
    except (WorkbenchError, ValueError) as err:  # a damaged plan.json or study
        widgets.error(f"{chosen}: {err}")
        return
    active = is_active(status)
    st.fragment(sweep_panel, run_every=REFRESH_S if active else None)(sweep, status)
    plan_actions(sweep, status, active, models_dir)
    review_links(status)
    plots(sweep, status)


def is_active(status: dict[str, Any]) -> bool:
    """Background workers alive here, or a trial whose run still trains (a worker in a terminal, or on
    another machine). A trial left running by a killed worker whose run has ended is not: Resume
    recovers it."""
    running = any(t["state"] == "running" and t["run_state"] in runs.ACTIVE_STATES for t in status["trials"])
    return bool(status["workers"]) or running


def _signature(status: dict[str, Any]) -> tuple:
    return is_active(status), tuple((t["number"], t["state"]) for t in status["trials"])


def sweep_panel(sweep: store.SweepFolder, page_status: dict[str, Any]) -> None:
    """Headline, progress and trials table. The fragment's timed reruns read the study again; when a
    trial changes state the whole page reruns, so the plots, the best trial and the buttons follow."""
    drawn_key, seen_key = f"experiments_drawn_{sweep.id}", f"experiments_seen_{sweep.id}"
    timed_rerun = st.session_state.get(drawn_key) is page_status
    st.session_state[drawn_key] = page_status
    status = store.sweep_status(sweep) if timed_rerun else page_status
    previous = st.session_state.get(seen_key)
    st.session_state[seen_key] = _signature(status)
    if timed_rerun and previous is not None and previous != _signature(status):
        st.rerun()
    st.markdown(widgets.plain(headline(status)))
    budget = max(1, status["budget"])
    st.progress(min(1.0, status["finished"] / budget), text=f"{status['finished']} / {status['budget']} trials")
    if status["trials"]:
        st.dataframe(
            trials_table(status["trials"]),
            hide_index=True,
            column_config={"val F1": st.column_config.NumberColumn(format="%.4f")},
        )


def plan_state(status: dict[str, Any]) -> str:
    if is_active(status):
        return "running"
    if status["finished"] >= status["budget"]:
        return "done"
    return "cancelled" if status["cancelled"] else "stopped: resume to finish"


def headline(status: dict[str, Any]) -> str:
    best = status["best"]
    text = f"{status['name']} — {plan_state(status)} · {status['sampler']} sampler"
    if best:
        text += f" · best {status['metric']} {best['value']:.4f} (trial {best['number']}, run {best['run']})"
    if status["workers"]:
        text += f" · {len(status['workers'])} worker(s) running"
    return text


def _cell(value: Any) -> str:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return size_label(value)  # an image size
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def trials_table(trials: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per trial: number, state (pruned shown as pruned), its parameters, val F1, run, duration."""
    params = sorted({key for t in trials for key in t["params"]})
    rows = []
    for t in trials:
        row = {"trial": t["number"], "state": t["state"]}
        row.update({key: _cell(t["params"].get(key)) for key in params})
        row.update(
            {
                "val F1": t["value"],
                "epochs done": None if t["last_epoch"] is None else int(t["last_epoch"]),
                "run": t["run"] or "",
                "duration": format_duration(t["duration"]),
                "error": t["error"] or "",
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def plan_actions(sweep: store.SweepFolder, status: dict[str, Any], active: bool, models_dir: Path) -> None:
    if active:
        if st.button("Cancel plan", key="experiments_cancel", help="Stops the workers and cancels running trials."):
            try:
                stopped = store.cancel_sweep(sweep)
            except WorkbenchError as err:
                widgets.error(err)
                return
            st.session_state[FLASH_KEY] = (
                f"Cancelled {sweep.id}"
                + (f": stopping run {', '.join(stopped)}." if stopped else ".")
                + " Resume finishes the budget; a cancelled trial runs again."
            )
            st.rerun()
    elif status["finished"] < status["budget"]:
        if st.button("Resume", key="experiments_resume", help="Starts a background worker to finish the budget."):
            try:
                worker.start_workers(sweep, 1, models_dir)
            except WorkbenchError as err:
                widgets.error(err)
                return
            st.session_state[FLASH_KEY] = f"Resumed {sweep.id}."
            st.rerun()


def review_links(status: dict[str, Any]) -> None:
    """Buttons that open a trial's run on the Review page (which takes its run from ?run=)."""
    best = status["best"]
    if best and best["run"]:
        label = f"Open the best trial (trial {best['number']}, run {best['run']}) in Review"
        if st.button(label, key="experiments_open_best", type="primary"):
            st.switch_page(REVIEW_PAGE, query_params={"run": best["run"]})
    with_runs = {t["number"]: t for t in status["trials"] if t["run"]}
    if not with_runs:
        return
    c1, c2 = st.columns([3, 1])
    number = c1.selectbox(
        "Trial",
        list(with_runs),
        key="experiments_trial",
        label_visibility="collapsed",
        format_func=lambda n: f"trial {n} · {with_runs[n]['state']} · run {with_runs[n]['run']}",
    )
    if c2.button("Open in Review", key="experiments_open_trial"):
        st.switch_page(REVIEW_PAGE, query_params={"run": with_runs[number]["run"]})


# ---- Optuna's plots --------------------------------------------------------------------------------------


def escape_figure(figure: dict[str, Any]) -> dict[str, Any]:
    """A plotly figure dict with data strings escaped: choice values (saved pair names) become axis tick
    labels, and plotly reads some HTML there. Parameter names are TrainConfig fields: left as they are."""
    for trace in figure.get("data", []):
        for dim in trace.get("dimensions") or []:
            if "ticktext" in dim:
                dim["ticktext"] = widgets.plot_labels(dim["ticktext"])
            if "label" in dim:
                dim["label"] = widgets.plot_label(dim["label"])
    return figure


@st.cache_data(max_entries=16, show_spinner=False)
def plot_dicts(sweep_root: str, completed: int) -> dict[str, Any]:
    """Both plots as figure dicts, or the reason one cannot be drawn (cached per completed-trial count)."""
    out: dict[str, Any] = {}
    for name, make in (("parallel", figures.parallel_coordinates), ("importance", figures.param_importances)):
        try:
            out[name] = escape_figure(make(Path(sweep_root)).to_dict())
        except (RunError, ConfigError) as err:
            out[name] = str(err)
    return out


def plots(sweep: store.SweepFolder, status: dict[str, Any]) -> None:
    completed = sum(t["state"] == "completed" for t in status["trials"])
    if not completed:
        st.caption("The parallel-coordinates and parameter-importance plots appear once a trial has completed.")
        return
    drawn = plot_dicts(str(sweep.root), completed)
    c1, c2 = st.columns(2)
    with c1:
        if isinstance(drawn["parallel"], dict):
            st.plotly_chart(drawn["parallel"], key="experiments_parallel")
    with c2:
        if completed < 2:
            st.caption("Parameter importances need at least two completed trials.")
        elif isinstance(drawn["importance"], dict):
            st.plotly_chart(drawn["importance"], key="experiments_importance")
        else:
            st.caption(widgets.plain(drawn["importance"]))
