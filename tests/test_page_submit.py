"""The Submission page through AppTest: launch a prediction job, see it complete, download; import a checkpoint."""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core import runs
from core.evaluation import submission
from tests.conftest import browse_to
from tests.test_infer import make_eval, make_run

REPO_ROOT = Path(__file__).resolve().parent.parent
APP = str(REPO_ROOT / "app" / "main.py")


@pytest.fixture
def env(tmp_path, monkeypatch):
    def configure(data_root: Path) -> dict[str, Path]:
        paths = {"models": tmp_path / "work" / "models", "subs": tmp_path / "work" / "submissions"}
        monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(data_root))
        monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(paths["models"]))
        monkeypatch.setenv("WORKBENCH_SUBMISSIONS_DIR", str(paths["subs"]))
        monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "work" / "cache"))
        return paths

    return configure


def shown(element) -> str:
    """The text an alert displays: the page escapes Markdown characters in user-derived text."""
    return re.sub(r"\\(.)", r"\1", element.value)


def open_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/submit.py")
    at.run()
    assert not at.exception, at.exception
    return at


def history_table(at: AppTest) -> pd.DataFrame:
    """The "Earlier submissions" table (the one with an id column)."""
    (table,) = [d.value for d in at.dataframe if "id" in d.value.columns]
    return table


