"""Pieces of the Training page: the runs table, the live panel of one run, its curves, and the
comparison of several; plus the plain data work behind them (curves, the config diff, ETA and
formatting), which tests call directly. The new-run form is in app/train_form.py.

Everything shown is read from run folders (core.runs.folder / core.runs.jobs), so jobs survive
reloads and app restarts. Session-state and widget keys start with ``train_``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from app import journal_ui, widgets
from core import runs
from core.errors import WorkbenchError
from core.runs import jobs

# How often the page re-draws while a job runs. Every re-draw costs the browser far more than the
# server. Measured with 4 headless Chromium tabs watching one job, per tab: ~0.28 of a core with
# these at 2/5/5 s, ~0.18 at 3/15/10 s, ~0.02 with nothing refreshing; the server stays under 0.05
# of a core per session. So only the progress line is quick.
REFRESH_S = 3.0  # progress line and ETA of the selected run while it is queued or running
TABLE_REFRESH_S = 15.0  # runs table while any run is queued or running
CURVES_REFRESH_S = 10.0  # curves and log of the selected run while it is active
LIVE_SHARE_S = 1.0  # how long sessions share one read of a running job's metrics and charts
RUN_KEY = "train_run"  # the selected run; mirrored in the URL as ?run=<id>
TABLE_DRAWN_KEY = "train_table_drawn"  # the page's read of the runs table the fragment last drew

# Curves drawn for a run: (title, train column, val column). Train macro F1 is not logged per step.
CURVES = (
    ("Loss", "train_loss", "val_loss"),
    ("Accuracy", "train_acc", "val_acc"),
    ("Macro F1", "train_f1", "val_f1"),
)
_PALETTE = px.colors.qualitative.Plotly
MAX_POINTS = 600  # per line: a chart is ~300 pixels wide
# Config fields that never make a difference worth showing between runs.
_DIFF_IGNORED = {"kind"}


def smooth(values: pd.Series, weight: float) -> pd.Series:
    """TensorBoard-style exponential smoothing (``weight`` 0 = raw, 0.99 = very smooth)."""
    if weight <= 0 or values.empty:
        return values
    return values.ewm(alpha=1.0 - min(weight, 0.999), adjust=True).mean()


def series(metrics: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows of ``metrics`` that carry ``column``, as (step, value) sorted by step."""
    if metrics.empty or column not in metrics or "step" not in metrics:
        return pd.DataFrame({"step": [], "value": []})
    part = metrics[["step", column]].copy()
    part[column] = pd.to_numeric(part[column], errors="coerce")
    part = part.dropna().sort_values("step")
    return part.rename(columns={column: "value"}).reset_index(drop=True)


