"""A sweep worker: ask Optuna for a trial, train it as an ordinary run, report its epochs, prune or tell.

``run_worker(sweep)`` loops until the budget is used or the sweep is cancelled. Each trial:

1. ``study.ask()`` (a WAITING retry comes first); over budget (another worker took the last slot) the
   trial is discarded at once. The worker takes ``locks/trial-<n>.lock`` for the trial's life.
2. The plan's parameters are drawn and merged into the base config; the run is launched through the
   job machinery (``jobs.launch_training``: a run folder under the models folder, the job queue and
   ``WORKBENCH_MAX_JOBS`` apply) and linked to the sweep in its journal.json.
3. The training loop is not changed: the worker polls the run's metrics.jsonl for new epoch lines,
   reports the plan's metric per epoch (``trial.report(value, epoch)``) and asks ``trial.should_prune()``.
   A pruned trial's run is cancelled, waited for, and given the final state ``pruned``.
4. The value told to Optuna is the run's best epoch value of the metric.

Random and TPE samplers are re-seeded per trial from (plan seed, trial number), so two workers never
draw the same sequence and a sweep is reproducible; the grid sampler gives trial n grid point n.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from core import runs, settings
from core.errors import ConfigError, RunError, WorkbenchError
from core.fsutil import atomic_write_json
from core.runs import jobs, journal
from core.sweeps import store
from core.sweeps.store import SweepFolder

POLL_S = 1.0
END_WAIT_S = 120.0  # how long a cancelled trial run may take to stop before its state is written anyway


def _optuna():
    return store._quiet_optuna()


def run_worker(
    ref: SweepFolder | str | os.PathLike,
    models_dir: str | os.PathLike | None = None,
    storage: str | None = None,
    poll_s: float = POLL_S,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Work on the sweep until its budget is used or it is cancelled; return what this worker did."""
    sweep = store.open_sweep(ref, models_dir, storage)
    study = store.load_study(sweep)
    done: list[dict[str, Any]] = []
    while True:
        if store.cancel_requested(sweep, study):
            reason = "cancelled"
            break
        for number in store.recover_lost_trials(sweep, study):
            log(f"trial {number}: its worker is gone; queued again")
        trial = ask_within_budget(sweep, study)
        if trial is None:
            reason = "budget used"
            break
        outcome = run_trial(sweep, study, trial, poll_s, log)
        done.append(outcome)
        log(
            f"trial {outcome['number']}: {outcome['state']}"
            + (f" ({outcome['value']:.4f})" if outcome.get("value") is not None else "")
        )
    log(f"worker stops: {reason}")
    return {"sweep": sweep.id, "trials": done, "stopped": reason}


def ask_within_budget(sweep: SweepFolder, study: Any) -> Any | None:
    """A trial to run, or None when the budget is used (then any trial asked meanwhile is discarded)."""
    optuna = _optuna()
    budget = sweep.plan.trials
    counting = store.counting_trials(study.get_trials(deepcopy=False))
    waiting = any(t.state == optuna.trial.TrialState.WAITING for t in counting)
    if len(counting) >= budget and not waiting:
        return None
    trial = study.ask()
    earlier = [t for t in store.counting_trials(study.get_trials(deepcopy=False)) if t.number < trial.number]
    if len(earlier) >= budget:  # another worker asked for the last trial first
        trial.set_user_attr("discarded", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    if sweep.plan.sampler != "grid":
        study.sampler = sweep.plan.make_sampler(seed=sweep.plan.seed * 100_003 + trial.number)
    return trial


def _hold_trial_lock(sweep: SweepFolder, number: int) -> int:
    """Create ``locks/trial-<n>.lock`` already locked (a temp file locked, then renamed into place)."""
    import fcntl
    import tempfile

    sweep.locks.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".trial-{number}.", dir=sweep.locks)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.replace(tmp, sweep.trial_lock(number))
    return fd


