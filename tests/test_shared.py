"""The shared plumbing: atomic writes, paths kept inside roots, run-folder format, CLI errors."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core import fsutil, runs, settings
from core.errors import CheckpointError, RunError, UnsafePathError

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_resolve_inside_refuses_dotdot_absolute_and_links_out(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (root / "link").symlink_to(outside)
    assert fsutil.resolve_inside(root, "a") == (root / "a").resolve()
    for bad in ["../outside.txt", str(outside), "link", "a/../../outside.txt"]:
        with pytest.raises(UnsafePathError, match="outside"):
            fsutil.resolve_inside(root, bad)
    assert not fsutil.is_inside(root, "../x")


def test_atomic_write_keeps_old_file_and_no_temp_on_failure(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def failing(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        fsutil.atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
    fsutil.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_read_json_tolerates_missing_and_half_written(tmp_path):
    assert fsutil.read_json(tmp_path / "nope.json", default={}) == {}
    half = tmp_path / "half.json"
    half.write_text('{"state": "runn')
    assert fsutil.read_json(half, default=None) is None


@pytest.mark.parametrize(
    ("cell", "safe"),
    [('=HYPERLINK("x")', '\'=HYPERLINK("x")'), ("+1", "'+1"), ("-2", "'-2"), ("@SUM", "'@SUM"), ("ok", "ok"), (3, 3)],
)
def test_spreadsheet_safe(cell, safe):
    assert fsutil.spreadsheet_safe(cell) == safe


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "3")
    s = settings.load()
    assert s.data_roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert s.max_jobs == 3
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "many")
    with pytest.raises(Exception, match="WORKBENCH_MAX_JOBS"):
        settings.load()


def test_run_folder_is_exclusive_and_names_are_checked(tmp_path):
    run = runs.create_run_folder(tmp_path, "first")
    assert run.root.is_dir()
    with pytest.raises(RunError, match="already exists"):
        runs.create_run_folder(tmp_path, "first")
    for bad in ["../x", "a/b", ".hidden", "x" * 101]:
        with pytest.raises(RunError, match="not allowed"):
            runs.create_run_folder(tmp_path, bad)


def test_status_config_and_metrics_round_trip(tmp_path):
    run = runs.create_run_folder(tmp_path, "r1")
    runs.write_config(run, {"kind": "train", "model": "small_cnn"})
    assert runs.read_config(run)["model"] == "small_cnn"
    assert runs.read_status(run)["state"] == "queued"
    runs.write_status(run, state="running", pid=123)
    status = runs.write_status(run, step=5)
    assert status == {"state": "running", "pid": 123, "step": 5}
    with pytest.raises(ValueError):
        runs.write_status(run, state="exploded")
    runs.append_metrics(run, {"step": 1, "epoch": 0, "train_loss": 2.0})
    runs.append_metrics(run, {"step": 2, "epoch": 0, "train_loss": 1.5})
    with open(run.metrics, "a") as fh:
        fh.write('{"step": 3, "ep')  # a writer caught mid-line
    frame = runs.read_metrics(run)
    assert list(frame["train_loss"]) == [2.0, 1.5]
    assert [r.id for r in runs.list_run_folders(tmp_path)] == ["r1"]


def test_checkpoint_round_trip_and_pickle_refused(tmp_path):
    import pickle

    import torch

    path = tmp_path / "ck.pt"
    runs.save_checkpoint(path, {"model": {"w": torch.ones(2)}, "step": 3})
    loaded = runs.load_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2))

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointError, match="refused"):
        runs.load_checkpoint(evil)
    assert not marker.exists()


def test_predictions_round_trip(tmp_path):
    frame = pd.DataFrame({"path": ["a", "b"], "label": [0, 1], "pred": [0, 0], "p0": [0.9, 0.6], "p1": [0.1, 0.4]})
    runs.write_predictions(tmp_path / "p.parquet", frame)
    back = runs.read_predictions(tmp_path / "p.parquet")
    assert runs.probability_columns(back) == ["p0", "p1"]
    assert back["pred"].tolist() == [0, 0]
    with pytest.raises(RunError, match="no predictions"):
        runs.read_predictions(tmp_path / "missing.parquet")


def test_cli_user_error_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "core", "scan", str(tmp_path / "does-not-exist")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: ")


def test_cli_help_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "core", "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ["demo-data", "scan", "check-spec", "train", "label-issues", "predict", "validate-submission"]:
        assert command in proc.stdout
