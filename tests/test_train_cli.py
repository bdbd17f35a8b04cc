"""``python -m core train``: run folders from flags or a config file, overrides, errors as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from core import runs
from core.__main__ import main
from core.training.config import TrainConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--task", "mask", "--max-steps", "2", "--img-size", "32", "24", "--batch-size", "16"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    for name, sub in (("WORKBENCH_MODELS_DIR", "models"), ("WORKBENCH_CACHE_DIR", "cache")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_command_runs_a_job_to_completion_in_a_new_run_folder(demo_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO_ROOT}
    folder = tmp_path / "models" / "cli-run"
    proc = subprocess.run(
        [sys.executable, "-m", "core", "train", "--run", str(folder), "--data", str(demo_root), *TINY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    run = runs.open_run(folder)
    assert runs.read_status(run)["state"] == "completed"
    cfg = TrainConfig.from_dict(runs.read_config(run))
    assert (cfg.task, cfg.max_steps, cfg.img_size, cfg.batch_size) == ("mask", 2, [32, 24], 16)
    assert cfg.eval_spec[0] == {**cfg.eval_spec[0], "op": "Resize", "size": [32, 24]}
    assert runs.load_checkpoint(run.best_checkpoint)["step"] == 2
    assert "completed" in proc.stdout


def test_config_file_makes_a_run_folder_and_flags_override_it(demo_root, tmp_path):
    cfg_file = tmp_path / "cfg.json"
    base = TrainConfig(data=str(demo_root), task="gender", seed=3).to_dict()
    cfg_file.write_text(json.dumps(base))
    assert main(["train", "--config", str(cfg_file), *TINY]) == 0
    (folder,) = runs.list_run_folders(tmp_path / "models")
    cfg = runs.read_config(folder)
    assert cfg["kind"] == "train" and cfg["task"] == "mask" and cfg["seed"] == 3 and cfg["img_size"] == [32, 24]
    assert runs.read_status(folder)["state"] == "completed"

    # Rerunning the finished folder resumes from its checkpoint: nothing more to do, still completed.
    assert main(["train", "--run", str(folder.root)]) == 0
    # Changing a finished run's config would make its checkpoint lie: refused with a one-line error.
    assert main(["train", "--run", str(folder.root), "--lr", "0.1"]) == 2
    # Where and how fast it runs may change (e.g. resuming with mixed precision or more processes).
    assert main(["train", "--run", str(folder.root), "--amp", "bf16", "--workers", "0"]) == 0
    assert runs.read_config(folder)["amp"] == "bf16"


def test_bad_flags_and_files_are_one_line_errors(demo_root, tmp_path, capsys):
    assert main(["train", "--run", str(tmp_path / "models" / "x"), "--data", str(demo_root), "--lr", "-1"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: lr:")
    (tmp_path / "bad.json").write_text(json.dumps({"epochs": 1, "optimiser": "sgd"}))
    assert main(["train", "--config", str(tmp_path / "bad.json")]) == 2
    assert "optimiser: unknown config field" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "--run" in capsys.readouterr().err
