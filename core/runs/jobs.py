"""Background jobs: launch, run, list, cancel, resume and reconcile them.

A job is one process that owns one run folder (see core.runs.folder for the format). The folder is the only
source of truth, so the app can be reloaded or restarted while a job runs.

States (status.json ``state``)::

    queued ──(slot free)──> running ──> completed
       │                       ├──────> cancelled   (cancel flag or SIGTERM; last checkpoint kept)
       └──(cancel)──> cancelled └─────> failed      (an exception, or the process vanished)

How the pieces fit:

- ``launch(run, argv)`` writes ``queued`` and starts ``python -m core <argv…>`` detached (own session,
  output appended to job.log). The child's command calls ``run_job(run, work)``. A run with several
  processes (``nproc``) starts ``python -m torch.distributed.run … -m core train --run-dir R`` instead: torchrun
  keeps the run lock launch() hands it, and its rank 0 runs ``run_job`` (see core.cli.train).
- ``run_job`` takes the run folder's writer lock (a second writer gets RunError at once), waits for one
  of ``settings.max_jobs`` slots (flock on slot files under ``<cache_dir>/job-slots``, shared by
  training and prediction jobs), writes ``running``, calls ``work(ctx)`` and writes the final state.
- ``cancel(run)`` sets the cancel flag and sends SIGTERM; the work notices via ``ctx.cancel_requested()``,
  checkpoints and raises JobCancelled.
- ``reconcile(run)`` turns a queued/running run whose process is gone (or whose pid now belongs to
  another process) into ``failed`` with the reason.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core import runs, settings
from core.errors import JobCancelled, RunError, WorkbenchError
from core.runs.folder import ACTIVE_STATES, FINAL_STATES, RunFolder, read_summary
from core.runs.processes import (  # noqa: F401 - pid_alive, process_start_token, reap_children: part of the jobs API
    pid_alive,
    process_start_token,
    reap_children,
    remember_child,
)

# A launched child blocks on this pipe until the launcher has recorded its pid in status.json, so the
# launcher's write can never land on top of the child's own status updates.
_READY_FD_ENV = "WORKBENCH_JOB_READY_FD"
# The launcher takes the run folder's lock and hands the locked descriptor to the child, so the folder
# is never unlocked between launch and the job's end: a racing launch fails in the launcher, at once.
_LOCK_FD_ENV = "WORKBENCH_JOB_LOCK_FD"
HEARTBEAT_INTERVAL_S = 1.0
RESUME_LOCK_WAIT_S = 15.0
SLOT_POLL_S = 0.5
# A queued run that never got a pid (the launcher died between writing it and starting the process).
_NEVER_STARTED_AFTER_S = 120.0

_sigterm_received = False


def _as_run(run: RunFolder | str | os.PathLike) -> RunFolder:
    return run if isinstance(run, RunFolder) else RunFolder(run)


# ---- running a job (inside the job process) ---------------------------------------------------


class JobContext:
    """What the work gets: the run folder, a throttled heartbeat, and the cancel check."""

    def __init__(self, run: RunFolder):
        self.run = run
        self._last_beat = 0.0

    def heartbeat(
        self,
        step: int | None = None,
        total_steps: int | None = None,
        epoch: int | None = None,
        message: str | None = None,
        force: bool = False,
    ) -> None:
        """Record progress in status.json, at most about once a second unless ``force``."""
        now = time.time()
        if not force and now - self._last_beat < HEARTBEAT_INTERVAL_S:
            return
        self._last_beat = now
        fields: dict[str, Any] = {"heartbeat": now}
        for key, value in (("step", step), ("total_steps", total_steps), ("epoch", epoch), ("message", message)):
            if value is not None:
                fields[key] = value
        runs.write_status(self.run, **fields)

    def cancel_requested(self) -> bool:
        return _sigterm_received or runs.cancel_requested(self.run)


def _on_sigterm(signum, frame) -> None:
    global _sigterm_received
    _sigterm_received = True


def _install_sigterm_handler() -> Any:
    """Make SIGTERM a cancel request; return the previous handler (None when not the main thread)."""
    global _sigterm_received
    _sigterm_received = False
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        return None  # not the main thread (an in-process test): the cancel flag file still works


def _take_over_from_launcher(run: RunFolder) -> int | None:
    """Wait until the launcher has written our pid (EOF on the ready pipe); return the run lock it handed
    over, else a fresh one. A torchrun worker does not inherit them (the numbers may name other files
    here): it waits until status.json names torchrun (30 s at most), which keeps the lock (None)."""
    ready, lock = os.environ.pop(_READY_FD_ENV, None), os.environ.pop(_LOCK_FD_ENV, None)
    if lock is not None and "TORCHELASTIC_RUN_ID" in os.environ:
        deadline = time.monotonic() + 30.0
        while runs.read_status(run).get("pid") != os.getppid() and time.monotonic() < deadline:
            time.sleep(0.05)
        return None
    if ready is not None:
        try:
            fd = int(ready)
            while os.read(fd, 64):
                pass
            os.close(fd)
        except (ValueError, OSError):
            pass
    if lock is not None:
        try:
            return runs.adopt_run_lock(run, int(lock))
        except (ValueError, RunError):
            pass  # not ours (a nested command): lock the folder ourselves below
    return runs.lock_run_folder(run)


def _slot_dir() -> Path:
    return settings.load().cache_dir / "job-slots"


def _try_take_slot(max_jobs: int) -> int | None:
    folder = _slot_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(max_jobs):
        fd = os.open(folder / f"slot-{i}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
    return None


def _wait_for_slot(ctx: JobContext) -> int | None:
    """A held slot's descriptor, or None when cancelled while waiting. State stays queued meanwhile."""
    max_jobs = settings.load().max_jobs
    told = False
    while True:
        fd = _try_take_slot(max_jobs)
        if fd is not None:
            return fd
        if ctx.cancel_requested():
            return None
        if not told:
            runs.write_status(ctx.run, message=f"waiting for a free job slot ({max_jobs} running at most)")
            told = True
        time.sleep(SLOT_POLL_S)


