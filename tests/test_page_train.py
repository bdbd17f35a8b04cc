"""The Training page through Streamlit's AppTest: form, runs table, live panel, cancel/resume, compare."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import train_ui
from core import runs
from core.runs import jobs
from tests.conftest import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGE = "app_pages/train.py"


@pytest.fixture
def env(tmp_path, monkeypatch, demo_root):
    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(demo_root.parent))
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_SPECS_DIR", str(tmp_path / "specs"))
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
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
    """The text an alert displays: the page escapes Markdown characters in user-derived text."""
    return re.sub(r"\\(.)", r"\1", element.value)


def fake_run(models: Path, run_id: str, state: str, lr: float = 1e-3, steps: int = 40, **status) -> runs.RunFolder:
    """A run folder as a training job leaves it (no training needed to test the page)."""
    run = runs.create_run_folder(models, run_id)
    runs.write_config(
        run,
        {
            "kind": "train",
            "model": "small_cnn",
            "task": "mask",
            "lr": lr,
            "batch_size": 32,
            "img_size": [64, 48],
            "train_spec": [],
            "eval_spec": [],
        },
    )
    now = time.time()
    fields = {"state": state, "started_at": now - 60, "heartbeat": now, "step": steps, "total_steps": 40, "pid": None}
    runs.write_status(run, **{**fields, **status})
    for step in range(1, steps + 1):
        record = {"step": step, "epoch": step // 20, "train_loss": 2.0 / step, "train_acc": 0.5 + step / 100}
        if step % 20 == 0:
            record.update(val_loss=1.0 / step, val_acc=0.6, val_f1=0.4 + step / 200 + lr)
        runs.append_metrics(run, record)
    runs.append_log(run, "epoch 1 done <b>not html</b>")
    return run


def test_page_renders_form_without_runs(env):
    at = open_page()
    assert at.selectbox(key="train_model").value == "small_cnn"
    assert at.button(key="train_launch")
    assert any("No runs yet" in i.value for i in at.info)


def test_bad_config_is_an_error_box_not_a_traceback(env):
    at = open_page()
    at.text_input(key="train_name").input("bad name with spaces")
    at.button(key="train_launch").click().run()
    assert not at.exception
    assert any("run name" in shown(e) for e in at.error)
    assert not list((env / "models").iterdir())


def test_runs_table_live_panel_and_compare(env):
    models = env / "models"
    fake_run(models, "run-a", "completed", lr=1e-3)
    fake_run(models, "run-b", "failed", lr=1e-2, steps=20, error="RuntimeError: boom", finished_at=time.time())
    at = open_page({"run": "run-b"})
    table = at.dataframe[0].value
    assert list(table.columns) == [
        "★",
        "name",
        "tags",
        "backbone",
        "task",
        "state",
        "progress",
        "best val macro F1",
        "duration",
        "started",
    ]
    assert set(table["name"]) == {"run-a", "run-b"}
    # The URL picked run-b: its error and log are shown, the log as text.
    assert at.selectbox(key=train_ui_key()).value == "run-b"
    assert any("RuntimeError: boom" in shown(e) for e in at.error)
    assert any("<b>not html</b>" in c.value for c in at.code)
    assert at.button(key="train_resume_run-b")
    # Curves: three charts for the selected run.
    assert len(at.get("plotly_chart")) >= 3
    # Compare two runs: the config diff shows lr only (plus scores).
    at.multiselect(key="train_compare").set_value(["run-a", "run-b"]).run()
    assert not at.exception
    diff = at.dataframe[-1].value
    assert "lr" in diff.index and "batch_size" not in diff.index
    assert "best val macro F1" in diff.index


def train_ui_key() -> str:
    return "train_run"


def test_selected_run_follows_the_url_and_back(env):
    models = env / "models"
    fake_run(models, "run-a", "completed")
    fake_run(models, "run-b", "completed")
    at = open_page({"run": "run-a"})
    assert at.selectbox(key="train_run").value == "run-a"
    at.selectbox(key="train_run").set_value("run-b").run()
    assert at.query_params["run"] == ["run-b"] or at.query_params["run"] == "run-b"


def test_dead_running_job_shows_failed_after_reconcile(env):
    run = fake_run(env / "models", "run-dead", "running", pid=999_999_999, pid_start="1")
    at = open_page()
    assert runs.read_status(run)["state"] == "failed"
    table = at.dataframe[0].value
    assert table.loc[table["name"] == "run-dead", "state"].item() == "failed"
    assert any("exited without a final state" in shown(e) for e in at.error)


def test_curve_helpers():
    import pandas as pd

    metrics = pd.DataFrame(
        [{"step": 1, "epoch": 0, "train_loss": 2.0}, {"step": 2, "epoch": 0, "train_loss": 1.0, "val_loss": 1.5}]
    )
    fig = train_ui.curve_figure({"r": metrics}, "Loss", "train_loss", "val_loss", smoothing=0.5)
    names = [t.name for t in fig.data]
    assert "train" in names and "val" in names
    assert train_ui.smooth(pd.Series([0.0, 10.0]), 0.0).tolist() == [0.0, 10.0]
    assert train_ui.eta_seconds({"step": 10, "total_steps": 30, "started_at": 100.0}, now=120.0) == 40.0
    assert train_ui.format_duration(3725) == "1:02:05"
    diff = train_ui.config_diff({"a": {"lr": 1, "x": [1]}, "b": {"lr": 2, "x": [1]}})
    assert list(diff.index) == ["lr"]


def test_long_curves_are_thinned_after_smoothing_and_keep_the_newest_step():
    import pandas as pd

    steps = range(1, 10_001)
    metrics = pd.DataFrame({"step": list(steps), "train_loss": [1.0 if s % 2 else 0.0 for s in steps]})
    fig = train_ui.curve_figure({"r": metrics}, "Loss", "train_loss", "val_loss", smoothing=0.9, max_points=500)
    raw, smoothed = fig.data  # one run: the raw line faintly, then the smoothed one
    assert 250 <= len(smoothed.x) <= 501 and smoothed.x[-1] == 10_000
    # Smoothed over all 10,000 points, then thinned: ~0.5, not the 1.0 or 0.0 a thinned-first
    # series would show (every kept step has the same parity).
    assert abs(float(smoothed.y[-1]) - 0.5) < 0.1


def test_jobs_list_is_empty_without_runs(env):
    assert jobs.list_runs().empty
    assert os.environ["WORKBENCH_MODELS_DIR"].endswith("models")


@pytest.mark.slow
def test_launch_from_the_form_watch_restart_and_cancel(env):
    at = open_page()
    at.text_input(key="train_name").input("from-page")
    at.selectbox(key="train_task").set_value("mask")
    at.number_input(key="train_h").set_value(32)
    at.number_input(key="train_w").set_value(24)
    at.number_input(key="train_batch_size").set_value(1)  # ~77 steps per epoch: still running when we look
    at.number_input(key="train_epochs").set_value(3)
    at.number_input(key="train_log_every").set_value(1)
    at.selectbox(key="train_device").set_value("cpu")
    at.button(key="train_launch").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("Launched from-page" in shown(s) for s in at.success)
    run = runs.RunFolder(env / "models" / "from-page")
    assert runs.read_config(run)["img_size"] == [32, 24]
    assert at.selectbox(key="train_run").value == "from-page"
    table = at.dataframe[0].value
    assert table.loc[table["name"] == "from-page", "state"].item() in ("queued", "running")

    # The live panel draws curves once the job has logged steps.
    def charts_shown(session: AppTest) -> bool:
        session.run()
        assert not session.exception, session.exception
        return len(session.get("plotly_chart")) >= 3

    wait_until(lambda: charts_shown(at), what="live curves")

    # An app restart: a brand-new session (no state carried over) lists the run and shows its curves.
    fresh = open_page({"run": "from-page"})
    assert fresh.selectbox(key="train_run").value == "from-page"
    assert len(fresh.get("plotly_chart")) >= 3
    if jobs.reconcile(run)["state"] == "running":
        fresh.button(key="train_cancel_from-page").click().run()
        assert not fresh.exception
        wait_until(lambda: jobs.reconcile(run)["state"] == "cancelled", what="the cancel")
        assert runs.load_checkpoint(run.last_checkpoint)["step"] > 0
        wait_until(lambda: fresh.run() and any(b.key == "train_resume_from-page" for b in fresh.button), what="Resume")


def test_saved_pair_is_offered_and_its_check_warning_shown_before_launch(env):
    from core.specs import transforms

    train_spec, eval_spec = transforms.preset("baseline", (64, 48))
    transforms.save_named_pair("cropped", [{"op": "CenterCrop", "size": [320, 256]}, *train_spec], eval_spec)
    at = open_page()
    assert not at.warning
    at.selectbox(key="train_pair").set_value("saved: cropped").run()
    assert not at.exception
    assert any("evaluation does not crop" in shown(w) for w in at.warning)
    assert any("64×48" in c.value for c in at.caption)  # the saved pair fixes the image size


# ---- tasks, the form built from TrainConfig, one read of the runs, plain-text errors (issues 11, 16) --------


def class_folder_dataset(root: Path, classes: int) -> Path:
    from tests.imagefactory import jpeg_bytes, write

    for k in range(classes):
        for i in range(2):
            write(root / f"kind{k:02d}" / f"{i}.jpg", jpeg_bytes((16, 16), (20 * k, 90, 40)))
    return root


def test_task_selector_offers_only_the_open_datasets_tasks(env, monkeypatch, demo_root):
    from core.data import tasks

    data = env / "data"
    class_folder_dataset(data / "tenkinds", 10)
    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(data))
    at = open_page()
    assert at.selectbox(key="train_task").options == ["all 10 classes"]

    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(demo_root.parent))
    at = open_page()
    options = at.selectbox(key="train_task").options
    assert options == [task.label for task in tasks.competition_tasks()] and len(options) == 4
    assert options[0] == "all 18 classes" and any(o.startswith("mask") for o in options)


def test_the_form_edits_every_train_config_field(env):
    import dataclasses

    from app import train_form
    from core.training.config import TrainConfig

    at = open_page()
    keys = {w.key for kind in ("number_input", "selectbox", "checkbox", "text_input") for w in at.get(kind)}
    scalar = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in train_form.SET_ELSEWHERE]
    assert {f"train_{name}" for name in scalar} <= keys
    assert {"train_h", "train_w", "train_pair", "train_name"} <= keys
    assert all(key.startswith("train_") for key in keys if key), sorted(keys)  # one style: <page>_<thing>


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [("train_lr", 0.0, "lr"), ("train_batch_size", 0, "batch_size"), ("train_n_folds", 1, "n_folds")],
)
def test_train_config_errors_name_the_field_and_block_the_launch(env, key, value, field):
    at = open_page()
    assert not at.error and not at.button(key="train_launch").disabled
    at.number_input(key=key).set_value(value).run()
    assert not at.exception
    assert any(shown(e).startswith(f"{field}:") for e in at.error), [e.value for e in at.error]
    assert at.button(key="train_launch").disabled  # a browser cannot press it: nothing launches


def test_the_runs_are_listed_once_per_page_run(env, monkeypatch):
    fake_run(env / "models", "run-a", "completed")
    calls = []
    real = jobs.list_runs
    monkeypatch.setattr(jobs, "list_runs", lambda *a, **k: calls.append(1) or real(*a, **k))
    at = open_page()
    calls.clear()
    at.run()
    assert not at.exception
    assert len(calls) == 1


def test_user_text_in_an_error_is_shown_literally(env):
    hostile = "boom [x](http://evil.example/) ![i](http://evil.example/i.png) **bold**"
    fake_run(env / "models", "run-h", "failed", error=hostile, finished_at=time.time())
    at = open_page({"run": "run-h"})
    (box,) = [e for e in at.error if "boom" in e.value]
    assert "](http" not in box.value and "\\[x\\]" in box.value and "\\*\\*bold" in box.value
    assert shown(box) == hostile  # every character escaped, none lost


def test_app_holds_no_class_name_literals():
    """The competition's class names live in core.data.tasks alone; the pages ask it."""
    import ast

    from core.data import tasks

    names = [*tasks.MASK_NAMES, *tasks.GENDER_NAMES, *tasks.AGE_NAMES, f"all {tasks.NUM_COMPETITION_CLASSES} classes"]
    pattern = re.compile("|".join(rf"(?<![\w<]){re.escape(n)}(?![\w+])" for n in names))
    offenders = []
    for path in sorted((REPO_ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.search(node.value):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value[:60]!r}")
    assert offenders == []


# ---- the run journal: name, tags, star, notes, archive, delete (issue 15) ---------------------------------


def table_names(at: AppTest) -> list[str]:
    return at.dataframe[0].value["name"].tolist()


def test_journal_edits_persist_and_survive_a_restart(env):
    from core.runs import journal

    run = fake_run(env / "models", "run-a", "completed")
    fake_run(env / "models", "run-b", "completed")
    at = open_page({"run": "run-a"})
    at.text_input(key="train_display_name_run-a").set_value("resnet baseline")
    at.text_input(key="train_tags_run-a").set_value("baseline, lr-sweep")
    at.button(key="train_save_journal_run-a").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.button(key="train_star_run-a").click().run()
    notes = "## Why\n\nlr 3e-3 *diverges*; <b>raw html</b> stays text"
    at.text_area(key="train_notes_run-a").set_value(notes)
    at.button(key="train_save_notes_run-a").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    entry = journal.read_journal(run)
    assert (entry["name"], entry["tags"], entry["starred"]) == ("resnet baseline", ["baseline", "lr-sweep"], True)
    assert journal.read_notes(run).strip() == notes

    # A server restart is a brand-new session: everything comes back from the run folder.
    fresh = open_page({"run": "run-a"})
    table = fresh.dataframe[0].value
    row = table[table["name"] == "resnet baseline"].iloc[0]
    assert row["★"] == "★" and row["tags"] == "baseline lr-sweep"
    assert fresh.text_input(key="train_tags_run-a").value == "baseline lr-sweep"
    assert "★ resnet baseline · run-a" in fresh.selectbox(key="train_run").options
    rendered = [m for m in fresh.markdown if "diverges" in m.value]
    assert rendered and rendered[0].value == notes  # rendered as the user's Markdown
    assert not rendered[0].proto.allow_html  # but never as HTML

    # Filters: by tag, and starred only.
    fresh.selectbox(key="train_filter_tag").set_value("lr-sweep").run()
    assert table_names(fresh) == ["resnet baseline"]
    fresh.selectbox(key="train_filter_tag").set_value("(all tags)").run()
    assert sorted(table_names(fresh)) == ["resnet baseline", "run-b"]
    fresh.toggle(key="train_filter_starred").set_value(True).run()
    assert table_names(fresh) == ["resnet baseline"]


def test_a_bad_tag_is_refused_naming_it_and_nothing_is_written(env):
    from core.runs import journal

    run = fake_run(env / "models", "run-a", "completed")
    at = open_page()
    at.text_input(key="train_tags_run-a").set_value("good bad;tag")
    at.button(key="train_save_journal_run-a").click().run()
    assert not at.exception
    assert any("bad;tag" in shown(e) for e in at.error), [e.value for e in at.error]
    assert journal.read_journal(run)["tags"] == []


def test_archive_hides_a_run_and_restore_shows_it_again(env):
    from core.runs import journal

    run = fake_run(env / "models", "run-a", "completed")
    fake_run(env / "models", "run-b", "completed")
    at = open_page({"run": "run-a"})
    at.button(key="train_archive_run-a").click().run()
    assert not at.exception
    assert journal.read_journal(run)["archived"] and run.root.is_dir()  # hidden, kept on disk
    assert table_names(at) == ["run-b"]
    assert "run-a" not in at.selectbox(key="train_run").options
    assert any("Archived run-a" in shown(i) for i in at.info)

    at.toggle(key="train_show_archived").set_value(True).run()
    assert sorted(table_names(at)) == ["run-a", "run-b"]
    at.selectbox(key="train_run").set_value("run-a").run()
    at.button(key="train_restore_run-a").click().run()
    assert not at.exception and not journal.read_journal(run)["archived"]
    at.toggle(key="train_show_archived").set_value(False).run()
    assert sorted(table_names(at)) == ["run-a", "run-b"]


def test_delete_asks_first_refuses_an_active_run_and_removes_the_folder_otherwise(env):
    active = fake_run(
        env / "models", "run-live", "running", pid=os.getpid(), pid_start=jobs.process_start_token(os.getpid())
    )
    done = fake_run(env / "models", "run-done", "completed")

    at = open_page({"run": "run-live"})
    at.button(key="train_delete_run-live").click().run()
    assert active.root.is_dir()  # the first click only asks
    assert any("cannot be undone" in shown(w) for w in at.warning)
    at.button(key="train_delete_yes_run-live").click().run()
    assert not at.exception
    assert any("cancel it before deleting" in shown(e) for e in at.error), [e.value for e in at.error]
    assert active.root.is_dir()

    at.selectbox(key="train_run").set_value("run-done").run()
    at.button(key="train_delete_run-done").click().run()
    at.button(key="train_delete_no_run-done").click().run()  # changed their mind
    assert done.root.is_dir() and not at.warning
    at.button(key="train_delete_run-done").click().run()
    at.button(key="train_delete_yes_run-done").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not done.root.exists()
    assert table_names(at) == ["run-live"]
    assert any("Deleted run-done" in shown(s) for s in at.success)


# ---- the backbone chooser (issue 12) ------------------------------------------------------------------------


def test_the_backbone_picker_offers_the_whole_zoo_and_its_facts(env):
    from core.training import zoo

    at = open_page()
    picker = at.selectbox(key="train_model")
    assert picker.value == "small_cnn"
    assert {"resnet18", "vit_b_16", "regnet_y_400mf"} <= set(picker.options)
    assert any(name.startswith("timm:") for name in picker.options)
    assert len(picker.options) > 100
    assert not [m for m in at.markdown if "Parameters" in m.value]  # the closed panel builds nothing

    at.session_state["train_facts"] = True  # open the Backbone facts expander
    at.run()
    facts = " ".join(shown(m) for m in at.markdown)
    expected = zoo.model_facts("small_cnn", (128, 96), num_classes=18)
    assert "Source: builtin" in facts and f"{expected['params'] / 1e6:.2f} M" in facts
    assert f"{expected['gflops']:.3f} GFLOPs per image at 128×96" in facts
    at.button(key="train_facts_measure").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("training" in shown(m) and "images/s" in shown(m) for m in at.markdown)

    at.selectbox(key="train_model").set_value("resnet18").run()
    facts = " ".join(shown(m) for m in at.markdown)
    assert "Source: torchvision" in facts and "ImageNet top-1: 69.8%" in facts
    assert "Default input size: 224×224" in facts and "11.19 M" in facts  # 18-class head


def test_a_fixed_size_backbone_is_told_before_launch_and_the_size_can_be_set(env):
    at = open_page()
    at.selectbox(key="train_model").set_value("vit_b_16").run()
    assert any("takes 224×224 images only" in shown(w) for w in at.warning)
    assert any(shown(e).startswith("img_size:") for e in at.error)
    assert at.button(key="train_launch").disabled
    at.button(key="train_use_fixed_size").click().run()
    assert not at.exception
    assert (at.number_input(key="train_h").value, at.number_input(key="train_w").value) == (224, 224)
    assert not any(shown(e).startswith("img_size:") for e in at.error)
    help_text = at.checkbox(key="train_pretrained").help
    assert "downloaded" in help_text and "cache" in help_text and "README" in help_text