def wait_until_done(at: AppTest, subs: Path, timeout: float = 180) -> dict:
    """Rerun the page (its live panel reads status.json) until the one job reaches a final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (job,) = [p for p in subs.iterdir() if p.is_dir()]
        status = runs.read_status(runs.RunFolder(job))
        if status.get("state") in runs.FINAL_STATES:
            at.run()
            return status
        at.run()
        assert not at.exception, at.exception
        time.sleep(0.5)
    raise AssertionError(f"prediction job did not finish: {runs.tail(job / 'job.log')}")


def test_launch_complete_download(demo_root, env):
    paths = env(demo_root.parent)
    make_run(paths["models"], "r1")
    at = open_page()
    assert at.text_input(key="submit_data").value == str(demo_root / "eval")
    assert at.multiselect(key="submit_runs").value == ["r1"]
    at.toggle(key="submit_tta").set_value(True)
    at.form_submit_button[0].click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    status = wait_until_done(at, paths["subs"])
    assert status["state"] == "completed", status
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(b.label == "Download submission.csv" for b in at.download_button)
    assert any("Valid" in s.value for s in at.success)
    (job,) = [p for p in paths["subs"].iterdir() if p.is_dir()]
    assert submission.validate_submission(job / "submission.csv", demo_root / "eval" / "info.csv") == []
    assert runs.read_config(runs.RunFolder(job))["tta"] is True
    assert job.name in history_table(at)["id"].tolist()


def test_missing_eval_image_shown_by_name(tmp_path, env):
    data_root = tmp_path / "data"
    make_eval(data_root / "tiny" / "eval", n=3)
    gone = pd.read_csv(data_root / "tiny" / "eval" / "info.csv")["ImageID"].iloc[1]
    os.remove(data_root / "tiny" / "eval" / "images" / gone)
    paths = env(data_root)
    make_run(paths["models"], "r1")
    at = open_page()
    at.form_submit_button[0].click()
    at.run()
    status = wait_until_done(at, paths["subs"])
    assert status["state"] == "failed"
    assert any(gone in shown(e) for e in at.error)
    assert not at.download_button
    assert not at.exception


def test_import_form(tmp_path, env):
    from core.training import models

    data_root = tmp_path / "data"
    make_eval(data_root / "tiny" / "eval", n=2)
    paths = env(data_root)
    at = open_page()
    assert any("No runs with a checkpoint" in i.value for i in at.info)

    buf = io.BytesIO()
    torch.save(models.build_model("small_cnn", 3).state_dict(), buf)
    at.file_uploader(key="submit_import_file").upload("weights.pt", buf.getvalue())
    at.selectbox(key="submit_import_model").set_value("small_cnn")
    assert at.selectbox(key="submit_import_task").options[0] == "all 18 classes"
    at.selectbox(key="submit_import_task").set_value("class")  # wrong: the weights have 3 classes
    at.text_input(key="submit_import_name").set_value("mine")
    at.form_submit_button[-1].click()
    at.run()
    assert any("class" in shown(e) for e in at.error), [e.value for e in at.error]
    assert not (paths["models"] / "mine").exists()

    at.file_uploader(key="submit_import_file").upload("weights.pt", buf.getvalue())
    at.selectbox(key="submit_import_task").set_value("mask")
    at.text_input(key="submit_import_name").set_value("mine")
    at.form_submit_button[-1].click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert runs.read_status(runs.RunFolder(paths["models"] / "mine"))["state"] == "completed"
    at.run()
    assert "mine" in at.multiselect(key="submit_runs").options[0]


@pytest.mark.browser
def test_browser_predict_download_and_validate(demo_root, app_server_factory, new_page, tmp_path):
    """A real browser: predict the demo eval set, download submission.csv, and validate the file."""
    from tests.conftest import wait_for_app

    make_run(tmp_path / "models", "browser-run")
    server = app_server_factory(demo_root.parent)
    page, watch = new_page()
    browse_to(page, server.url, "Submission")  # through the sidebar; waits for the title
    page.get_by_role("button", name="Predict").click()
    page.get_by_text("started").first.wait_for()
    download_button = page.get_by_role("button", name="Download submission.csv")
    download_button.wait_for(timeout=180_000)
    wait_for_app(page)
    with page.expect_download() as info:
        download_button.click()
    saved = tmp_path / "downloaded.csv"
    info.value.save_as(saved)
    watch.screenshot("submit-completed")
    # main.py's material page icon is fetched from fonts.gstatic.com, which an offline machine cannot resolve
    watch.errors[:] = [e for e in watch.errors if "ERR_NAME_NOT_RESOLVED" not in e]
    watch.assert_clean()
    assert submission.validate_submission(saved, demo_root / "eval" / "info.csv") == []
    assert pd.read_csv(saved)["ImageID"].tolist() == pd.read_csv(demo_root / "eval" / "info.csv")["ImageID"].tolist()


def completed_job(subs: Path, classes: list[str], counts: list[int]) -> Path:
    """A finished prediction job as ``predict --job`` leaves it (no model needed to test the page)."""
    job = runs.create_run_folder(subs, "sub-fake")
    runs.write_config(job, {"kind": "predict", "runs": [], "tta": False, "data": str(subs)})
    runs.write_status(job, state="completed")
    (job.root / "submission.csv").write_text(
        "ImageID,ans\n" + "".join(f"{i}.jpg,{i % 2}\n" for i in range(sum(counts)))
    )
    summary = {"images": sum(counts), "classes": classes, "counts": counts, "task": "class", "runs": []}
    (job.root / "submission.summary.json").write_text(json.dumps(summary))
    return job.root


def test_class_names_in_the_distribution_chart_are_escaped(tmp_path, env):
    evil = '<a href="http://evil.example">cat</a>'
    data_root = tmp_path / "data"
    make_eval(data_root / "tiny" / "eval", n=2)
    paths = env(data_root)
    completed_job(paths["subs"], [evil, "dog"], [1, 1])
    at = open_page()
    assert not at.exception, at.exception
    (chart,) = [c for c in at.get("plotly_chart") if "distribution" in c.proto.spec]
    spec = chart.proto.spec
    assert "<a href" not in spec and "&lt;a href=" in json.dumps(json.loads(spec)["data"][0]["x"])


def test_relative_eval_folder_is_read_inside_the_data_root(tmp_path, env, monkeypatch):
    """ "secret" names data/secret (absent), never ./secret in the server's working directory."""
    from app import submit_ui

    data_root = tmp_path / "data"
    make_eval(data_root / "tiny" / "eval", n=2)
    cwd = tmp_path / "server"
    make_eval(cwd / "secret", n=2)
    monkeypatch.chdir(cwd)
    paths = env(data_root)
    assert submit_ui.resolve_eval_folder("tiny/eval") == (data_root / "tiny" / "eval").resolve()
    assert submit_ui.resolve_eval_folder("secret") == (data_root / "secret").resolve()
    with pytest.raises(Exception, match="inside the data roots"):
        submit_ui.resolve_eval_folder("../server/secret")

    make_run(paths["models"], "r1")
    at = open_page()
    at.text_input(key="submit_data").set_value("secret")
    at.form_submit_button[0].click()
    at.run()
    assert not at.exception
    assert any("secret" in shown(e) for e in at.error), [e.value for e in at.error]
    jobs = [p for p in paths["subs"].iterdir() if p.is_dir()] if paths["subs"].exists() else []
    assert jobs == []  # nothing predicts the server's own folder

    at.text_input(key="submit_data").set_value("tiny/eval")
    at.form_submit_button[0].click()
    at.run()
    assert not at.error, [e.value for e in at.error]
    (job,) = [p for p in paths["subs"].iterdir() if p.is_dir()]
    assert runs.read_config(runs.RunFolder(job))["data"] == str((data_root / "tiny" / "eval").resolve())
    status = wait_until_done(at, paths["subs"])
    assert status["state"] == "completed", status  # and leaves no job running