def error_line(err: BaseException) -> str:
    """One line for status.json and the page: the user-facing message, or the exception type and text."""
    if isinstance(err, OSError) and err.errno == 28:  # ENOSPC
        text = f"disk full: {err.strerror or err} {err.filename or ''}".strip()
        text += " — free some space, then resume the run (the last checkpoint is intact)"
    elif isinstance(err, WorkbenchError):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}"
    first = (text.strip().splitlines() or [type(err).__name__])[0]
    return first[:500]


def run_job(run: RunFolder | str | os.PathLike, work: Callable[[JobContext], None]) -> str:
    """Run ``work(ctx)`` as the one writer of ``run``, within the job-slot limit; return the final state."""
    run = _as_run(run)
    lock_fd = _take_over_from_launcher(run)  # RunError when another process writes this folder
    slot_fd = None
    previous_handler = _install_sigterm_handler()
    try:
        ctx = JobContext(run)
        for name in runs.remove_partial_checkpoints(run):
            runs.append_log(run, f"[job] removed {name}, a checkpoint a stopped job left half-written")
        me = {"pid": os.getpid(), "pid_start": process_start_token(os.getpid())}
        runs.write_status(run, state="queued", **me)
        slot_fd = _wait_for_slot(ctx)
        if slot_fd is None or ctx.cancel_requested():
            return _finish(run, "cancelled", message="cancelled before it started")
        now = time.time()
        runs.write_status(
            run, state="running", started_at=now, heartbeat=now, finished_at=None, error=None, message="starting", **me
        )
        try:
            work(ctx)
        except (JobCancelled, KeyboardInterrupt):
            return _finish(run, "cancelled", message="cancelled")
        except Exception as err:  # noqa: BLE001 - any failure of the work must end as a recorded state
            runs.append_log(run, "".join(traceback.format_exception(err)))
            return _finish(run, "failed", error=error_line(err), message="failed")
        return _finish(run, "completed", message="completed")
    finally:
        if slot_fd is not None:
            os.close(slot_fd)
        if lock_fd is not None:
            runs.unlock_run_folder(lock_fd)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _finish(run: RunFolder, state: str, **fields: Any) -> str:
    runs.append_log(run, f"[job] {state}")  # before the state: whoever sees the final state finds the log line
    runs.write_status(run, state=state, finished_at=time.time(), **fields)
    return state


# ---- launching and controlling jobs (in the app or the CLI) -----------------------------------


