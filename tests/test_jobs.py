"""The job machinery (core.runs.jobs): states, locks, slots, cancel, reconcile — with in-process work and the
`python -m core jobs hold` test job, which needs no torch and finishes when the test says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import runs
from core.errors import RunError
from core.runs import jobs
from tests.conftest import wait_state, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(jobs_env):
    return jobs_env  # conftest: private models and cache folders, one job slot


def make_run(env: Path, name: str = "r1", kind: str = "hold") -> runs.RunFolder:
    run = runs.create_run_folder(env / "models", name)
    runs.write_config(run, {"kind": kind, "model": "small_cnn", "task": "mask"})
    return run


def launch_hold(run: runs.RunFolder, release: Path, fail: str | None = None) -> int:
    argv = ["jobs", "hold", "--run", str(run.root), "--until", str(release)]
    return jobs.launch(run, argv + (["--fail", fail] if fail else []))


# ---- in-process -----------------------------------------------------------------------------------


def test_run_job_completes_and_records_progress(env):
    run = make_run(env)

    def work(ctx: jobs.JobContext) -> None:
        assert runs.read_status(run)["state"] == "running"
        ctx.heartbeat(step=3, total_steps=10, epoch=0, message="epoch 1", force=True)

    assert jobs.run_job(run, work) == "completed"
    status = runs.read_status(run)
    assert status["state"] == "completed"
    assert (status["step"], status["total_steps"], status["pid"]) == (3, 10, os.getpid())
    assert status["finished_at"] >= status["started_at"]
    assert status["error"] is None


def test_heartbeat_is_throttled(env):
    run = make_run(env)
    writes = []

    def work(ctx: jobs.JobContext) -> None:
        for step in range(200):
            ctx.heartbeat(step=step)
            writes.append(runs.read_status(run).get("step"))

    jobs.run_job(run, work)
    assert len(set(writes)) < 20  # two hundred calls, only a few writes


def test_run_job_cancelled_by_flag(env):
    run = make_run(env)

    def work(ctx: jobs.JobContext) -> None:
        assert not ctx.cancel_requested()
        runs.request_cancel(run)
        assert ctx.cancel_requested()
        raise jobs.JobCancelled()

    assert jobs.run_job(run, work) == "cancelled"
    assert runs.read_status(run)["state"] == "cancelled"


def test_run_job_failure_gives_one_line_error_and_traceback_in_log(env):
    run = make_run(env)

    def work(ctx: jobs.JobContext) -> None:
        raise ValueError("bad thing\nsecond line")

    assert jobs.run_job(run, work) == "failed"
    status = runs.read_status(run)
    assert status["error"] == "ValueError: bad thing"
    log = runs.tail(run.log)
    assert "Traceback" in log and "second line" in log


def test_disk_full_error_names_the_cause(env):
    run = make_run(env)

    def work(ctx: jobs.JobContext) -> None:
        raise OSError(28, "No space left on device", str(run.last_checkpoint))

    assert jobs.run_job(run, work) == "failed"
    error = runs.read_status(run)["error"]
    assert error.startswith("disk full") and "resume" in error


def test_second_writer_of_a_run_folder_is_refused(env):
    run = make_run(env)
    fd = runs.lock_run_folder(run)
    try:
        with pytest.raises(RunError, match=rf"already being written by pid {os.getpid()}"):
            jobs.run_job(run, lambda ctx: None)
        with pytest.raises(RunError, match="already being written"):
            jobs.launch(run, ["jobs", "list"])
    finally:
        runs.unlock_run_folder(fd)
    assert jobs.run_job(run, lambda ctx: None) == "completed"


def test_sigterm_becomes_a_cancel_request(env):
    run = make_run(env)

    def work(ctx: jobs.JobContext) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(ctx.cancel_requested, what="SIGTERM to be noticed")
        raise jobs.JobCancelled()

    before = signal.getsignal(signal.SIGTERM)
    assert jobs.run_job(run, work) == "cancelled"
    assert signal.getsignal(signal.SIGTERM) is before


# ---- detached processes ------------------------------------------------------------------------


def test_launch_runs_detached_and_completes(env):
    run = make_run(env)
    release = env / "release"
    pid = launch_hold(run, release)
    status = wait_state(run, "running")
    assert status["pid"] == pid and status["pid_start"]
    assert os.getsid(pid) == pid  # its own session: closing the app's terminal does not stop it
    wait_until(lambda: (runs.read_status(run).get("step") or 0) > 0, what="a heartbeat")
    release.touch()
    status = wait_state(run, "completed")
    assert status["error"] is None
    assert "[job] completed" in runs.tail(run.log)
    frame = jobs.list_runs()
    assert frame.loc[frame["id"] == run.id, "state"].item() == "completed"
    assert frame.loc[frame["id"] == run.id, "progress"].item() == 1.0


def test_failing_job_reports_its_error(env):
    run = make_run(env)
    release = env / "release"
    release.touch()
    launch_hold(run, release, fail="exploded on purpose")
    status = wait_state(run, "failed")
    assert status["error"] == "RuntimeError: exploded on purpose"


def test_cancel_running_job(env):
    run = make_run(env)
    launch_hold(run, env / "never")
    wait_state(run, "running")
    jobs.cancel(run)
    status = wait_state(run, "cancelled")
    assert status["finished_at"]
    with pytest.raises(RunError, match="already cancelled"):
        jobs.cancel(run)


def test_kill_9_becomes_failed_after_reconcile_and_resume_relaunches(env):
    run = make_run(env)
    release = env / "release"
    pid = launch_hold(run, release)
    wait_state(run, "running")
    os.kill(pid, signal.SIGKILL)
    status = wait_state(run, "failed")
    assert status["error"] == f"process {pid} exited without a final state (killed?)"
    release.touch()
    runs.write_config(run, {**runs.read_config(run), "kind": "hold"})
    with pytest.raises(RunError, match="no job to run"):
        jobs.resume(run)  # a "hold" run has no job command; the real resume is tested with training


def test_resume_refuses_running_and_completed(env, monkeypatch):
    run = make_run(env)
    release = env / "release"
    launch_hold(run, release)
    wait_state(run, "running")
    with pytest.raises(RunError, match="cancel it before resuming"):
        jobs.resume(run)
    release.touch()
    wait_state(run, "completed")
    with pytest.raises(RunError, match="already completed"):
        jobs.resume(run)


def test_reused_pid_is_not_mistaken_for_the_job(env):
    run = make_run(env)
    # Our own pid is alive, but it started at another time than the recorded job.
    runs.write_status(run, state="running", pid=os.getpid(), pid_start="1", started_at=time.time())
    status = jobs.reconcile(run)
    assert status["state"] == "failed" and "exited without a final state" in status["error"]


def test_reconcile_leaves_live_and_final_runs_alone(env):
    run = make_run(env)
    me = {"pid": os.getpid(), "pid_start": jobs.process_start_token(os.getpid())}
    runs.write_status(run, state="running", **me)
    assert jobs.reconcile(run)["state"] == "running"
    runs.write_status(run, state="completed", pid=999_999_999)
    assert jobs.reconcile(run)["state"] == "completed"


def test_two_launches_racing_for_one_folder(env):
    """Two foreground jobs start together on one folder: one runs, the other is refused with a clear error."""
    run = make_run(env)
    release = env / "release"
    cmd = [sys.executable, "-m", "core", "jobs", "hold", "--run", str(run.root), "--until", str(release)]
    procs = [
        subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    # The loser exits by itself; then let the winner finish.
    loser = wait_until(lambda: next((p for p in procs if p.poll() is not None), None), what="one job to be refused")
    release.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outputs
    err = outputs[procs.index(loser)][1]
    assert f"run {run.id} is already being written by pid" in err
    assert runs.read_status(run)["state"] == "completed"
    # And through launch(): a second launch while the first job runs is refused in the launcher.
    release.unlink()
    launch_hold(run, release)
    wait_state(run, "running")
    with pytest.raises(RunError, match="already being written by pid"):
        launch_hold(run, release)
    release.touch()
    wait_state(run, "completed")


def test_max_jobs_queues_and_starts_by_itself(env):
    first, second, third = make_run(env, "a"), make_run(env, "b"), make_run(env, "c")
    release_a, release_b = env / "ra", env / "rb"
    launch_hold(first, release_a)
    wait_state(first, "running")
    launch_hold(second, release_b)
    launch_hold(third, env / "never")
    # Both wait in the queue with a live process while the only slot is taken.
    wait_until(
        lambda: "slot" in (runs.read_status(second).get("message") or ""), what="the second job to wait for a slot"
    )
    assert jobs.reconcile(second)["state"] == "queued"
    status = jobs.cancel(third)  # a queued job is cancelled right away
    assert status["state"] == "cancelled"
    third_pid = status["pid"]
    wait_until(lambda: not jobs.pid_alive(third_pid), what="the cancelled queued job to exit")
    assert runs.read_status(third)["state"] == "cancelled"
    assert jobs.reconcile(second)["state"] == "queued"
    release_a.touch()
    wait_state(first, "completed")
    wait_state(second, "running")
    release_b.touch()
    wait_state(second, "completed")
    assert runs.read_status(third)["state"] == "cancelled"


def test_jobs_cli_list_and_cancel(env):
    run = make_run(env)
    launch_hold(run, env / "never")
    wait_state(run, "running")
    out = subprocess.run(
        [sys.executable, "-m", "core", "jobs", "list"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and run.id in out.stdout and "running" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "core", "jobs", "cancel", str(run.root)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    wait_state(run, "cancelled")
    out = subprocess.run(
        [sys.executable, "-m", "core", "jobs", "resume", str(run.root)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "no job to run" in out.stderr


# ---- several processes (torchrun) ------------------------------------------------------------------


def test_a_run_with_several_processes_launches_torchrun(env):
    from core.training.config import TrainConfig

    run = make_run(env, kind="train")
    runs.write_config(run, {**TrainConfig(nproc=2, device="cpu").to_dict(), "kind": "train"})
    argv = jobs.training_argv(run)
    assert argv[:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    assert argv[5:] == ["-m", "core", "train", "--run-dir", str(run.root)]
    assert jobs.job_argv(run) == argv
    runs.write_config(run, {**TrainConfig(device="cpu").to_dict(), "kind": "train"})
    assert jobs.training_argv(run) == ["train", "--run", str(run.root)]


def test_a_torchrun_worker_leaves_the_handed_over_lock_to_torchrun(env, monkeypatch):
    """torchrun keeps the lock and the ready pipe launch() hands it; its workers do not inherit them, so
    rank 0 must not use the numbers in its environment (they may name other files), only wait for its pid."""
    run = make_run(env)
    runs.write_status(run, state="queued", pid=os.getppid())  # what launch() writes: torchrun's pid
    read_fd, write_fd = os.pipe()  # a descriptor that reading would block on
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv(jobs._LOCK_FD_ENV, str(read_fd))
    monkeypatch.setenv(jobs._READY_FD_ENV, str(read_fd))
    try:
        assert jobs._take_over_from_launcher(run) is None
        assert jobs._LOCK_FD_ENV not in os.environ and jobs._READY_FD_ENV not in os.environ
        os.fstat(read_fd)  # untouched: still open
    finally:
        os.close(read_fd)
        os.close(write_fd)
