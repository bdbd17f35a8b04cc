"""`python -m core scan ROOT [--json] [--verify]`: the summary, the JSON object and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from core.__main__ import main
from tests.imagefactory import jpeg_bytes, write
from tests.test_datasets import make_mask_tree

from .conftest import REPO_ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_scan_json_object(tmp_path):
    root = make_mask_tree(tmp_path / "ds", missing_eval=("f" * 40 + ".jpg",))
    write(root / "train/images/000001_female_Asian_45/mask1.jpg", b"")
    result = run_cli("scan", str(root), "--json")
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["format"] == "mask"
    assert obj["n_images"] == 20
    assert len(obj["classes"]) == 18 and obj["classes"][0] == "Wear · Male · <30"
    assert sum(obj["class_counts"].values()) == 20
    assert obj["n_groups"] == 3
    assert set(obj["attribute_counts"]) == {"mask", "gender", "age"}
    assert {"path": "train/images/000001_female_Asian_45/mask1.jpg", "kind": "empty"} == {
        k: v for k, v in obj["problems"][0].items() if k != "message"
    }
    assert obj["eval"] == {"rows": 2, "missing": ["f" * 40 + ".jpg"]}


def test_scan_human_summary(tmp_path, capsys):
    root = make_mask_tree(tmp_path / "ds")
    assert main(["scan", str(root / "train")]) == 0
    out = capsys.readouterr().out
    assert "images: 21" in out and "Incorrect · Female · 30-59" in out and "problems: 0" in out


def test_scan_verify(tmp_path, capsys):
    root = tmp_path / "cls"
    write(root / "a" / "1.jpg", jpeg_bytes())
    assert main(["scan", str(root), "--verify", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_images"] == 1
    assert "verified 1 images" in captured.err


def test_missing_or_empty_root_is_one_line_and_nonzero(tmp_path):
    for root in (tmp_path / "nope", tmp_path):
        result = run_cli("scan", str(root))
        assert result.returncode != 0
        assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")
        assert "Traceback" not in result.stderr