def _lock_run_folder(run: RunFolder, wait_s: float) -> int:
    """The run folder's lock, retried for up to ``wait_s`` seconds while a dying job lets go of it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return runs.lock_run_folder(run)
        except RunError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def launch(run_folder: RunFolder | str | os.PathLike, argv: list[str], lock_wait_s: float = 0.0) -> int:
    """Start ``python -m core <argv…>`` detached for ``run_folder``; return its pid at once. An ``argv``
    starting with ``-m`` is the whole command after ``python`` (torchrun, from ``training_argv``).

    Raises RunError when another process is writing the folder (a running job or a racing launch).
    """
    run = _as_run(run_folder)
    lock_fd = _lock_run_folder(run, lock_wait_s)
    try:
        runs.write_status(
            run,
            state="queued",
            queued_at=time.time(),
            pid=None,
            pid_start=None,
            started_at=None,
            heartbeat=None,
            finished_at=None,
            error=None,
            message="launching",
        )
        read_fd, write_fd = os.pipe()
        env = {**os.environ, _READY_FD_ENV: str(read_fd), _LOCK_FD_ENV: str(lock_fd), "PYTHONUNBUFFERED": "1"}
        try:
            with open(run.log, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, *(argv if argv[:1] == ["-m"] else ["-m", "core", *argv])],
                    cwd=settings.REPO_ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(read_fd, lock_fd),
                )
        except OSError as err:
            os.close(write_fd)
            runs.write_status(run, state="failed", error=f"could not start the job: {err}", finished_at=time.time())
            raise RunError(f"could not start a job for {run.id}: {err}") from err
        finally:
            os.close(read_fd)
        try:
            remember_child(proc)
            runs.write_status(run, pid=proc.pid, pid_start=process_start_token(proc.pid), message="starting")
        finally:
            os.close(write_fd)  # releases the child (see _wait_for_launcher)
    finally:
        runs.unlock_run_folder(lock_fd)  # the child holds its own copy of the locked descriptor
    return proc.pid


def _config_dict(config: Any) -> dict[str, Any]:
    """A validated TrainConfig as a dict (ConfigError names the bad field)."""
    from core.training.config import TrainConfig

    if isinstance(config, TrainConfig):
        return config.to_dict()
    if not isinstance(config, dict):
        raise RunError(f"a training config must be a dict or TrainConfig, not {type(config).__name__}")
    plain = {k: v for k, v in config.items() if k != "kind"}
    return TrainConfig.from_dict(plain).to_dict()


def launch_training(config: Any, models_dir: str | os.PathLike | None = None, name: str | None = None) -> RunFolder:
    """Validate ``config``, make a new run folder (named ``name`` or a fresh id) and launch training in it."""
    cfg = _config_dict(config)
    if cfg["nproc"] != 1:  # more processes than GPUs fails here, before a run folder is made
        from core.training.distributed import training_args

        training_args("", cfg)
    parent = Path(models_dir) if models_dir else settings.load().models_dir
    run = runs.create_run_folder(parent, run_id=name or None)
    runs.write_config(run, {**cfg, "kind": "train"})
    launch(run, training_argv(run))
    return run


def training_argv(run: RunFolder) -> list[str]:
    """``train --run R``, or the torchrun command when the config asks for several processes."""
    config = runs.read_config(run) if run.config.is_file() else {}
    if config.get("nproc", 1) == 1:
        return ["train", "--run", str(run.root)]
    from core.training.distributed import training_args

    return training_args(run.root, config)


def job_argv(run: RunFolder) -> list[str]:
    """The command that (re)runs the job of ``run``, from its config's kind."""
    kind = runs.read_config(run).get("kind", "train")
    if kind == "train":
        return training_argv(run)
    if kind == "predict":
        return ["predict", "--job", str(run.root)]
    raise RunError(f"run {run.id} is of kind {kind!r}: it has no job to run")


