"""`python -m core label-issues` and the label-error ranking on the demo data with planted errors."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pandas as pd

from core.__main__ import main
from core.runs import create_run_folder, write_config, write_predictions
from tests.conftest import REPO_ROOT


def write_run(parent, frame: pd.DataFrame, classes: list[str], task: str = "class"):
    run = create_run_folder(parent, "run1")
    write_config(run, {"kind": "train", "task": task, "classes": classes})
    write_predictions(run.val_predictions, frame)
    return run


def crafted_frame() -> pd.DataFrame:
    probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    frame = pd.DataFrame(
        {
            "path": ['=HYPERLINK("http://evil","x")', "/d/b.jpg", "/d/c.jpg"],
            "group": ["a", "b", "c"],
            "label": [0, 0, 1],
            "pred": probs.argmax(axis=1),
            "loss": [2.3, 0.2, 0.36],
        }
    )
    for j in range(2):
        frame[f"p{j}"] = probs[:, j]
    return frame


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_cli_writes_a_ranked_spreadsheet_safe_csv(tmp_path, capsys):
    run = write_run(tmp_path, crafted_frame(), ["cat", "+dog"])
    out = tmp_path / "issues.csv"
    assert main(["label-issues", "--run", str(run.root), "--out", str(out), "--top", "2"]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0][:4] == ["path", "label", "suggested", "score"]
    assert rows[1][0] == "'=HYPERLINK(\"http://evil\",\"x\")"  # neutralised, and ranked first
    assert rows[1][1:3] == ["0", "1"]
    assert [float(r[3]) for r in rows[1:]] == sorted((float(r[3]) for r in rows[1:]), reverse=True)
    text_cells = [cell for row in rows for cell in row if not is_number(cell)]
    assert "'+dog" in text_cells and not [c for c in text_cells if c.startswith(("=", "+", "-", "@"))]
    assert "wrote 3 rows" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".issues.csv")]  # no temp file left


def test_cli_reports_a_run_without_predictions_in_one_line(tmp_path):
    run = create_run_folder(tmp_path, "empty")
    write_config(run, {"kind": "train", "task": "class", "classes": ["a", "b"]})
    proc = subprocess.run(
        [sys.executable, "-m", "core", "label-issues", "--run", str(run.root), "--out", str(tmp_path / "x.csv")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "no predictions" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path):
    assert main(["label-issues", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "x.csv")]) == 2
