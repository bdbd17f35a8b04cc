"""`python -m core scan ROOT [--json] [--verify]`: the summary, the JSON object and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.__main__ import main
from tests.imagefactory import jpeg_bytes, write
from tests.test_datasets import make_mask_tree

from .conftest import REPO_ROOT


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """`scan` keeps its index under the cache folder: each test gets its own (subprocesses inherit it)."""
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))


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


def test_scan_uses_the_index_and_rescan_forces_a_full_scan(tmp_path, monkeypatch, capsys):
    from core.data import images

    calls = []
    real = images.read_header
    monkeypatch.setattr(images, "read_header", lambda path: calls.append(path) or real(path))
    root = make_mask_tree(tmp_path / "ds")
    assert main(["scan", str(root)]) == 0
    assert len(calls) == 21 and (tmp_path / "cache" / "index").is_dir()
    assert main(["scan", str(root), "--json"]) == 0
    assert len(calls) == 21  # reopened from the index
    assert main(["scan", str(root), "--rescan"]) == 0
    assert len(calls) == 42
    assert "images: 21" in capsys.readouterr().out


def test_capped_problems_are_counted_in_the_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_MAX_PROBLEMS", "3")
    write(tmp_path / "m" / "a.jpg", jpeg_bytes())
    rows = "".join(f"gone{i}.jpg,cat\n" for i in range(30))
    write(tmp_path / "m" / "list.csv", f"path,label\na.jpg,cat\n{rows}".encode())
    assert main(["scan", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "problems: 30" in out and "and 27 more problems" in out


def test_a_nul_byte_in_a_manifest_is_reported_not_a_traceback(tmp_path):
    write(tmp_path / "m" / "a.jpg", jpeg_bytes())
    write(tmp_path / "m" / "list.csv", b"path,label\na.jpg,cat\nb\x00.jpg,cat\n")
    result = run_cli("scan", str(tmp_path / "m" / "list.csv"), "--json", "--rescan")
    assert result.returncode == 0, result.stderr
    assert [p["kind"] for p in json.loads(result.stdout)["problems"]] == ["bad_row"]
