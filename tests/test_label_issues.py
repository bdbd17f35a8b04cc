"""`python -m core label-issues` and the label-error ranking on the demo data with planted errors."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.__main__ import main
from core.data import tasks
from core.evaluation import review
from core.runs.folder import create_run_folder, write_config, write_predictions
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
    assert rows[1][0] == '\'=HYPERLINK("http://evil","x")'  # neutralised, and ranked first
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
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "no predictions" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path):
    assert main(["label-issues", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "x.csv")]) == 2


# ---- the demo data with planted label errors ---------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_demo(tmp_path_factory):
    """40 demo people (280 photos) with 10% planted label errors of the three real kinds."""
    from core.data import demo

    base = tmp_path_factory.mktemp("noisy")
    root = demo.generate(
        base / "demo", people=40, eval_people=1, seed=0, label_noise=0.1, truth=base / "truth.csv", workers=1
    )
    truth = pd.read_csv(base / "truth.csv")
    return root, truth


def simulated_out_of_sample(frame: pd.DataFrame, true_labels: np.ndarray, seed: int) -> pd.DataFrame:
    """18-class predictions of a model that never saw these images' labels (it sees the TRUE
    attributes): right on mask, gender and age with probability .95, .85, .75 (about 60% right on
    all three, as a decent CPU model), otherwise sure of a random wrong value."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    probs = np.ones((n, 18))
    for name, acc in zip(tasks.ATTRIBUTES, (0.95, 0.85, 0.75), strict=True):
        values = len(tasks.ATTRIBUTE_NAMES[name])
        truth = tasks.decode_attribute(true_labels, name)
        chosen = np.where(rng.random(n) < acc, truth, (truth + rng.integers(1, values, n)) % values)
        logits = rng.normal(0, 0.5, (n, values))
        logits[np.arange(n), chosen] += 3.0 * rng.uniform(0.5, 1.5, n)
        attr = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        probs *= attr[:, tasks.attribute_class_index(name)]
    probs /= probs.sum(axis=1, keepdims=True)
    out = frame[["path", "group", "label"]].copy()
    out["pred"] = probs.argmax(axis=1)
    out["loss"] = -np.log(probs[np.arange(n), out["label"].to_numpy()])
    for j in range(18):
        out[f"p{j}"] = probs[:, j]
    return out


def test_planted_demo_errors_rank_on_top(noisy_demo):
    from core.data import datasets

    root, truth = noisy_demo
    frame = datasets.scan(root).frame
    true_of = {str((root / p).resolve()): t for p, t in zip(truth["path"], truth["true_label"], strict=True)}
    planted = set(true_of)
    assert set(truth["kind"]) == {"gender", "age", "mask_swap"} and planted <= set(frame["path"])
    true_labels = np.array([true_of.get(p, label) for p, label in zip(frame["path"], frame["label"], strict=True)])
    random_expectation = len(planted) / len(frame)  # 32 / 280 = 0.11
    precisions, restored_shares = [], []
    for seed in range(4):
        preds = simulated_out_of_sample(frame, true_labels, seed)
        issues = review.suspected_label_errors(preds, list(tasks.CLASS_NAMES), "class")
        precisions.append(review.precision_at_k(issues["path"], planted))
        # The suggestion restores the true label for most planted errors near the top.
        top = issues.head(len(planted))
        hits = top[top["path"].isin(planted)]
        restored = (hits["suggested"].to_numpy() == np.array([true_of[p] for p in hits["path"]])).mean()
        restored_shares.append(restored)
    # Measured: 0.66, 0.91, 0.91, 0.88. A random ranking reaches 0.5 with probability < 1e-9.
    assert min(precisions) >= 0.5 and np.mean(precisions) >= 5 * random_expectation, precisions
    print("precision at K", precisions, "restored", restored_shares)
    assert min(restored_shares) >= 0.6, restored_shares


@pytest.mark.slow
def test_kfold_gives_every_training_image_one_out_of_sample_prediction(demo_root, tmp_path, monkeypatch):
    from core import runs
    from core.data import datasets
    from core.specs import transforms
    from core.training.config import TrainConfig

    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    train_spec, eval_spec = transforms.preset("baseline", (32, 24))
    cfg = TrainConfig(
        data=str(demo_root),
        img_size=[32, 24],
        train_spec=train_spec,
        eval_spec=eval_spec,
        batch_size=16,
        max_steps=2,
        warmup_steps=0,
        log_every=1,
    )
    run = runs.create_run_folder(tmp_path / "models", "base")
    runs.write_config(run, {**cfg.to_dict(), "kind": "train"})
    out = tmp_path / "issues.csv"
    assert main(["label-issues", "--run", str(run.root), "--kfold", "2", "--out", str(out)]) == 0

    index = datasets.scan(demo_root).frame
    folds = [runs.read_predictions(run.root / "folds" / f"fold-{i}" / "val_predictions.parquet") for i in range(2)]
    assert sorted(pd.concat(folds)["path"]) == sorted(index["path"])  # every image exactly once
    assert set(folds[0]["group"]).isdisjoint(folds[1]["group"])  # no person in both folds
    for i in range(2):
        assert runs.read_status(runs.RunFolder(run.root / "folds" / f"fold-{i}"))["state"] == "completed"
    written = pd.read_csv(out)
    assert list(written.columns[:4]) == ["path", "label", "suggested", "score"] and len(written) == len(index)
    assert written["score"].is_monotonic_decreasing

    # A second call reuses the finished folds instead of training again.
    stamp = (run.root / "folds" / "fold-0" / "val_predictions.parquet").stat().st_mtime_ns
    again = review.label_issues(run.root, kfold=2)
    assert (run.root / "folds" / "fold-0" / "val_predictions.parquet").stat().st_mtime_ns == stamp
    assert len(again) == len(index)
