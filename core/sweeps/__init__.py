"""Sweeps: experiment plans run as many ordinary runs by Optuna, with pruning and resumable studies.

Modules: ``plan`` (PLAN.json: base TrainConfig, search space, sampler, budget, pruner, metric),
``store`` (the sweep folder and its study; status, cancel, recovery of trials whose worker died),
``worker`` (ask a trial, launch its run through the job queue, report epochs, prune, tell; background
workers), ``figures`` (Optuna's plotly figures).
"""

from core._exports import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SweepPlan": "plan",
        "load_plan": "plan",
        "create_sweep": "store",
        "open_sweep": "store",
        "list_sweeps": "store",
        "sweep_status": "store",
        "cancel_sweep": "store",
        "trial_rows": "store",
        "run_worker": "worker",
        "start_workers": "worker",
        "parallel_coordinates": "figures",
        "param_importances": "figures",
    },
)
