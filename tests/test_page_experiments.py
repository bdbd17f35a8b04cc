"""The Experiments page through AppTest: the plan form checked by core, a plan's view (trials with
pruned shown as pruned, plots, cancel, resume, the best trial opened in Review) and a real plan run."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import runs
from core.specs import transforms
from core.sweeps import plan, store
from tests.test_page_train import fake_run

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGE = "app_pages/experiments.py"


@pytest.fixture
def env(tmp_path, monkeypatch, demo_root):
    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(demo_root.parent))
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_SPECS_DIR", str(tmp_path / "specs"))
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    monkeypatch.setenv("WORKBENCH_TRAIN_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "models").mkdir()
    return tmp_path


def open_page(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app" / "main.py"), default_timeout=180)
    at.run()
    at.switch_page(PAGE)
    if query:
        at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def shown(element) -> str:
    return re.sub(r"\\(.)", r"\1", element.value)


def tiny_base(at: AppTest) -> None:
    """The compact base: small_cnn, one epoch of 32x24 images (each trial trains in seconds)."""
    at.number_input(key="experiments_h").set_value(32)
    at.number_input(key="experiments_w").set_value(24)
    at.number_input(key="experiments_epochs").set_value(1)
    at.number_input(key="experiments_batch_size").set_value(16)


def test_the_plan_form_is_checked_by_core_before_anything_starts(env):
    at = open_page()
    assert at.selectbox(key="experiments_model").value == "small_cnn"
    assert at.button(key="experiments_start").disabled  # nothing varies yet
    assert any("Choose at least one thing to vary" in i.value for i in at.info)

    at.checkbox(key="experiments_vary_lr").check().run()
    at.number_input(key="experiments_lr_low").set_value(0.5)
    at.number_input(key="experiments_lr_high").set_value(0.1).run()
    assert not at.exception
    assert any(shown(e).startswith("space.lr: low (0.5) must be below high") for e in at.error)
    assert at.button(key="experiments_start").disabled

    at.number_input(key="experiments_lr_low").set_value(0.001).run()
    assert not at.error and not at.button(key="experiments_start").disabled
    at.selectbox(key="experiments_sampler").set_value("grid").run()
    assert any("grid sampler needs choices" in shown(e) for e in at.error)  # a log range has no grid

    at.checkbox(key="experiments_vary_lr").uncheck()
    at.multiselect(key="experiments_space_losses").set_value(["ce", "focal"])
    at.number_input(key="experiments_trials").set_value(3).run()
    assert any("the grid has only 2 points" in shown(e) for e in at.error)
    assert not (env / "models" / "sweeps").exists()


def made_sweep(env: Path, demo_root: Path) -> store.SweepFolder:
    """A sweep whose study holds a completed, a pruned and a running trial (no training needed)."""
    import optuna

    train, eval_ = transforms.preset("baseline", (32, 24))
    raw = {"name": "view test", "base": {"data": str(demo_root), "task": "mask", "epochs": 2, "img_size": [32, 24],
                                          "train_spec": train, "eval_spec": eval_},
           "space": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}, "sampler": "random", "trials": 4}  # fmt: skip
    sweep = store.create_sweep(plan.SweepPlan.from_dict(raw), env / "models")
    study = store.load_study(sweep)
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    done = fake_run(env / "models", "trial-done", "completed")
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 1e-3},
            distributions={"lr": lr},
            value=0.61,
            intermediate_values={0: 0.5, 1: 0.61},
            user_attrs={"run": done.id, "run_path": str(done.root)},
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED,
            params={"lr": 0.09},
            distributions={"lr": lr},
            intermediate_values={0: 0.05},
            user_attrs={"run": "trial-pruned"},
        )
    )
    queued = fake_run(env / "models", "trial-queued", "queued", steps=0, queued_at=time.time())
    running = study.ask({"lr": lr})
    running.set_user_attr("run", queued.id)
    running.set_user_attr("run_path", str(queued.root))
    return sweep


def trials_shown(at: AppTest):
    (table,) = [d.value for d in at.dataframe if "trial" in d.value.columns]
    return table


def test_the_plan_view_cancel_resume_and_the_best_trial_in_review(env, demo_root, monkeypatch):
    from core.sweeps import worker

    sweep = made_sweep(env, demo_root)
    at = open_page({"sweep": sweep.id})
    assert at.selectbox(key="experiments_sweep").value == sweep.id
    table = trials_shown(at)
    assert table["state"].tolist() == ["completed", "pruned", "running"]  # pruned is its own state
    assert table["val F1"].tolist()[0] == 0.61 and table["run"].tolist()[0] == "trial-done"
    headline = " ".join(shown(m) for m in at.markdown)
    assert "view test — running" in headline and "best val_f1 0.6100 (trial 0, run trial-done)" in headline
    assert [c.key for c in at.get("plotly_chart")] == ["experiments_parallel"]
    assert any("need at least two completed trials" in c.value for c in at.caption)

    at.button(key="experiments_cancel").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert runs.read_status(runs.RunFolder(env / "models" / "trial-queued"))["state"] == "cancelled"
    assert store.cancel_requested(sweep)
    assert any(f"Cancelled {sweep.id}" in shown(s) for s in at.success)
    assert "view test — cancelled" in " ".join(shown(m) for m in at.markdown)

    started = []
    monkeypatch.setattr(worker, "start_workers", lambda *args, **kw: started.append(args) or [1])
    at.button(key="experiments_resume").click().run()
    assert not at.exception
    assert started and started[0][0].id == sweep.id

    at.button(key="experiments_open_best").click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Review"]
    assert at.query_params["run"] in (["trial-done"], "trial-done")


def test_choice_values_in_optuna_figures_are_escaped():
    from app import experiments_ui

    figure = {"data": [{"type": "parcoords", "dimensions": [{"label": "specs", "ticktext": ["<b>mine</b>", "light"]}]}]}
    dims = experiments_ui.escape_figure(figure)["data"][0]["dimensions"][0]
    assert dims["ticktext"] == ["&lt;b&gt;mine&lt;/b&gt;", "light"] and dims["label"] == "specs"


@pytest.mark.slow
def test_a_plan_made_on_the_page_runs_its_trials_and_opens_the_best_in_review(env):
    at = open_page()
    tiny_base(at)
    at.selectbox(key="experiments_sampler").set_value("grid")
    at.checkbox(key="experiments_vary_epochs").check().run()
    at.number_input(key="experiments_epochs_high").set_value(2)
    at.number_input(key="experiments_trials").set_value(2).run()
    assert not at.error, [e.value for e in at.error]
    at.button(key="experiments_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (sweep,) = store.list_sweeps(env / "models")
    try:
        deadline = time.monotonic() + 300
        while store.sweep_status(sweep)["finished"] < 2 or store.live_workers(sweep):
            assert time.monotonic() < deadline, store.sweep_status(sweep)
            time.sleep(1)
    finally:
        if store.live_workers(sweep):
            store.cancel_sweep(sweep)
    at.run()
    assert not at.exception
    table = trials_shown(at)
    assert table["state"].tolist() == ["completed", "completed"] and sorted(table["epochs"]) == ["1", "2"]
    best = store.sweep_status(sweep)["best"]
    assert runs.read_config(runs.RunFolder(best["run_path"]))["img_size"] == [32, 24]
    at.button(key="experiments_open_best").click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Review"]
    assert best["run"] in [box.value for box in at.selectbox]  # the Review page's run picker
