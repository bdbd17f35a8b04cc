"""Pieces of the Training page that are plain data work: curves, the config diff, ETA and formatting.

No Streamlit here, so they can be tested directly; the page lays them out.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

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
    runs_metrics: dict[str, pd.DataFrame], title: str, train_col: str, val_col: str, smoothing: float = 0.0,
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """One chart against iterations: train (smoothed; raw shown faintly for one run) and val curves.

    One run: train and val in two colours. Several runs: one colour per run, train solid, val dashed.
    Each line is thinned to ``max_points`` after smoothing, so the smoothed shape is the true one.
    """
    fig = go.Figure()
    several = len(runs_metrics) > 1
    for i, (name, metrics) in enumerate(runs_metrics.items()):
        prefix = f"{name} · " if several else ""
        run_colour = _PALETTE[i % len(_PALETTE)]
        train_colour, val_colour = (run_colour, run_colour) if several else (_PALETTE[0], _PALETTE[1])
        train = series(metrics, train_col)
        if not train.empty:
            train = train.assign(smoothed=smooth(train["value"], smoothing))
            train = thin(train, max_points)
            if smoothing > 0 and not several:
                fig.add_trace(
                    go.Scatter(x=train["step"], y=train["value"], mode="lines", name="train (raw)", opacity=0.25,
                               line={"width": 1, "color": train_colour}, showlegend=False)
                )  # fmt: skip
            fig.add_trace(
                go.Scatter(x=train["step"], y=train["smoothed"], mode="lines", name=f"{prefix}train",
                           line={"color": train_colour})
            )  # fmt: skip
        val = thin(series(metrics, val_col), max_points)
        if not val.empty:
            fig.add_trace(
                go.Scatter(x=val["step"], y=val["value"], mode="lines+markers", name=f"{prefix}val",
                           line={"color": val_colour, "dash": "dash" if several else "solid"})
            )  # fmt: skip
    fig.update_layout(
        title=title, height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title="iteration", legend={"orientation": "h", "y": -0.25},
    )  # fmt: skip
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
            rows[label] = {run: "" if s.get(score_name) is None else f"{s[score_name]:.4f}" for run, s in scores.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(configs))


def runs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs table as shown: name, backbone, task, state, progress, best val macro F1, duration, started."""
    shown = pd.DataFrame(
        {
            "name": frame["name"],
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
