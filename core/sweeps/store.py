"""A sweep's folder, its Optuna study, and the sweep-level reads and actions (status, cancel, recovery).

::

    <models>/sweeps/<sweep-id>/
      plan.json          the validated plan (core.sweeps.plan), with transform pairs resolved
      sweep.json         {"id", "name", "storage": null | URL, "created_at"}
      study.journal      the Optuna study (JournalStorage, file backend) unless a --storage URL is used
      cancel             present when the sweep was cancelled: workers stop, their running trials end
      locks/trial-<n>.lock   held (flock) by the worker running trial n, so a dead worker is seen at once
      workers/           <pid>.json and <n>.log of workers started in the background

Storage: two worker processes on one machine share ``study.journal`` through Optuna's JournalStorage
with its file backend, which serialises appends with a lock file (Optuna's documented choice for
several processes and one file; SQLite is documented as unsuited to concurrent writers). Workers on
several machines share a database instead (``--storage postgresql://...``, Optuna's RDBStorage) and then
also keep Optuna's heartbeat, so a trial of a dead worker on another machine is failed and retried.
The study is named after the sweep id and keeps the plan in its user attrs, so a worker on another
machine needs only the id and the URL.

Trials: a trial's run is an ordinary run folder under ``<models>`` (journal.json links it to the sweep).
Its user attrs: run, run_path, host, pid, error, stopped ("cancelled" or "interrupted") and retry_of.
A trial that was stopped by a cancel or lost with its worker is failed and replaced by a WAITING copy
(same params, ``retry_of``); replaced and over-budget ("discarded") trials do not count toward the
budget, so a resumed sweep still runs ``trials`` trials in all.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from core import runs, settings
from core.errors import ConfigError, RunError
from core.fsutil import atomic_write_json, read_json
from core.runs import jobs
from core.sweeps.plan import SweepPlan

SWEEPS_FOLDER = "sweeps"
HEARTBEAT_S = 20  # database storages: a worker's trials show it alive this often
GRACE_S = 120  # ... and a trial silent this long is failed and retried
ASK_GRACE_S = 120.0  # a RUNNING trial with no worker recorded this long after it started is lost
STATE_NAMES = {
    "COMPLETE": "completed",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


def _quiet_optuna():
    """optuna, with its info logging off and two warnings that do not apply here silenced: the heartbeat
    is "experimental", and "meant for Study.optimize" (our workers record heartbeats themselves)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module=r"optuna|core\.sweeps")
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


@dataclass(frozen=True)
class SweepFolder:
    root: Path

    @property
    def id(self) -> str:
        return self.root.name

    plan_file = property(lambda self: self.root / "plan.json")
    meta_file = property(lambda self: self.root / "sweep.json")
    journal_file = property(lambda self: self.root / "study.journal")
    cancel_flag = property(lambda self: self.root / "cancel")
    locks = property(lambda self: self.root / "locks")
    workers = property(lambda self: self.root / "workers")
    models_dir = property(lambda self: self.root.parent.parent)

    @cached_property
    def plan(self) -> SweepPlan:
        return SweepPlan.from_dict(read_json(self.plan_file, default=None))

    @property
    def meta(self) -> dict[str, Any]:
        meta = read_json(self.meta_file, default=None)
        return meta if isinstance(meta, dict) else {}

    def trial_lock(self, number: int) -> Path:
        return self.locks / f"trial-{number}.lock"


def sweeps_dir(models_dir: str | os.PathLike | None = None) -> Path:
    return (Path(models_dir) if models_dir else settings.load().models_dir) / SWEEPS_FOLDER


def make_storage(sweep: SweepFolder, url: str | None = None):
    """The study's Optuna storage: the sweep's journal file, or the database at ``url``."""
    optuna = _quiet_optuna()
    url = url or sweep.meta.get("storage")
    if url:
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, failed_trial_callback=requeue
            )
        except Exception as err:  # noqa: BLE001 - SQLAlchemy/driver errors: a bad URL or an unreachable server
            raise ConfigError(
                f"--storage {_redact(url)}: cannot open the study database ({type(err).__name__}: {err})"
            ) from err
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(sweep.journal_file)))


