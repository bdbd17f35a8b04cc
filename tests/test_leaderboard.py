"""Leaderboard scores kept beside submissions, joined to their runs' validation F1, exported as CSV."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from core import runs
from core.__main__ import main
from core.errors import SubmissionError
from core.evaluation import leaderboard


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("WORKBENCH_SUBMISSIONS_DIR", str(tmp_path / "submissions"))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def trained_run(env: Path, name: str, val_f1s: list[float]) -> runs.RunFolder:
    run = runs.create_run_folder(env / "models", name)
    runs.write_config(run, {"kind": "train", "model": "small_cnn", "task": "class"})
    runs.write_status(run, state="completed")
    for epoch, f1 in enumerate(val_f1s, start=1):
        runs.append_metrics(run, {"step": epoch * 10, "epoch": epoch, "train_loss": 1.0})
        runs.append_metrics(run, {"step": epoch * 10, "epoch": epoch, "val_loss": 1.0, "val_acc": 0.5, "val_f1": f1})
    return run


def cli_submission(env: Path, name: str, run_folders: list[runs.RunFolder]) -> Path:
    """What ``predict --out submissions/<name>/submission.csv`` leaves: the CSV and its summary, no config."""
    folder = env / "submissions" / name
    folder.mkdir(parents=True)
    (folder / "submission.csv").write_text("ImageID,ans\na.jpg,0\n")
    summary = {"kind": "eval", "runs": [{"run": r.id, "path": str(r.root)} for r in run_folders], "tta": False,
               "images": 1, "validator": {"valid": True, "problems": []}, "created_at": 1000.0}  # fmt: skip
    (folder / "submission.summary.json").write_text(json.dumps(summary))
    return folder


def job_submission(env: Path, run_folders: list[runs.RunFolder]) -> runs.RunFolder:
    """A page-launched prediction job that has not run yet (config.json of kind predict, no CSV)."""
    folder = runs.create_run_folder(env / "submissions", "sub-job")
    runs.write_config(folder, {"kind": "predict", "runs": [str(r.root) for r in run_folders], "tta": True, "data": "x"})
    runs.write_status(folder, state="queued")
    return folder


def test_scores_recorded_appear_in_the_joined_table_and_the_csv(env, capsys):
    a = trained_run(env, "run-a", [0.5, 0.7, 0.6])
    b = trained_run(env, "run-b", [0.8])
    cli_submission(env, "ensemble", [a, b])
    cli_submission(env, "single", [a])
    job_submission(env, [b])

    assert main(["leaderboard", "record", "ensemble", "--public", "0.71"]) == 0
    assert main(["leaderboard", "record", str(env / "submissions" / "ensemble"), "--private", "0.69"]) == 0
    leaderboard.record_scores("single", public=0.64, note='=HYPERLINK("x")')

    subs = leaderboard.list_submissions().set_index("id")
    assert set(subs.index) == {"ensemble", "single", "sub-job"}
    assert subs.loc["ensemble", "source"] == "cli" and subs.loc["sub-job", "source"] == "job"
    assert subs.loc["sub-job", "runs"] == [str(b.root)] and not subs.loc["sub-job", "has_file"]

    table = leaderboard.joined_table()
    ens = table[table["submission"] == "ensemble"].set_index("run")
    assert ens.loc["run-a", "val_f1"] == pytest.approx(0.7) and ens.loc["run-b", "val_f1"] == pytest.approx(0.8)
    assert ens["submission_val_f1"].tolist() == pytest.approx([0.75, 0.75])
    assert ens["public"].tolist() == [0.71, 0.71] and ens["private"].tolist() == [0.69, 0.69]
    scores = leaderboard.submission_scores().set_index("submission")
    assert scores.loc["single", "val_f1"] == pytest.approx(0.7) and scores.loc["single", "public"] == 0.64

    out = env / "board.csv"
    assert main(["leaderboard", "show", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0.7100" in printed and "run-b" in printed
    text = out.read_text()
    csv = pd.read_csv(io.StringIO(text))
    row = csv[(csv["submission"] == "ensemble") & (csv["run"] == "run-b")].iloc[0]
    assert row["val_f1"] == pytest.approx(0.8) and row["public"] == 0.71 and row["private"] == 0.69
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text  # a note never runs as a formula


def test_a_private_score_keeps_the_public_one_and_bad_scores_are_refused(env, capsys):
    cli_submission(env, "s", [])
    leaderboard.record_scores("s", public=0.7)
    leaderboard.record_scores("s", private=0.65)
    assert {k: v for k, v in leaderboard.read_scores(env / "submissions" / "s").items() if not k.endswith("_at")} == {
        "public": 0.7,
        "private": 0.65,
    }
    with pytest.raises(SubmissionError, match="between 0 and 1"):
        leaderboard.record_scores("s", public=71)
    assert main(["leaderboard", "record", "missing", "--public", "0.5"]) == 2
    assert "no submission.csv there" in capsys.readouterr().err
    assert main(["leaderboard", "record", "s"]) == 2


def test_a_deleted_run_shows_as_missing(env):
    gone = trained_run(env, "gone", [0.4])
    cli_submission(env, "s", [gone])
    import shutil

    shutil.rmtree(gone.root)
    row = leaderboard.joined_table().iloc[0]
    assert row["run"] == "gone" and row["run_state"] == "missing" and pd.isna(row["val_f1"])


@pytest.mark.slow
def test_a_submission_written_by_predict_out_is_listed_with_its_run(env, demo_root):
    """The real CLI path: train a tiny 18-class run, ``predict --out submissions/<name>/submission.csv``."""
    import torch

    from core.specs import transforms
    from core.training.config import TrainConfig
    from core.training.loop import run_training

    torch.set_num_threads(1)
    train, eval_ = transforms.preset("baseline", (32, 24))
    cfg = TrainConfig(
        data=str(demo_root),
        task="class",
        max_steps=2,
        batch_size=16,
        img_size=[32, 24],
        train_spec=train,
        eval_spec=eval_,
    )
    run = runs.create_run_folder(env / "models", "tiny")
    runs.write_config(run, {**cfg.to_dict(), "kind": "train"})

    class Ctx:
        def heartbeat(self, **fields) -> None:
            pass

        def cancel_requested(self) -> bool:
            return False

    run_training(run, Ctx())
    out = env / "submissions" / "from-cli" / "submission.csv"
    assert main(["predict", "--run", str(run.root), "--data", str(demo_root / "eval"), "--out", str(out)]) == 0
    subs = leaderboard.list_submissions()
    assert subs["id"].tolist() == ["from-cli"] and subs.loc[0, "source"] == "cli"
    assert [Path(p).name for p in subs.loc[0, "runs"]] == ["tiny"] and bool(subs.loc[0, "valid"])
    leaderboard.record_scores("from-cli", public=0.5)
    row = leaderboard.joined_table().iloc[0]
    assert (
        row["run"] == "tiny"
        and row["public"] == 0.5
        and row["val_f1"] == pytest.approx(leaderboard.run_best_val_f1(run.root))
    )