def test_formula_like_ids_are_kept_and_warned_about(tmp_path, env):
    data_root = tmp_path / "data"
    eval_dir = data_root / "tiny" / "eval"
    make_eval(eval_dir, n=3)
    info = pd.read_csv(eval_dir / "info.csv", dtype=str)
    old = info.loc[0, "ImageID"]
    info.loc[0, "ImageID"] = "=HYPERLINK.jpg"
    os.rename(eval_dir / "images" / old, eval_dir / "images" / "=HYPERLINK.jpg")
    info.to_csv(eval_dir / "info.csv", index=False)
    paths = env(data_root)
    make_run(paths["models"], "r1")
    at = open_page()
    at.form_submit_button[0].click()
    at.run()
    assert wait_until_done(at, paths["subs"])["state"] == "completed"
    assert any("=HYPERLINK.jpg" in shown(w) for w in at.warning), [w.value for w in at.warning]
    (job,) = [p for p in paths["subs"].iterdir() if p.is_dir()]
    assert pd.read_csv(job / "submission.csv", dtype=str)["ImageID"].iloc[0] == "=HYPERLINK.jpg"  # exact id kept


# ---- CLI-written submissions and leaderboard scores beside validation (issue 15) ----------------------------


def test_cli_submission_is_listed_and_a_recorded_score_joins_validation_and_the_csv(tmp_path, env, monkeypatch):
    from core.__main__ import main
    from core.evaluation import leaderboard

    data_root = tmp_path / "data"
    make_eval(data_root / "tiny" / "eval", n=3)
    paths = env(data_root)
    run = runs.RunFolder(make_run(paths["models"], "r1"))
    runs.append_metrics(run, {"step": 10, "epoch": 1, "val_f1": 0.62, "val_acc": 0.7, "val_loss": 1.0})
    out = paths["subs"] / "cli-sub" / "submission.csv"
    assert main(["predict", "--run", str(run.root), "--data", str(data_root / "tiny" / "eval"), "--out", str(out)]) == 0
    offered = []
    real = leaderboard.to_csv_text
    monkeypatch.setattr(leaderboard, "to_csv_text", lambda frame: offered.append(real(frame)) or offered[-1])

    at = open_page()
    assert not any("No submissions yet" in i.value for i in at.info)
    history = history_table(at)
    assert history["id"].tolist() == ["cli-sub"] and history["source"].tolist() == ["cli"]
    assert any("Valid" in s.value for s in at.success)  # the CLI's file is shown like a job's
    assert any(b.label == "Download submission.csv" for b in at.download_button)

    at.number_input(key="submit_leaderboard_public").set_value(0.71)
    at.button(key="submit_leaderboard_record").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert leaderboard.read_scores(out.parent)["public"] == 0.71

    def joined_row(session: AppTest) -> pd.Series:
        (table,) = [d.value for d in session.dataframe if "public LB" in d.value.columns]
        assert len(table) == 1
        return table.iloc[0]

    row = joined_row(at)
    assert (row["submission"], row["run"], row["run val F1"], row["public LB"]) == ("cli-sub", "r1", 0.62, 0.71)
    csv = pd.read_csv(io.StringIO(offered[-1]))
    assert csv.loc[0, "public"] == 0.71 and csv.loc[0, "val_f1"] == 0.62 and csv.loc[0, "submission"] == "cli-sub"
    assert any(b.key == "submit_leaderboard_csv" for b in at.download_button)
    (scatter,) = [c for c in at.get("plotly_chart") if "against leaderboard" in c.proto.spec]
    points = json.loads(scatter.proto.spec)["data"][0]
    assert points["x"] == [0.62] and points["y"] == [0.71]

    # The private score later keeps the public one; a new session reads both from the submission folder.
    at.number_input(key="submit_leaderboard_private").set_value(0.69)
    at.button(key="submit_leaderboard_record").click().run()
    row = joined_row(open_page())
    assert (row["public LB"], row["private LB"]) == (0.71, 0.69)


def test_leaderboard_scatter_escapes_submission_names():
    from app import leaderboard_ui

    scores = pd.DataFrame(
        {"submission": ['<a href="http://evil.example">s</a>'], "val_f1": [0.5], "public": [0.6], "private": [None]}
    )
    figure = leaderboard_ui.scatter_figure(scores)
    assert figure.data[0].text == ('&lt;a href="http://evil.example"&gt;s&lt;/a&gt;',)
    assert leaderboard_ui.scatter_figure(scores.assign(public=None)) is None  # nothing scored: no chart