def _redact(url: str) -> str:
    """The URL without its password (it goes into error messages)."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.split(':')[0]}:***@{tail}"


def load_study(sweep: SweepFolder, storage: Any = None, seed: int | None = None):
    optuna = _quiet_optuna()
    plan = sweep.plan
    try:
        return optuna.load_study(
            study_name=sweep.id,
            storage=storage or make_storage(sweep),
            sampler=plan.make_sampler(seed),
            pruner=plan.make_pruner(),
        )
    except KeyError as err:
        raise RunError(f"sweep {sweep.id}: its study is missing from the storage") from err


# ---- making and finding sweeps ------------------------------------------------------------------------


def create_sweep(
    plan: SweepPlan, models_dir: str | os.PathLike | None = None, storage: str | None = None
) -> SweepFolder:
    """A new sweep folder and its study; returns the folder (its name is the sweep id)."""
    import shutil

    optuna = _quiet_optuna()
    # The name as an id prefix: run ids allow ASCII letters, digits, "-" and "_".
    slug = re.sub(r"[^a-z0-9_]+", "-", plan.name.lower()).strip("-_")[:40] or "sweep"
    sweep = SweepFolder(runs.create_run_folder(sweeps_dir(models_dir), prefix=slug).root)
    try:
        atomic_write_json(sweep.plan_file, plan.to_dict())
        meta = {"id": sweep.id, "name": plan.name, "storage": storage, "created_at": time.time()}
        atomic_write_json(sweep.meta_file, meta)
        study = optuna.create_study(study_name=sweep.id, storage=make_storage(sweep, storage), direction=plan.direction)
        study.set_user_attr("plan", plan.to_dict())
        study.set_user_attr("cancelled", False)
    except BaseException:
        shutil.rmtree(sweep.root, ignore_errors=True)  # no half-made sweep (a bad --storage URL)
        raise
    return sweep


def open_sweep(
    ref: SweepFolder | str | os.PathLike, models_dir: str | os.PathLike | None = None, storage: str | None = None
) -> SweepFolder:
    """A sweep by folder or id. With ``storage``, a sweep made on another machine is fetched from it."""
    if isinstance(ref, SweepFolder):
        return ref
    path = Path(ref)
    sweep = SweepFolder(path if path.is_dir() else sweeps_dir(models_dir) / str(ref))
    if sweep.plan_file.is_file():
        if storage and sweep.meta.get("storage") != storage:
            atomic_write_json(sweep.meta_file, {**sweep.meta, "storage": storage})
        return sweep
    if storage:
        return _attach(str(ref), storage, models_dir)
    raise RunError(f"sweep {ref} not found under {sweeps_dir(models_dir)} (give its id or folder, or --storage URL)")


def _attach(sweep_id: str, storage: str, models_dir: str | os.PathLike | None) -> SweepFolder:
    """Make a local folder for a sweep whose study lives in a shared database (another machine made it)."""
    runs.validate_run_id(sweep_id)
    sweep = SweepFolder(sweeps_dir(models_dir) / sweep_id)
    optuna = _quiet_optuna()
    try:
        study = optuna.load_study(study_name=sweep_id, storage=make_storage(sweep, storage))
    except KeyError as err:
        raise RunError(f"sweep {sweep_id}: no such study in {_redact(storage)}") from err
    plan = SweepPlan.from_dict(study.user_attrs.get("plan"))
    sweep.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sweep.plan_file, plan.to_dict())
    atomic_write_json(
        sweep.meta_file, {"id": sweep_id, "name": plan.name, "storage": storage, "created_at": time.time()}
    )
    return sweep


def list_sweeps(models_dir: str | os.PathLike | None = None) -> list[SweepFolder]:
    """Sweeps under the models folder, newest first."""
    parent = sweeps_dir(models_dir)
    found = [SweepFolder(p) for p in parent.iterdir() if (p / "plan.json").is_file()] if parent.is_dir() else []
    return sorted(found, key=lambda s: s.meta.get("created_at") or 0.0, reverse=True)


# ---- cancel and resume ------------------------------------------------------------------------------------


def cancel_requested(sweep: SweepFolder, study: Any = None) -> bool:
    if sweep.cancel_flag.exists():
        return True
    return bool(study is not None and study.user_attrs.get("cancelled"))


def cancel_sweep(sweep: SweepFolder) -> list[str]:
    """Stop the sweep: workers stop asking for trials and its running trials' runs are cancelled.

    Returns the ids of the runs asked to stop. Workers then record those trials as cancelled and queue
    them again, so ``sweep run``/``sweep start`` resumes the sweep where it stopped.
    """
    sweep.cancel_flag.touch()
    study = load_study(sweep)
    study.set_user_attr("cancelled", True)  # workers on other machines see the flag here
    stopped = []
    for trial in study.get_trials(deepcopy=False):
        path = trial.user_attrs.get("run_path")
        if trial.state.name != "RUNNING" or not path or not Path(path, "config.json").is_file():
            continue
        try:
            jobs.cancel(path)
            stopped.append(Path(path).name)
        except RunError:
            pass  # it ended meanwhile
    return stopped


def clear_cancel(sweep: SweepFolder, study: Any = None) -> None:
    """Let a cancelled sweep run again (``sweep run``/``sweep start`` call it)."""
    sweep.cancel_flag.unlink(missing_ok=True)
    study = study or load_study(sweep)
    if study.user_attrs.get("cancelled"):
        study.set_user_attr("cancelled", False)


# ---- the budget, replaced trials and recovery --------------------------------------------------------


def _replaced_numbers(trials: list) -> set[int]:
    return {t.user_attrs["retry_of"] for t in trials if isinstance(t.user_attrs.get("retry_of"), int)}


def counting_trials(trials: list) -> list:
    """Trials that use the budget: not replaced by a retry and not discarded as over budget."""
    replaced = _replaced_numbers(trials)
    return [t for t in trials if t.number not in replaced and not t.user_attrs.get("discarded")]


def requeue(study: Any, trial: Any) -> None:
    """Queue a WAITING copy of ``trial`` (same params; a grid trial keeps its grid point).

    Also Optuna's failed_trial_callback for heartbeat storages: a stale trial is retried the same way.
    """
    optuna = _quiet_optuna()
    kept = {k: v for k, v in trial.system_attrs.items() if k in ("grid_id", "search_space")}
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={"retry_of": trial.number},
            system_attrs=kept,
        )
    )


def take_lock(path: Path, blocking: bool = False) -> int | None:
    """An flock on ``path`` (None when another process holds it, or the file is gone)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def recover_lost_trials(sweep: SweepFolder, study: Any) -> list[int]:
    """Fail and queue again every RUNNING trial whose worker is gone; return their numbers.

    A worker holds ``locks/trial-<n>.lock`` while it runs trial n, so a lock anyone can take means a dead
    worker (flocks die with their process, SIGKILL included). The lost trial's run, if still active, is
    cancelled: its retry starts a new run. Trials of workers on other machines are left to the heartbeat.
    """
    optuna = _quiet_optuna()
    if sweep.meta.get("storage"):
        optuna.storages.fail_stale_trials(study)  # the heartbeat's verdict; calls requeue for each
    host, lost = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get("host")
        if owner not in (None, host):
            continue
        lock = sweep.trial_lock(trial.number)
        if owner is None and not lock.exists():
            started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
            if time.time() - started < ASK_GRACE_S:
                continue  # its worker is between ask() and taking the lock
            fd = None
        else:
            fd = take_lock(lock)
            if fd is None:
                continue  # alive
        try:
            if _fail_lost(study, trial.number):
                lost.append(trial.number)
        finally:
            if fd is not None:
                lock.unlink(missing_ok=True)
                os.close(fd)
    return lost


