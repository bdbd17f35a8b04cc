"""Several training processes through torchrun (gloo on the CPU): the same run as one process, one run
folder written by rank 0, cancel and resume, a killed rank, and checkpoints that predict in one process.

Each torchrun start costs ~20-40 s on two busy cores (three Python processes import torch), so the
runs are tiny (small_cnn at 32x24) and each test makes as few as it can."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core import runs
from core.runs import jobs
from core.specs import transforms
from core.training import distributed
from core.training.config import TrainConfig
from core.training.loader import CachedSource, DecodeSource, open_or_build_cache
from tests.conftest import wait_state, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
TORCHRUN_S = 300  # a generous bound for one torchrun start and a short run on a busy machine


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Private folders and one torch thread per process; launched jobs and torchrun inherit them."""
    for name, sub in (("WORKBENCH_MODELS_DIR", "models"), ("WORKBENCH_CACHE_DIR", "cache")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("WORKBENCH_TRAIN_THREADS", "1")
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    before = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(before)


def config(data, **changes) -> dict:
    train_spec, eval_spec = transforms.preset("baseline", (32, 24))
    fields = dict(
        data=str(data),
        task="mask",
        img_size=[32, 24],
        train_spec=train_spec,
        eval_spec=eval_spec,
        batch_size=8,
        log_every=2,
        warmup_steps=0,
        device="cpu",
        seed=0,
    )
    cfg = TrainConfig(**{**fields, **changes})
    return cfg.to_dict()


def assert_run_folder_contract(run: runs.RunFolder, steps: int, starts: int = 1) -> None:
    """What one process leaves behind, written once (by rank 0); one TensorBoard file per start."""
    assert runs.read_status(run)["state"] == "completed"
    metrics = runs.read_metrics(run)
    assert metrics["step"].max() == steps
    assert metrics.dropna(subset=["val_f1"])["step"].is_unique  # one validation line per epoch end, not one per rank
    assert metrics.dropna(subset=["train_loss"])["step"].is_unique
    for path in (run.best_checkpoint, run.last_checkpoint, run.val_predictions, run.summary):
        assert path.is_file(), path
    assert len(list(run.tensorboard.glob("events.out.tfevents*"))) == starts
    last = runs.load_checkpoint(run.last_checkpoint)
    assert last["step"] == steps and not any(k.startswith("module.") for k in last["model"])  # unwrapped
    assert runs.list_run_folders(run.root.parent) == [run]


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def rank_pids(torchrun_pid: int) -> list[int]:
    """The processes torchrun started (its children), by /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if parent_pid(int(entry.name)) == torchrun_pid:
                    children.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return children


# ---- in one process: the pieces --------------------------------------------------------------------------


def test_each_rank_takes_a_slice_of_every_global_batch(tmp_path):
    """Two ranks' batches put together are the one-process batches: same images, same seeds, same order."""
    rng = np.random.default_rng(0)
    from PIL import Image

    paths = []
    for i in range(11):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(paths[-1])
    spec = [{"op": "Resize", "size": [12, 10]}, {"op": "RandomHorizontalFlip", "p": 0.5},
            {"op": "Normalize", "mean": [0.5] * 3, "std": [0.25] * 3}]  # fmt: skip
    cache, skipped, _ = open_or_build_cache(paths, spec[:1], (12, 10), tmp_path / "cache")
    positions, seeds = rng.permutation(11), rng.integers(0, 2**40, 11)
    for source in (CachedSource(cache, spec, skipped), DecodeSource(paths, spec)):
        whole = list(source.batches(positions, seeds, 4))
        halves = [list(source.batches(positions, seeds, 4, (rank, 2))) for rank in (0, 1)]
        assert [len(b.positions) for b in halves[0]] == [2, 2, 1] and [len(b.positions) for b in halves[1]] == [2, 2, 2]
        for one, a, b in zip(whole, *halves, strict=True):
            np.testing.assert_array_equal(one.positions, np.concatenate([a.positions, b.positions]))
            torch.testing.assert_close(one.images, torch.cat([a.images, b.images]), rtol=0, atol=0)
            assert a.share * len(one.positions) / 2 == len(a.positions)  # loss weight: the rank's share x 2


def test_nproc_resolves_and_picks_the_command():
    assert distributed.resolve_nproc(3, "cpu") == 3
    assert distributed.resolve_nproc(0, "cpu") == 1  # auto without a GPU: one process
    cfg = config("data", nproc=2)
    assert distributed.training_args("models/r", cfg) == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "core",
        "train",
        "--run-dir",
        "models/r",
    ]
    assert distributed.training_args("models/r", {**cfg, "nproc": 1}) == ["train", "--run", "models/r"]
    assert distributed.training_args("models/r", {**cfg, "nproc": 0}) == ["train", "--run", "models/r"]  # 1 CPU process
    one = distributed.SINGLE
    assert (one.is_main, one.active, one.any(True, False), one.gather("x")) == (True, False, [True, False], ["x"])