def cancel(run: RunFolder | str | os.PathLike) -> dict[str, Any]:
    """Ask a job to stop: it checkpoints and ends as cancelled. A queued job is cancelled right away."""
    run = _as_run(run)
    status = reconcile(run)
    state = status.get("state")
    if state in FINAL_STATES:
        raise RunError(f"run {run.id} is already {state}: nothing to cancel")
    runs.request_cancel(run)
    if pid_alive(status.get("pid"), status.get("pid_start")):
        try:
            os.kill(status["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    if state == "queued":
        status = runs.write_status(run, state="cancelled", finished_at=time.time(), message="cancelled while queued")
    return status


def resume(run: RunFolder | str | os.PathLike) -> int:
    """Relaunch a cancelled or failed run; the job continues from checkpoints/last.pt. Returns the pid."""
    run = runs.open_run(_as_run(run).root)
    status = reconcile(run)
    state = status.get("state")
    if state in ACTIVE_STATES:
        raise RunError(f"run {run.id} is {state} (pid {status.get('pid')}): cancel it before resuming")
    if state == "completed":
        raise RunError(f"run {run.id} already completed: start a new run to train more")
    runs.clear_cancel(run)
    runs.append_log(run, f"[job] resumed after {state}")
    # A killed process shows as exited (zombie) while its other threads still hold the lock for a moment.
    return launch(run, job_argv(run), lock_wait_s=RESUME_LOCK_WAIT_S)


# ---- reading runs -------------------------------------------------------------------------------


def reconcile(run: RunFolder | str | os.PathLike) -> dict[str, Any]:
    """The run's status, after marking it failed if its process is gone without a final state."""
    run = _as_run(run)
    reap_children()
    status = runs.read_status(run)
    if status.get("state") not in ACTIVE_STATES:
        return status
    pid = status.get("pid")
    if not pid:
        since = status.get("queued_at") or _mtime(run.status) or _mtime(run.config) or time.time()
        if time.time() - since < _NEVER_STARTED_AFTER_S:
            return status
        reason = "the job never started (no process was recorded)"
    elif pid_alive(pid, status.get("pid_start")):
        return status
    else:
        reason = f"process {pid} exited without a final state (killed?)"
    # Re-read: the job may have written its final state between our read and the pid check.
    status = runs.read_status(run)
    if status.get("state") not in ACTIVE_STATES:
        return status
    runs.append_log(run, f"[job] marked failed: {reason}")
    return runs.write_status(run, state="failed", error=reason, finished_at=time.time(), message="failed")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


RUN_COLUMNS = [
    "id", "name", "model", "task", "state", "progress", "step", "total_steps", "best_val_f1",
    "duration", "started", "error", "path",
]  # fmt: skip


def best_scores(run: RunFolder, write_missing: bool | None = None) -> dict[str, float | None]:
    """Best val macro F1 and best val accuracy (None before the first epoch end), from summary.json.

    The summary is kept by the trainer's every validation line, so this costs one small file read
    however long metrics.jsonl grows. An older run's summary is built from metrics.jsonl and saved,
    by default only once the run is finished: a job still appending could otherwise lose a line's
    score to this process's older view of the file.
    """
    if write_missing is None:
        write_missing = runs.read_status(run).get("state") in FINAL_STATES
    summary = read_summary(run, write_missing=write_missing)
    return {"val_f1": summary["best_val_f1"], "val_acc": summary["best_val_acc"]}


def run_summary(run: RunFolder) -> dict[str, Any]:
    """One row of ``list_runs`` for ``run`` (reconciled)."""
    status = reconcile(run)
    config = runs.read_config(run) if run.config.is_file() else {}
    step, total = status.get("step"), status.get("total_steps")
    state = status.get("state")
    progress = 1.0 if state == "completed" else (min(1.0, step / total) if step and total else 0.0)
    started = status.get("started_at")
    end = status.get("finished_at") or (status.get("heartbeat") if state not in ACTIVE_STATES else time.time())
    duration = max(0.0, end - started) if started and end else None
    return {
        "id": run.id,
        "name": config.get("name") or run.id,
        "model": config.get("model"),
        "task": config.get("task"),
        "state": state,
        "progress": float(progress),
        "step": step,
        "total_steps": total,
        # Another process may still append to an active run: only a finished run's summary is written here.
        "best_val_f1": best_scores(run, write_missing=state not in ACTIVE_STATES)["val_f1"],
        "duration": duration,
        "started": datetime.fromtimestamp(started) if started else None,  # local time, as people read it
        "error": status.get("error"),
        "path": str(run.root),
    }


def list_runs(models_dir: str | os.PathLike | None = None, include_archived: bool = False) -> pd.DataFrame:
    """All runs under ``models_dir`` (default settings.models_dir), newest first, reconciled, with their
    journal (name, tags, starred, archived); archived runs only with ``include_archived``."""
    from core.runs import journal

    parent = Path(models_dir) if models_dir else settings.load().models_dir
    rows = []
    for run in runs.list_run_folders(parent):
        try:
            rows.append(run_summary(run))
        except (WorkbenchError, OSError, ValueError):
            continue  # a folder being deleted or damaged must not hide the others
    return journal.annotate(pd.DataFrame(rows, columns=RUN_COLUMNS), include_archived=include_archived)