def _fail_lost(study: Any, number: int) -> bool:
    optuna = _quiet_optuna()
    trial = find_trial(study, number)
    if trial.state != optuna.trial.TrialState.RUNNING:
        return False  # another worker recovered it first
    path = trial.user_attrs.get("run_path")
    if path and Path(path, "config.json").is_file() and jobs.reconcile(path).get("state") in runs.ACTIVE_STATES:
        try:
            jobs.cancel(path)
        except RunError:
            pass
    try:
        optuna.trial.Trial(study, trial._trial_id).set_user_attr("stopped", "interrupted")
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    except (ValueError, RuntimeError):
        return False  # it finished meanwhile (Optuna refuses to change a finished trial)
    requeue(study, find_trial(study, number))
    return True


def find_trial(study: Any, number: int) -> Any:
    for trial in study.get_trials(deepcopy=False):
        if trial.number == number:
            return trial
    raise RunError(f"study {study.study_name}: no trial {number}")


# ---- reading a sweep ------------------------------------------------------------------------------------


def trial_rows(sweep: SweepFolder, study: Any = None) -> list[dict[str, Any]]:
    """One dict per trial (discarded ones left out): number, state, params, value, run, run_path, ..."""
    study = study or load_study(sweep)
    trials = study.get_trials(deepcopy=False)
    replaced = _replaced_numbers(trials)
    plan = sweep.plan
    rows = []
    for t in trials:
        if t.user_attrs.get("discarded"):
            continue
        state = STATE_NAMES.get(t.state.name, t.state.name.lower())
        stopped = t.user_attrs.get("stopped")
        if state == "failed" and (stopped or t.number in replaced):
            state = "cancelled" if stopped == "cancelled" else "interrupted"
        path = t.user_attrs.get("run_path")
        run_state = runs.read_status(runs.RunFolder(path)).get("state") if path and Path(path).is_dir() else None
        end = t.datetime_complete.timestamp() if t.datetime_complete else time.time()
        rows.append(
            {
                "number": t.number,
                "state": state,
                "params": plan.decode_params(t.params),
                "value": t.value if t.state.name == "COMPLETE" else None,
                "run": t.user_attrs.get("run"),
                "run_path": path,
                "run_state": run_state,
                "retry_of": t.user_attrs.get("retry_of"),
                "started": t.datetime_start.timestamp() if t.datetime_start else None,
                "duration": end - t.datetime_start.timestamp() if t.datetime_start else None,
                "error": t.user_attrs.get("error"),
                "last_epoch": max(t.intermediate_values) if t.intermediate_values else None,
            }
        )
    return rows


