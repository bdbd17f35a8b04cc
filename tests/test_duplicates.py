"""Duplicates: planted exact and near copies found on demo data, pairs across people and across train/validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.__main__ import main as cli_main
from core.cli.explain import image_files
from core.data import datasets, demo, demo_plants, duplicates

PLANTS = {"exact": 4, "near": 6, "dark": 2, "bright": 2, "blurry": 2}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    """A small demo dataset (20 people) with known duplicates and quality issues planted."""
    root = tmp_path_factory.mktemp("dups") / "demo"
    demo.generate(root, people=20, eval_people=2, seed=4)
    return root, demo_plants.plant_issues(root, seed=4, counts=PLANTS)


def all_images(root: Path) -> list[str]:
    return image_files(root)[1]  # the CLI's and the Dataset page's own list of a folder's images


def precision_recall(found: set, truth: set) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(1, len(found)), hits / max(1, len(truth))


def test_planted_exact_and_near_duplicates_are_found(planted):
    root, rows = planted
    dups = duplicates.find_duplicates(all_images(root))
    for kind in ("exact", "near"):
        truth = {frozenset((str(root / r["path"]), str(root / r["source"]))) for r in rows if r["kind"] == kind}
        found = {
            frozenset(pair) for pair in dups.loc[dups["kind"] == kind, ["path_a", "path_b"]].itertuples(index=False)
        }
        precision, recall = precision_recall(found, truth)
        assert len(truth) == PLANTS[kind]
        assert precision >= 0.9 and recall >= 0.9, (kind, precision, recall, dups)
    assert list(dups.columns) == ["path_a", "path_b", "kind", "distance"]
    assert (dups.loc[dups["kind"] == "exact", "distance"] == 0).all()
    near = dups.loc[dups["kind"] == "near", "distance"]
    assert (near > 0).all() and (near <= duplicates.NEAR_DISTANCE).all()
    assert dups["distance"].is_monotonic_increasing  # closest first


def test_planted_pairs_span_two_people_and_a_split_across_them_is_leakage(planted):
    root, rows = planted
    index = datasets.scan(root)
    dups = duplicates.find_duplicates(index.frame["path"].tolist())
    person = dict(zip(index.frame["path"], index.frame["person_id"], strict=True))
    source, target = str(root / rows[0]["source"]), str(root / rows[0]["path"])
    train = [p for p in index.frame["path"] if person[p] != person[target]]
    val = [p for p in index.frame["path"] if person[p] == person[target]]  # the copy's person is validated on
    flagged = duplicates.flag_pairs(dups, index.frame, train_paths=train, val_paths=val)
    assert flagged["different_people"].all()  # every plant copies a photo into another person's folder
    pair = flagged[(flagged["path_a"].isin([source, target])) & (flagged["path_b"].isin([source, target]))]
    assert pair["leakage"].tolist() == [True]
    # the same split applied only inside the training people: no leakage
    assert not duplicates.flag_pairs(dups, index.frame, train_paths=train + val, val_paths=[])["leakage"].any()


def write_png(path: Path, arr: np.ndarray, compress: int = 6) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, "PNG", compress_level=compress)
    return str(path)


def test_exact_needs_the_same_bytes_and_near_the_same_picture(tmp_path):
    rng = np.random.default_rng(0)
    picture = np.kron(rng.integers(0, 255, (8, 6, 3), dtype=np.uint8), np.ones((8, 8, 1), dtype=np.uint8))
    a = write_png(tmp_path / "a.png", picture)
    b = str(tmp_path / "b.png")
    shutil.copyfile(a, b)
    c = write_png(tmp_path / "c.png", picture, compress=0)  # same pixels, other bytes
    d = write_png(tmp_path / "d.png", rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))  # unrelated
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n nonsense")
    dups = duplicates.find_duplicates([a, b, c, d, str(broken)])
    assert dups.loc[dups["kind"] == "exact", ["path_a", "path_b"]].values.tolist() == [[a, b]]
    near = {frozenset(p) for p in dups.loc[dups["kind"] == "near", ["path_a", "path_b"]].itertuples(index=False)}
    assert near == {frozenset((a, c)), frozenset((b, c))}
    assert d not in set(dups["path_a"]) | set(dups["path_b"])
    assert duplicates.duplicate_groups(dups) == [sorted([a, b, c])]
    assert duplicates.content_hashes([a, b, str(tmp_path / "missing.png")])[2] is None
    assert len(duplicates.find_duplicates([a, b, c], near_distance=0)) == 1  # exact only
    hashes = duplicates.content_hashes([a, b, c])
    assert duplicates.find_duplicates([a, b, c], hashes=hashes).equals(duplicates.find_duplicates([a, b, c]))


def test_different_people_uses_the_person_id_and_needs_both_photos_indexed():
    dups = pd.DataFrame(
        {
            "path_a": ["x/1.jpg", "x/1.jpg", "y/1.jpg"],
            "path_b": ["x/2.jpg", "z/1.jpg", "q/9.jpg"],
            "kind": "exact",
            "distance": 0.0,
        }
    )
    index = pd.DataFrame({"path": ["x/1.jpg", "x/2.jpg", "z/1.jpg", "y/1.jpg"], "person_id": ["7", "7", "8", "9"]})
    flagged = duplicates.flag_pairs(dups, index)
    assert flagged["different_people"].tolist() == [False, True, False]
    assert not flagged["leakage"].any()


def test_cli_writes_relative_spreadsheet_safe_rows(tmp_path, capsys):
    rng = np.random.default_rng(1)
    picture = np.kron(rng.integers(0, 255, (8, 6, 3), dtype=np.uint8), np.ones((8, 8, 1), dtype=np.uint8))
    data = tmp_path / "data"
    write_png(data / "=cmd.png", picture)
    write_png(data / "sub" / "copy.png", picture)
    write_png(data / "other.png", rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))
    (data / "._copy.png").write_bytes(b"AppleDouble junk")
    out = tmp_path / "duplicates.csv"
    assert cli_main(["duplicates", str(data), "--out", str(out)]) == 0
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["path_a", "path_b", "kind", "distance"]
    assert table.values.tolist() == [["'=cmd.png", "sub/copy.png", "exact", "0.0"]]
    assert "1 exact and 0 near-duplicate pairs among 3 images" in capsys.readouterr().out
    assert cli_main(["duplicates", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
