"""Optuna's plotly figures for a sweep: parallel coordinates and parameter importances (for the page)."""

from __future__ import annotations

import os
from typing import Any

from core.errors import RunError
from core.sweeps import store


def _finished_study(ref: store.SweepFolder | str | os.PathLike, at_least: int) -> Any:
    sweep = store.open_sweep(ref)
    study = store.load_study(sweep)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < at_least:
        raise RunError(f"sweep {sweep.id}: {len(complete)} completed trial(s); this plot needs at least {at_least}")
    return study, sweep


def parallel_coordinates(ref: store.SweepFolder | str | os.PathLike) -> Any:
    """A plotly Figure: one line per completed trial across its parameters to its value."""
    import optuna

    study, sweep = _finished_study(ref, 1)
    return optuna.visualization.plot_parallel_coordinate(study, target_name=sweep.plan.metric)


def param_importances(ref: store.SweepFolder | str | os.PathLike) -> Any:
    """A plotly Figure: how much each parameter explains the metric (Optuna's fANOVA evaluator).

    Needs two completed trials and a parameter that varied among them (RunError otherwise)."""
    import optuna

    study, sweep = _finished_study(ref, 2)
    try:
        return optuna.visualization.plot_param_importances(study, target_name=sweep.plan.metric)
    except (ValueError, RuntimeError) as err:
        raise RunError(f"sweep {sweep.id}: parameter importances are not available yet ({err})") from err