def sweep_status(sweep: SweepFolder) -> dict[str, Any]:
    """The sweep at a glance: plan, budget, trials, the best trial, workers alive, cancelled or not."""
    study = load_study(sweep)
    rows = trial_rows(sweep, study)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in counting_trials(trials) if t.state.is_finished()]
    done = [r for r in rows if r["state"] == "completed" and r["value"] is not None]
    pick = max if sweep.plan.direction == "maximize" else min
    best = pick(done, key=lambda r: r["value"]) if done else None
    return {
        "id": sweep.id,
        "name": sweep.plan.name,
        "metric": sweep.plan.metric,
        "direction": sweep.plan.direction,
        "sampler": sweep.plan.sampler,
        "budget": sweep.plan.trials,
        "finished": len(finished),
        "cancelled": cancel_requested(sweep, study),
        "storage": sweep.meta.get("storage") and _redact(sweep.meta["storage"]),
        "workers": live_workers(sweep),
        "best": {k: best[k] for k in ("number", "value", "params", "run", "run_path")} if best else None,
        "trials": rows,
    }


# Workers this process started: polling them collects their exit status (no zombies left behind).
_STARTED: dict[int, Any] = {}


def remember_worker(proc: Any) -> None:
    _STARTED[proc.pid] = proc


def live_workers(sweep: SweepFolder) -> list[int]:
    """Pids of this machine's workers started in the background that still run."""
    for pid, proc in list(_STARTED.items()):
        if proc.poll() is not None:
            _STARTED.pop(pid, None)
    alive = []
    for record in sorted(sweep.workers.glob("*.json")) if sweep.workers.is_dir() else []:
        info = read_json(record, default={}) or {}
        if jobs.pid_alive(info.get("pid"), info.get("pid_start")):
            alive.append(int(info["pid"]))
    return alive
