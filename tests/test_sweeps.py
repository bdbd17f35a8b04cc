"""Sweeps: plans validated, trials run as ordinary runs by Optuna, pruning, two workers, cancel, resume.

Trials train small_cnn at 32x24 on the tiny demo dataset; every trial is a real background job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core import runs
from core.__main__ import main
from core.errors import ConfigError, RunError
from core.runs import jobs, journal
from core.specs import transforms
from core.sweeps import figures, plan, store, worker
from tests.conftest import wait_state, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Private folders; trials and workers inherit them (and one torch thread) through os.environ."""
    for name, sub in (("WORKBENCH_MODELS_DIR", "models"), ("WORKBENCH_CACHE_DIR", "cache")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    monkeypatch.setenv("WORKBENCH_TRAIN_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "models").mkdir()
    return tmp_path


def base_config(data: Path, **fields) -> dict:
    train, eval_ = transforms.preset("baseline", (32, 24))
    return {
        "data": str(data),
        "task": "mask",
        "epochs": 1,
        "batch_size": 16,
        "img_size": [32, 24],
        "train_spec": train,
        "eval_spec": eval_,
        **fields,
    }


def make_plan(env: Path, data: Path, **fields) -> Path:
    raw = {"name": "test sweep", "base": base_config(data), "space": {"lr": [0.001, 0.003]}, "sampler": "random",
           "trials": 2, "pruner": "none", "metric": "val_f1", **fields}  # fmt: skip
    path = env / "plan.json"
    path.write_text(json.dumps(raw))
    return path


def create(capsys, plan_path: Path) -> str:
    capsys.readouterr()
    assert main(["sweep", "create", str(plan_path)]) == 0
    return capsys.readouterr().out.strip()


def status_json(capsys, sweep_id: str) -> dict:
    capsys.readouterr()
    assert main(["sweep", "status", sweep_id, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def trial_runs(env: Path) -> list[runs.RunFolder]:
    return [r for r in runs.list_run_folders(env / "models") if journal.read_journal(r)["sweep"]]


# ---- plans ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bogus": 1}, "bogus: unknown plan field"),
        ({"space": {"learning_rate": [0.1]}}, "space.learning_rate: not a TrainConfig field"),
        ({"space": {"lr": {"low": 0.1, "high": 0.01}}}, r"space.lr: low \(0.1\) must be below high"),
        ({"space": {"lr": {"low": 0, "high": 0.1, "log": True}}}, "space.lr: a log range needs low > 0"),
        ({"space": {"lr": {"low": 1e-4, "high": 1e3}}}, r"space.lr: high: lr: must be in \(0.0, 10.0\]"),
        ({"space": {"lr": [1e-3, 1e3]}}, "space.lr: choice 1000.0: lr: must be in"),
        ({"space": {"model": {"low": 1, "high": 2}}}, "space.model: a range needs a numeric field"),
        ({"space": {"epochs": {"low": 1.5, "high": 3}}}, "space.epochs.low: a whole number is needed"),
        ({"space": {"lr": {"low": 1e-3, "high": 1e-1, "mid": 1}}}, "space.lr.mid: unknown range option"),
        ({"space": {"lr": {"low": 1e-3, "high": 1e-1}}, "sampler": "grid"}, "space.lr: the grid sampler needs"),
        ({"sampler": "grid", "trials": 3}, "trials: the grid has only 2 points"),
        ({"sampler": "bayes"}, "sampler: 'bayes' is not one of grid, random, tpe"),
        ({"metric": "f1"}, "metric: 'f1' is not one of"),
        ({"pruner": {"type": "median", "patience": 2}}, "pruner.patience: not an option of the median pruner"),
        ({"base": {"optimiser": "sgd"}}, "base.optimiser: unknown config field"),
        ({"space": {"specs": ["baseline", "no-such-pair"]}}, "space.specs: no saved spec pair named 'no-such-pair'"),
    ],
)
def test_plan_refuses_unknown_fields_and_bad_ranges_naming_them(env, demo_root, change, message):
    raw = json.loads(make_plan(env, demo_root).read_text())
    raw.update(change)
    with pytest.raises(ConfigError, match=message):
        plan.SweepPlan.from_dict(raw)


def test_plan_values_become_valid_trial_configs(env, demo_root, capsys):
    import optuna

    raw = json.loads(make_plan(env, demo_root).read_text())
    raw["space"] = {"img_size": [[40, 32], [32, 24]], "specs": ["baseline", "light"],
                    "epochs": {"low": 1, "high": 5, "step": 2}, "weight_decay": {"low": 1e-5, "high": 1e-2, "log": True}}  # fmt: skip
    sweep_plan = plan.SweepPlan.from_dict(raw)
    study = optuna.create_study(sampler=sweep_plan.make_sampler())
    for _ in range(4):
        params = sweep_plan.suggest(study.ask())
        cfg = sweep_plan.trial_config(params)
        assert cfg.img_size == params["img_size"] and isinstance(cfg.epochs, int) and cfg.epochs in (1, 3, 5)
        assert transforms.output_size(cfg.train_spec) == tuple(params["img_size"])  # the pair follows the size
    assert plan.SweepPlan.from_dict(sweep_plan.to_dict()) == sweep_plan  # what plan.json stores reads back
    raw["sampler"] = "grid"
    raw["space"] = {"epochs": {"low": 1, "high": 5, "step": 2}, "model": ["small_cnn"]}
    raw["trials"] = 3
    assert plan.SweepPlan.from_dict(raw).grid() == {"epochs": [1, 3, 5], "model": ["small_cnn"]}
    bad = env / "bad.json"
    bad.write_text(json.dumps({**raw, "trials": 0}))
    assert main(["sweep", "create", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: bad.json: trials:")


def test_figures_come_from_the_study(env, demo_root):
    import optuna

    sweep = store.create_sweep(
        plan.load_plan(
            make_plan(env, demo_root, space={"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": [8, 16]})
        )
    )
    with pytest.raises(RunError, match="this plot needs at least 1"):
        figures.parallel_coordinates(sweep)
    study = store.load_study(sweep)
    dists = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "batch_size": optuna.distributions.CategoricalDistribution([8, 16])}  # fmt: skip
    for lr, bs, value in ((1e-3, 8, 0.5), (1e-2, 16, 0.7), (3e-2, 8, 0.6)):
        study.add_trial(
            optuna.trial.create_trial(params={"lr": lr, "batch_size": bs}, distributions=dists, value=value)
        )
    assert len(figures.parallel_coordinates(sweep.id).data) == 1
    importances = figures.param_importances(sweep)
    assert sorted(importances.data[0].y) == ["batch_size", "lr"]


# ---- sweeps that train --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_grid_sweep_run_by_two_workers_trains_each_point_once(env, demo_root, capsys, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "2")
    space = {"lr": [0.001, 0.003], "batch_size": [8, 16]}
    sweep_id = create(capsys, make_plan(env, demo_root, sampler="grid", trials=4, space=space))
    assert main(["sweep", "start", sweep_id, "--workers", "2"]) == 0
    sweep = store.open_sweep(sweep_id)
    assert len(store.live_workers(sweep)) == 2
    wait_until(lambda: not store.live_workers(sweep), timeout=400, what="both workers to finish")

    status = status_json(capsys, sweep_id)
    trials = status["trials"]
    assert [t["state"] for t in trials] == ["completed"] * 4 and status["finished"] == 4
    assert sorted((t["params"]["lr"], t["params"]["batch_size"]) for t in trials) == [
        (0.001, 8),
        (0.001, 16),
        (0.003, 8),
        (0.003, 16),
    ]
    made = trial_runs(env)
    assert sorted(r.id for r in made) == sorted(t["run"] for t in trials)  # one run per trial, no repeats
    for t in trials:
        run = runs.RunFolder(t["run_path"])
        assert runs.read_status(run)["state"] == "completed"
        assert journal.read_journal(run)["sweep"] == sweep_id and journal.read_journal(run)["trial"] == t["number"]
        assert runs.read_config(run)["lr"] == t["params"]["lr"] and t["value"] is not None
    assert status["best"]["run"] in {t["run"] for t in trials}
    logs = "".join(p.read_text() for p in worker.worker_logs(sweep))
    assert logs.count("worker stops: budget used") == 2
    assert len(figures.parallel_coordinates(sweep).data) == 1


@pytest.mark.slow
def test_median_pruner_prunes_the_trial_with_an_absurd_learning_rate(env, demo_root, capsys):
    # Seed 2 draws lr 0.003 for trial 0 and 10 for trial 1: trial 1's validation loss after its first
    # epoch (about 1e5) is far above trial 0's (about 1), so the median pruner stops it.
    sweep_id = create(
        capsys,
        make_plan(
            env,
            demo_root,
            space={"lr": [0.003, 10.0]},
            seed=2,
            trials=2,
            metric="val_loss",
            pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
            base=base_config(demo_root, epochs=25),
        ),
    )
    assert main(["sweep", "run", sweep_id, "--poll", "0.2"]) == 0
    trials = {t["params"]["lr"]: t for t in status_json(capsys, sweep_id)["trials"]}
    assert set(trials) == {0.003, 10.0}
    assert trials[0.003]["state"] == "completed" and trials[0.003]["run_state"] == "completed"
    absurd = trials[10.0]
    assert absurd["state"] == "pruned" and absurd["run_state"] == "pruned"
    run = runs.RunFolder(absurd["run_path"])
    assert jobs.reconcile(run)["state"] == "pruned"  # a final state: never turned into failed
    assert runs.read_metrics(run)["epoch"].max() < 25  # stopped early
    frame = jobs.list_runs()
    assert frame.loc[frame["id"] == run.id, "state"].item() == "pruned"


@pytest.mark.slow
def test_cancelling_a_sweep_cancels_its_running_trial_and_stops_its_worker(env, demo_root, capsys):
    sweep_id = create(capsys, make_plan(env, demo_root, base=base_config(demo_root, epochs=5000)))
    worker.start_workers(sweep_id)
    sweep = store.open_sweep(sweep_id)
    running = wait_until(
        lambda: [t for t in store.trial_rows(sweep) if t["run_state"] == "running"], timeout=300, what="a running trial"
    )
    assert main(["sweep", "cancel", sweep_id]) == 0
    assert running[0]["run"] in capsys.readouterr().out
    wait_state(runs.RunFolder(running[0]["run_path"]), "cancelled")
    wait_until(lambda: not store.live_workers(sweep), timeout=120, what="the worker to stop")

    status = status_json(capsys, sweep_id)
    assert status["cancelled"] is True
    by_state = {t["state"]: t for t in status["trials"]}
    assert by_state["cancelled"]["number"] == running[0]["number"]
    assert by_state["waiting"]["retry_of"] == running[0]["number"]  # queued again for a resume
    assert by_state["waiting"]["params"] == by_state["cancelled"]["params"]
    assert len(trial_runs(env)) == 1  # no trial started after the cancel


@pytest.mark.slow
def test_a_killed_worker_leaves_the_sweep_resumable(env, demo_root, capsys):
    # The only job slot is held, so the first trial's run waits queued while its worker is killed.
    blocker = runs.create_run_folder(env / "models", "blocker")
    runs.write_config(blocker, {"kind": "hold"})
    release = env / "release"
    jobs.launch(blocker, ["jobs", "hold", "--run", str(blocker.root), "--until", str(release)])
    wait_state(blocker, "running")
    sweep_id = create(capsys, make_plan(env, demo_root, trials=1))
    sweep = store.open_sweep(sweep_id)
    command = [sys.executable, "-m", "core", "sweep"]
    first = subprocess.Popen(
        [*command, "worker", sweep_id, "--poll", "0.2"],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lost = wait_until(lambda: [t for t in store.trial_rows(sweep) if t["run"]], timeout=300, what="a trial run")[0]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert store.trial_rows(sweep)[0]["state"] == "running"  # Optuna still thinks it runs

    resumed = subprocess.Popen(
        [*command, "run", sweep_id, "--poll", "0.2"],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: store.trial_rows(sweep)[0]["state"] == "interrupted", timeout=300, what="the lost trial")
        release.touch()
        out, _ = resumed.communicate(timeout=400)
    finally:
        resumed.kill()
    assert resumed.returncode == 0, out

    status = status_json(capsys, sweep_id)
    assert [t["state"] for t in status["trials"]] == ["interrupted", "completed"] and status["finished"] == 1
    retry = status["trials"][1]
    assert retry["retry_of"] == lost["number"] and retry["params"] == lost["params"] and retry["run"] != lost["run"]
    assert wait_state(runs.RunFolder(lost["run_path"]), "cancelled", "completed")  # the orphan run is stopped
    assert len(trial_runs(env)) == 2  # the lost trial's run and its retry


def test_a_database_study_is_shared_by_id_and_url(env, demo_root, capsys):
    """What a second machine does: only the sweep id and the URL (SQLite stands in for PostgreSQL here)."""
    url = f"sqlite:///{env / 'shared.db'}"
    capsys.readouterr()
    assert main(["sweep", "create", str(make_plan(env, demo_root)), "--storage", url]) == 0
    sweep_id = capsys.readouterr().out.strip()
    elsewhere = env / "other-machine-models"
    sweep = store.open_sweep(sweep_id, elsewhere, storage=url)
    assert sweep.root == elsewhere / "sweeps" / sweep_id and sweep.plan.trials == 2
    assert store.sweep_status(sweep)["trials"] == []
    store.cancel_sweep(store.open_sweep(sweep_id))  # cancelled on the first machine ...
    assert store.cancel_requested(sweep, store.load_study(sweep))  # ... seen on the second through the study
    with pytest.raises(RunError, match="no such study"):
        store.open_sweep("nope-1", elsewhere, storage=url)
