"""Faults around real (tiny) training jobs: kill -9 mid-epoch, a full disk during a checkpoint save,
the app restarted while a job runs, two launches racing for one run folder."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from core import runs
from core.errors import RunError
from core.runs import jobs
from core.specs import transforms
from tests.conftest import browse_to, wait_state, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One decoded-image cache for the module: later runs on the same images skip decoding."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def env(tmp_path, monkeypatch, demo_root, shared_cache):
    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(demo_root.parent))
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(shared_cache))
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    return tmp_path


def tiny_config(data: Path, **changes) -> dict:
    """small_cnn at 32x24 on the mask attribute: seconds per epoch on a CPU."""
    train_spec, eval_spec = transforms.preset("baseline", (32, 24))
    cfg = {
        "data": str(data), "task": "mask", "model": "small_cnn", "img_size": [32, 24],
        "train_spec": train_spec, "eval_spec": eval_spec, "batch_size": 16, "epochs": 2,
        "log_every": 2, "warmup_steps": 0, "device": "cpu", "seed": 0,
    }  # fmt: skip
    return {**cfg, **changes}


def checkpoint_step(run: runs.RunFolder) -> int:
    return int(runs.load_checkpoint(run.last_checkpoint)["step"])


def temp_files(run: runs.RunFolder) -> list[str]:
    return [p.name for p in run.root.rglob("*.tmp")]


# ---- disk full --------------------------------------------------------------------------------------


def test_disk_full_during_checkpoint_save_keeps_the_previous_one(env, demo_root, monkeypatch):
    import torch

    from core.training.loop import run_training

    run = runs.create_run_folder(env / "models", "diskfull")
    runs.write_config(run, {**tiny_config(demo_root), "kind": "train"})
    real_save = torch.save

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        # The second epoch's last.pt: write part of it, then run out of space.
        if isinstance(obj, dict) and "optimizer" in obj and obj.get("epoch") == 2:
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    assert jobs.run_job(run, lambda ctx: run_training(run, ctx)) == "failed"
    status = runs.read_status(run)
    assert status["error"].startswith("disk full") and "resume" in status["error"]
    assert "No space left on device" in runs.tail(run.log)  # the traceback is kept for the curious
    first_epoch_step = checkpoint_step(run)  # the previous checkpoint is intact and loadable
    assert 0 < first_epoch_step < status["step"]
    assert temp_files(run) == []

    # The page shows the error in words.
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO_ROOT / "app" / "main.py"), default_timeout=180)
    at.run()
    at.switch_page("app_pages/train.py")
    at.query_params["run"] = run.id
    at.run()
    assert not at.exception
    assert any("disk full" in e.value for e in at.error)

    # Space freed: resuming continues from the intact checkpoint and completes.
    monkeypatch.setattr(torch, "save", real_save)
    assert jobs.run_job(run, lambda ctx: run_training(run, ctx)) == "completed"
    assert checkpoint_step(run) == status["total_steps"]
    assert temp_files(run) == []


# ---- kill -9 ------------------------------------------------------------------------------------------


def train_records(run: runs.RunFolder):
    metrics = runs.read_metrics(run)
    return metrics[metrics["train_loss"].notna()] if "train_loss" in metrics else metrics.iloc[0:0]


def test_kill_9_mid_epoch_then_resume_continues_from_the_checkpoint(env, demo_root):
    # batch 2: an epoch is ~39 steps, so a kill lands mid-epoch.
    run = jobs.launch_training(tiny_config(demo_root, batch_size=2, epochs=3, log_every=1), name="killed")
    wait_until(run.last_checkpoint.is_file, what="the first epoch's checkpoint")
    saved = checkpoint_step(run)
    wait_until(lambda: train_records(run)["step"].max() >= saved + 3, what="steps after the checkpoint")
    pid = runs.read_status(run)["pid"]
    os.kill(pid, signal.SIGKILL)
    status = wait_state(run, "failed")
    assert status["error"] == f"process {pid} exited without a final state (killed?)"
    assert checkpoint_step(run) == saved  # intact and loadable
    lost = int(train_records(run)["step"].max())
    assert lost > saved  # it died mid-epoch, with unsaved steps

    jobs.resume(run)
    wait_until(lambda: f"resuming from step {saved}" in runs.tail(run.log, 20000), what="the resume message")
    wait_until(lambda: train_records(run)["step"].max() > lost, what="progress past the kill")
    jobs.cancel(run)
    wait_state(run, "cancelled")
    steps = train_records(run)["step"].tolist()
    assert steps == sorted(set(steps))  # the steps redone after the kill are not logged twice
    assert checkpoint_step(run) > lost  # cancel saved a checkpoint where it stopped
    assert not list(run.checkpoints.glob("*.tmp"))  # nothing half-written left behind


# ---- racing launches ---------------------------------------------------------------------------------


def test_two_launches_racing_for_one_run_folder(env, demo_root):
    import threading

    run = runs.create_run_folder(env / "models", "raced")
    runs.write_config(run, {**tiny_config(demo_root, epochs=1), "kind": "train"})
    barrier = threading.Barrier(2)
    outcomes: list = []

    def launch_once() -> None:
        barrier.wait()
        try:
            outcomes.append(jobs.launch(run, jobs.training_argv(run)))
        except RunError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=launch_once) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [o for o in outcomes if isinstance(o, RunError)]
    pids = [o for o in outcomes if isinstance(o, int)]
    assert len(errors) == 1 and len(pids) == 1, outcomes
    assert f"run {run.id} is already being written by pid" in str(errors[0])
    status = wait_state(run, "completed")
    assert status["pid"] == pids[0]
    row = jobs.list_runs().set_index("id").loc[run.id]
    assert row["state"] == "completed" and row["progress"] == 1.0 and row["best_val_f1"] is not None
    assert run.best_checkpoint.is_file() and run.val_predictions.is_file()
    # The same name twice is refused before anything is written.
    with pytest.raises(RunError, match="already exists"):
        jobs.launch_training(tiny_config(demo_root), name="raced")


# ---- the app restarted while a job runs --------------------------------------------------------------


@pytest.mark.browser
def test_app_restart_while_a_job_runs(demo_root, app_server_factory, new_page, tmp_path, monkeypatch):
    """Launch from one server, stop that server: the job keeps running, and a new server shows it live."""
    from tests.conftest import wait_for_app

    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    first = app_server_factory(demo_root.parent)
    page, watch = new_page()
    browse_to(page, first.url, "Training")  # through the sidebar; waits for the title
    page.get_by_label("Run name (optional)").fill("survivor")
    page.get_by_label("Run name (optional)").press("Enter")
    wait_for_app(page)
    for label, value in (
        ("Image height", 32),
        ("Image width", 24),
        ("Batch size", 1),
        ("Epochs", 1000),
    ):  # outlives the test
        box = page.get_by_label(label, exact=True)
        box.fill(str(value))
        box.press("Enter")
        wait_for_app(page)
    page.get_by_role("button", name="Launch training").click()
    page.get_by_text("Launched survivor").wait_for()
    run = runs.RunFolder(tmp_path / "models" / "survivor")
    status = wait_state(run, "running")
    page.close()
    first.stop()  # the app goes away; the job was started in a session of its own

    assert jobs.pid_alive(status["pid"], status["pid_start"])
    wait_until(lambda: len(train_records(run)) >= 2, what="logged steps")
    second = app_server_factory(demo_root.parent)
    page, watch = new_page()
    browse_to(page, second.url, "Training")  # through the sidebar; waits for the title
    page.wait_for_function("() => document.body.innerText.includes('survivor — running')", timeout=120_000)
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    watch.screenshot("train-after-restart")
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_function("() => document.body.innerText.includes('survivor — cancelled')", timeout=180_000)
    assert runs.read_status(run)["state"] == "cancelled"
    assert checkpoint_step(run) > 0
    watch.errors[:] = [e for e in watch.errors if "ERR_NAME_NOT_RESOLVED" not in e]  # offline font fetch
    watch.assert_clean()