def thin(frame: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """At most ``max_points`` evenly spaced rows, always keeping the last (the newest step).

    A long job logs tens of thousands of steps; a 300-pixel chart cannot show more than a few
    hundred, and every point is sent to every browser watching at each refresh.
    """
    if len(frame) <= max_points:
        return frame
    keep = sorted({*range(0, len(frame), -(-len(frame) // max_points)), len(frame) - 1})
    return frame.iloc[keep]


def curve_figure(
    runs_metrics: dict[str, pd.DataFrame],
    title: str,
    train_col: str,
    val_col: str,
    smoothing: float = 0.0,
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """One chart against iterations: train (smoothed; raw shown faintly for one run) and val curves.

    One run: train and val in two colours. Several runs: one colour per run, train solid, val dashed.
    Each line is thinned to ``max_points`` after smoothing, so the smoothed shape is the true one.
    """
    fig = go.Figure()
    several = len(runs_metrics) > 1
    for i, (name, metrics) in enumerate(runs_metrics.items()):
        prefix = f"{widgets.plot_label(name)} · " if several else ""
        run_colour = _PALETTE[i % len(_PALETTE)]
        train_colour, val_colour = (run_colour, run_colour) if several else (_PALETTE[0], _PALETTE[1])
        train = series(metrics, train_col)
        if not train.empty:
            train = train.assign(smoothed=smooth(train["value"], smoothing))
            train = thin(train, max_points)
            if smoothing > 0 and not several:
                fig.add_trace(
                    go.Scatter(
                        x=train["step"],
                        y=train["value"],
                        mode="lines",
                        name="train (raw)",
                        opacity=0.25,
                        line={"width": 1, "color": train_colour},
                        showlegend=False,
                    )
                )
            fig.add_trace(
                go.Scatter(
                    x=train["step"],
                    y=train["smoothed"],
                    mode="lines",
                    name=f"{prefix}train",
                    line={"color": train_colour},
                )
            )
        val = thin(series(metrics, val_col), max_points)
        if not val.empty:
            fig.add_trace(
                go.Scatter(
                    x=val["step"],
                    y=val["value"],
                    mode="lines+markers",
                    name=f"{prefix}val",
                    line={"color": val_colour, "dash": "dash" if several else "solid"},
                )
            )
    fig.update_layout(
        title=title,
        height=300,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title="iteration",
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def has_curves(metrics: pd.DataFrame) -> bool:
    return any(not series(metrics, c).empty for _, train, val in CURVES for c in (train, val))


def eta_seconds(status: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds left, from the average time per step so far (None before the first steps)."""
    step, total, started = status.get("step"), status.get("total_steps"), status.get("started_at")
    if not (step and total and started) or step >= total:
        return None
    elapsed = (now or time.time()) - started
    return elapsed / step * (total - step) if elapsed > 0 else None


def format_duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _cell(value: Any) -> str:
    """Config values as short comparable text (lists and dicts as compact JSON)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "" if value is None else str(value)


def config_diff(configs: dict[str, dict[str, Any]], scores: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """A table (field rows × run columns) of only the config fields whose values differ between the runs,
    followed by each run's best scores."""
    fields = sorted({k for cfg in configs.values() for k in cfg} - _DIFF_IGNORED)
    rows = {}
    for field in fields:
        values = {run: _cell(cfg.get(field)) for run, cfg in configs.items()}
        if len(set(values.values())) > 1:
            rows[field] = values
    for score_name, label in (("val_f1", "best val macro F1"), ("val_acc", "best val accuracy")):
        if scores:
            rows[label] = {
                run: "" if s.get(score_name) is None else f"{s[score_name]:.4f}" for run, s in scores.items()
            }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(configs))


def runs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs table as shown: star, name, tags, backbone, task, state, progress, best val macro F1,
    duration, started (name and tags from the run journal)."""
    shown = pd.DataFrame(
        {
            "★": ["★" if s else "" for s in frame["starred"]],
            "name": frame["name"],
            "tags": [journal_ui.tags_text(t) for t in frame["tags"]],
            "backbone": frame["model"],
            "task": frame["task"],
            "state": frame["state"],
            "progress": frame["progress"].astype(float),
            "best val macro F1": pd.to_numeric(frame["best_val_f1"], errors="coerce"),
            "duration": [format_duration(d) for d in frame["duration"]],
            "started": frame["started"],
        }
    )
    return shown.reset_index(drop=True)


# ---- the runs, one run live, and comparing ---------------------------------------------------------------


def runs_section(table: pd.DataFrame, models_dir: Path) -> pd.DataFrame:
    """The journal filters, the runs table, the run picker, and the selected run's live panel, journal
    and curves. The table and live parts are fragments that re-draw themselves only while something is
    queued or running. Returns the runs the filters keep (for the comparison)."""
    journal_ui.show_flash()
    filters = journal_ui.filter_controls(table)
    shown = journal_ui.apply_filters(table, filters)
    any_active = shown["state"].isin(runs.ACTIVE_STATES).any()
    st.fragment(runs_table_panel, run_every=TABLE_REFRESH_S if any_active else None)(models_dir, table, filters)
    selected = pick_run(shown)
    if not selected:
        st.info("No run matches these filters.")
        return shown
    run_state = shown.loc[shown["id"] == selected, "state"].item()
    refresh = REFRESH_S if run_state in runs.ACTIVE_STATES else None
    folder = runs.RunFolder(models_dir / selected)
    st.fragment(live_panel, run_every=refresh)(folder)
    journal_ui.journal_panel(folder, models_dir)
    st.fragment(curves_panel, run_every=CURVES_REFRESH_S if refresh else None)(folder)
    return shown


def runs_table_panel(models_dir: Path, page_read: pd.DataFrame, filters: dict[str, Any]) -> None:
    """The runs table. A full run draws the table the page has just read; the fragment's timed reruns
    come with the same arguments, and read the folders again so the table does not go stale."""
    timed_rerun = st.session_state.get(TABLE_DRAWN_KEY) is page_read
    st.session_state[TABLE_DRAWN_KEY] = page_read
    table = jobs.list_runs(models_dir, include_archived=True) if timed_rerun else page_read
    st.dataframe(
        runs_table(journal_ui.apply_filters(table, filters)),
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "best val macro F1": st.column_config.NumberColumn(format="%.3f"),
            "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        },
    )


def pick_run(table: pd.DataFrame) -> str | None:
    """The selected run id, kept in session state and the URL (?run=) so a reload keeps it."""
    ids = list(table["id"])
    if not ids:
        return None
    if st.session_state.get(RUN_KEY) not in ids:
        wanted = st.query_params.get("run")
        st.session_state[RUN_KEY] = wanted if wanted in ids else ids[0]
    labels = {row["id"]: journal_ui.run_label(row) for row in table.to_dict("records")}
    run_id = st.selectbox("Selected run", ids, key=RUN_KEY, format_func=lambda rid: labels.get(rid, rid))
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
    return [curve_figure(metrics, *curve, smoothing).to_dict() for curve in CURVES]


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
    st.markdown(
        f"**{widgets.plain(run.id)}** — {state}"
        + (f" · {widgets.plain(message)}" if message and message != state else "")
    )
    if state == "failed" and status.get("error"):
        widgets.error(status["error"])
    step, total = status.get("step") or 0, status.get("total_steps") or 0
    if state == "completed":
        step = total  # heartbeats are throttled: the last one can predate the final step
    if total:
        eta = eta_seconds(status) if state in runs.ACTIVE_STATES else None
        text = f"step {step} / {total}" + (f" · ETA {format_duration(eta)}" if eta is not None else "")
        st.progress(1.0 if state == "completed" else min(1.0, step / total), text=text)

    c1, c2, _ = st.columns([1, 1, 4])
    if state in runs.ACTIVE_STATES and c1.button("Cancel", key=f"train_cancel_{run.id}"):
        try:
            jobs.cancel(run)
            st.toast("Cancel requested: the job saves a checkpoint and stops.")
        except WorkbenchError as err:
            widgets.error(err)
    if state in ("cancelled", "failed") and c2.button("Resume", key=f"train_resume_{run.id}"):
        try:
            jobs.resume(run)
            st.rerun()
        except WorkbenchError as err:
            widgets.error(err)


def _chart_key(prefix: str, title: str) -> str:
    return f"{prefix}_{title.lower().replace(' ', '_')}"


def curves_panel(run: runs.RunFolder) -> None:
    """The run's curves and log; refreshed less often than the progress line, since every refresh
    re-draws three charts in every browser watching (the browsers' largest cost, measured)."""
    if has_curves(live_metrics(str(run.root))):
        smoothing = st.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="train_smoothing")
        cols = st.columns(len(CURVES))
        figures = live_curves(str(run.root), smoothing)
        for col, figure, (title, _, _) in zip(cols, figures, CURVES, strict=True):
            with col:
                if figure["data"]:
                    st.plotly_chart(figure, key=_chart_key("train_curve", title))
                else:  # plotly refuses a figure dict without traces
                    st.caption(f"{title}: no values logged yet")
    else:
        st.caption("No metrics yet: curves appear after the first logged steps.")
    with st.expander("Log", expanded=runs.read_status(run).get("state") == "failed"):
        st.code(runs.tail(run.log, 6000) or "(empty)", language=None)


def compare_section(table: pd.DataFrame, models_dir: Path) -> None:
    st.subheader("Compare runs")
    chosen = st.multiselect("Runs to compare", list(table["id"]), key="train_compare")
    if len(chosen) < 2:
        st.caption("Pick two or more runs to overlay their curves and see which settings differ.")
        return
    folders = {run_id: runs.RunFolder(models_dir / run_id) for run_id in chosen}
    metrics = {run_id: runs.read_metrics(folder) for run_id, folder in folders.items()}
    cols = st.columns(len(CURVES))
    for col, (title, train_col, val_col) in zip(cols, CURVES, strict=True):
        with col:
            st.plotly_chart(
                curve_figure(metrics, title, train_col, val_col, 0.6), key=_chart_key("train_compare", title)
            )
    configs = {run_id: runs.read_config(folder) for run_id, folder in folders.items()}
    scores = {run_id: jobs.best_scores(folder) for run_id, folder in folders.items()}
    st.markdown("Settings that differ, and each run's best scores")
    st.dataframe(config_diff(configs, scores))