def run_trial(
    sweep: SweepFolder, study: Any, trial: Any, poll_s: float = POLL_S, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run one asked trial to its end; return {number, state, value, run, params}."""
    optuna = _optuna()
    lock_fd = _hold_trial_lock(sweep, trial.number)
    outcome: dict[str, Any] = {"number": trial.number, "run": None, "value": None}
    try:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        params = sweep.plan.suggest(trial)
        outcome["params"] = params
        try:
            run = _launch(sweep, sweep.plan.trial_config(params), trial.number)
        except WorkbenchError as err:  # a combination of choices TrainConfig refuses, or no job could start
            trial.set_user_attr("error", str(err))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return {**outcome, "state": "failed", "error": str(err)}
        trial.set_user_attr("run", run.id)
        trial.set_user_attr("run_path", str(run.root))
        outcome["run"] = run.id
        log(f"trial {trial.number}: {params} -> run {run.id}")
        try:
            return {**outcome, **follow_run(sweep, study, trial, run, poll_s)}
        except KeyboardInterrupt:
            _stop_for_cancel(study, trial, run)
            raise
    finally:
        sweep.trial_lock(trial.number).unlink(missing_ok=True)
        os.close(lock_fd)


def _launch(sweep: SweepFolder, config: Any, number: int) -> runs.RunFolder:
    name = f"{sweep.id}-t{number:03d}"
    if (sweep.models_dir / name).exists():  # a retry of the same number cannot happen; a stray folder can
        name = f"{name}-{os.urandom(2).hex()}"
    run = jobs.launch_training(config, sweep.models_dir, name=name)
    journal.link_to_sweep(run, sweep.id, number)
    return run


def epoch_values(run: runs.RunFolder, metric: str) -> dict[int, float]:
    """{epoch: metric value} from the run's epoch lines in metrics.jsonl (NaN kept: it is a verdict too)."""
    metrics = runs.read_metrics(run)
    if metric not in metrics or "epoch" not in metrics:
        return {}
    # Epoch lines are those with validation results; a diverged run's NaN loss stays (pruners prune NaN).
    val_columns = [c for c in ("val_f1", "val_acc", "val_loss") if c in metrics]
    rows = metrics.loc[metrics[val_columns].notna().any(axis=1), ["epoch", metric]]
    values = {}
    for epoch, value in zip(rows["epoch"], pd.to_numeric(rows[metric], errors="coerce"), strict=True):
        values[int(epoch)] = float(value)
    return values


def follow_run(
    sweep: SweepFolder, study: Any, trial: Any, run: runs.RunFolder, poll_s: float = POLL_S
) -> dict[str, Any]:
    """Poll the trial's run until it ends: report epochs, prune, or stop with the sweep."""
    metric, reported, beat = sweep.plan.metric, {}, _Heartbeat(sweep, study, trial)
    while True:
        status = jobs.reconcile(run)
        finished = status.get("state") in runs.FINAL_STATES
        for epoch, value in sorted(epoch_values(run, metric).items()):
            if epoch in reported:
                continue
            trial.report(value, epoch)
            reported[epoch] = value
            if not finished and trial.should_prune():
                return _prune(study, trial, run, epoch, reported)
        if finished:
            break
        if store.cancel_requested(sweep, study):
            return _stop_for_cancel(study, trial, run)
        beat()
        time.sleep(poll_s)
    state = status["state"]
    if state == "cancelled" and store.cancel_requested(sweep, study):
        return _stop_for_cancel(study, trial, run)
    return _tell_final(study, trial, state, status.get("error"), reported)


def _best(direction: str, values: dict[int, float]) -> float | None:
    finite = [v for v in values.values() if v == v]
    if not finite:
        return None
    return max(finite) if direction == "maximize" else min(finite)


def _tell_final(study: Any, trial: Any, state: str, error: str | None, reported: dict[int, float]) -> dict[str, Any]:
    optuna = _optuna()
    value = _best(study.direction.name.lower(), reported)
    if state == "completed" and value is not None:
        study.tell(trial, value)
        return {"state": "completed", "value": value}
    why = error or (f"the run ended {state}" if state != "completed" else "the run logged no validation epoch")
    trial.set_user_attr("error", why)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return {"state": "failed", "error": why}


def wait_until_ended(run: runs.RunFolder, timeout: float = END_WAIT_S) -> dict[str, Any]:
    """The run's status once its job has written a final state and its process has exited."""
    deadline = time.monotonic() + timeout
    while True:
        status = jobs.reconcile(run)
        ended = status.get("state") in runs.FINAL_STATES and not jobs.pid_alive(
            status.get("pid"), status.get("pid_start")
        )
        if ended or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def _cancel_run(run: runs.RunFolder) -> dict[str, Any]:
    try:
        jobs.cancel(run)
    except RunError:
        pass  # it ended meanwhile
    return wait_until_ended(run)


def _prune(study: Any, trial: Any, run: runs.RunFolder, epoch: int, reported: dict[int, float]) -> dict[str, Any]:
    optuna = _optuna()
    status = _cancel_run(run)
    if status.get("state") != "cancelled":  # it completed (or failed) before the cancel landed
        return _tell_final(study, trial, status.get("state"), status.get("error"), reported)
    runs.write_status(run, state="pruned", message=f"pruned by its sweep after epoch {epoch}")
    runs.append_log(run, f"[sweep] pruned after epoch {epoch}")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return {"state": "pruned", "epoch": epoch}


def _stop_for_cancel(study: Any, trial: Any, run: runs.RunFolder) -> dict[str, Any]:
    """The sweep was cancelled: stop the run, fail the trial as cancelled and queue it again."""
    optuna = _optuna()
    _cancel_run(run)
    try:
        trial.set_user_attr("stopped", "cancelled")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    except (ValueError, RuntimeError):
        return {"state": "cancelled"}  # recovered by another worker meanwhile
    store.requeue(study, store.find_trial(study, trial.number))
    return {"state": "cancelled"}


class _Heartbeat:
    """Database storages: record the trial's heartbeat (Optuna fails trials whose heartbeat stops)."""

    def __init__(self, sweep: SweepFolder, study: Any, trial: Any):
        self.storage = getattr(study, "_storage", None) if sweep.meta.get("storage") else None
        self.trial_id = trial._trial_id
        self.last = 0.0

    def __call__(self) -> None:
        if self.storage is None or time.monotonic() - self.last < store.HEARTBEAT_S / 2:
            return
        self.last = time.monotonic()
        self.storage.record_heartbeat(self.trial_id)


# ---- background workers -------------------------------------------------------------------------------


def start_workers(
    ref: SweepFolder | str | os.PathLike, count: int = 1, models_dir: str | os.PathLike | None = None
) -> list[int]:
    """Start ``count`` detached ``python -m core sweep worker`` processes (output in workers/); return pids.

    Clears a cancel first, so this also resumes a cancelled or interrupted sweep.
    """
    if count < 1:
        raise ConfigError(f"--workers: at least 1, got {count}")
    sweep = store.open_sweep(ref, models_dir)
    store.clear_cancel(sweep)
    sweep.workers.mkdir(parents=True, exist_ok=True)
    pids = []
    for _ in range(count):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log_path = sweep.workers / f"worker-{stamp}-{os.urandom(2).hex()}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "core", "sweep", "worker", str(sweep.root)],
                cwd=settings.REPO_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        store.remember_worker(proc)
        atomic_write_json(
            sweep.workers / f"{proc.pid}.json",
            {
                "pid": proc.pid,
                "pid_start": jobs.process_start_token(proc.pid),
                "log": str(log_path),
                "started_at": time.time(),
            },
        )
        pids.append(proc.pid)
    return pids


def worker_logs(sweep: SweepFolder) -> list[Path]:
    return sorted(sweep.workers.glob("worker-*.log")) if sweep.workers.is_dir() else []