# ---- torchrun with gloo ------------------------------------------------------------------------------------


def test_two_processes_from_the_cli_train_like_one_and_predict_with_one(env, demo_root):
    """The same data and global batch on one and on two processes: the same validation images, the same
    accuracy within BatchNorm's noise (each rank normalises over its half batch); rank 0 alone writes the
    folder; its checkpoint predicts in this (one) process."""
    from core.evaluation import infer
    from core.training.loop import run_training

    fields = dict(max_steps=8, lr=3e-3)
    one = runs.create_run_folder(env / "reference", "one")
    runs.write_config(one, {**config(demo_root, **fields), "kind": "train"})
    assert jobs.run_job(one, lambda ctx: run_training(one, ctx)) == "completed"

    folder = env / "models" / "two"
    cfg_file = env / "two.json"
    cfg_file.write_text(__import__("json").dumps(config(demo_root, **fields)))
    proc = subprocess.run(
        [sys.executable, "-m", "core", "train", "--config", str(cfg_file), "--run", str(folder), "--nproc", "2"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=TORCHRUN_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes" in proc.stdout and proc.stdout.strip().endswith("completed")
    two = runs.open_run(folder)
    assert TrainConfig.from_dict(runs.read_config(two)).nproc == 2
    assert_run_folder_contract(two, steps=8)

    val_one, val_two = (runs.read_metrics(r).dropna(subset=["val_acc"]).iloc[-1] for r in (one, two))
    assert abs(val_one["val_acc"] - val_two["val_acc"]) <= 0.15, (val_one, val_two)
    pred_one, pred_two = runs.read_predictions(one.val_predictions), runs.read_predictions(two.val_predictions)
    assert pred_two["path"].tolist() == pred_one["path"].tolist()  # every validation image, in one-process order
    probs = [f"p{k}" for k in range(3)]
    assert np.abs(pred_one[probs].to_numpy() - pred_two[probs].to_numpy()).mean() < 0.1

    member = infer.load_run(two.root, device="cpu")
    probs_here, failures = infer.predict_probabilities(member, pred_two["path"].tolist())
    assert not failures
    np.testing.assert_allclose(probs_here, pred_two[probs].to_numpy(), atol=1e-4)


def test_launched_two_process_job_cancels_then_resumes(env, demo_root):
    """As a background job: torchrun is the detached process; cancel stops every rank at one step and
    rank 0 saves where they stopped; resume goes on to the end."""
    run = jobs.launch_training(config(demo_root, nproc=2, max_steps=60, batch_size=16), name="bg")
    wait_until(lambda: (runs.read_status(run).get("step") or 0) >= 2, TORCHRUN_S, "a few steps")
    rank0 = runs.read_status(run)["pid"]  # status.json names rank 0 (cancel signals it); its parent is torchrun
    assert b"torch.distributed.run" in Path(f"/proc/{parent_pid(rank0)}/cmdline").read_bytes()
    jobs.cancel(run)
    wait_state(run, "cancelled", timeout=TORCHRUN_S)
    stopped_at = runs.load_checkpoint(run.last_checkpoint)["step"]
    assert 2 <= stopped_at < 60
    jobs.resume(run)
    wait_state(run, "completed", timeout=TORCHRUN_S)
    assert_run_folder_contract(run, steps=60, starts=2)
    log = runs.tail(run.log, 20000)
    assert f"resuming from step {stopped_at}/60" in log and "ChildFailedError" not in log  # a cancel is no failure


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_and_resume_finishes_it(env, demo_root):
    run = jobs.launch_training(config(demo_root, nproc=2, max_steps=60, batch_size=16), name="killed")
    wait_until(lambda: (runs.read_status(run).get("step") or 0) >= 2, TORCHRUN_S, "a few steps")
    rank0 = runs.read_status(run)["pid"]
    torchrun_pid = parent_pid(rank0)
    (rank1,) = [pid for pid in rank_pids(torchrun_pid) if pid != rank0]
    os.kill(rank1, signal.SIGKILL)
    status = wait_state(run, "failed", timeout=TORCHRUN_S)
    assert status["error"], status
    wait_until(lambda: not jobs.pid_alive(torchrun_pid), 60, "torchrun to exit")
    jobs.resume(run)
    wait_state(run, "completed", timeout=TORCHRUN_S)
    assert_run_folder_contract(run, steps=60, starts=2)
