"""Image quality: planted dark, bright and blurred demo photos found; each issue's rule; draft decodes; the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from core.__main__ import main as cli_main
from core.cli.explain import image_files
from core.data import demo, demo_plants, images, quality

PLANTS = {"exact": 1, "near": 1, "dark": 5, "bright": 5, "blurry": 5}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    root = tmp_path_factory.mktemp("quality") / "demo"
    demo.generate(root, people=20, eval_people=2, seed=9)
    return root, demo_plants.plant_issues(root, seed=9, counts=PLANTS)


def all_images(root: Path) -> list[str]:
    return image_files(root)[1]  # the CLI's and the Dataset page's own list of a folder's images


def test_planted_dark_bright_and_blurred_photos_are_found(planted):
    root, rows = planted
    seen = []
    stats = quality.image_stats(all_images(root), progress=lambda d, t: seen.append((d, t)))
    flags = quality.flag_issues(stats)
    for kind in ("dark", "bright", "blurry"):
        truth = {str(root / r["path"]) for r in rows if r["kind"] == kind}
        found = set(flags.loc[flags["issue"] == kind, "path"])
        hits = len(found & truth)
        precision, recall = hits / max(1, len(found)), hits / len(truth)
        assert precision >= 0.9 and recall >= 0.9, (kind, precision, recall, flags)
    assert seen[-1] == (len(stats), len(stats))
    assert list(flags.columns) == ["path", "issue", "score"]
    assert flags["score"].is_monotonic_decreasing and (flags["score"] >= 2.0).all()  # worst first, past a threshold


def uniform_set(n: int = 30, size=(48, 64)) -> list[np.ndarray]:
    """Colourful, sharp, similar pictures: the "normal" photos of a small dataset."""
    rng = np.random.default_rng(5)
    pictures = []
    for _ in range(n):
        blocks = rng.integers(40, 220, size=(8, 6, 3)).astype(np.uint8)
        arr = np.kron(blocks, np.ones((size[1] // 8, size[0] // 6, 1), dtype=np.uint8))
        pictures.append(np.clip(arr.astype(int) + rng.integers(-12, 12, arr.shape), 0, 255).astype(np.uint8))
    return pictures


def write(folder: Path, name: str, arr: np.ndarray) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(folder / name)
    return str(folder / name)


def test_each_issue_is_flagged_by_its_own_rule_and_a_clean_set_flags_nothing(tmp_path):
    pictures = uniform_set()
    paths = [write(tmp_path, f"ok{k:02d}.png", arr) for k, arr in enumerate(pictures)]
    assert quality.flag_issues(quality.image_stats(paths)).empty  # no photo is bad in a set of good ones
    base = pictures[0]
    odd = {
        "dark": (base * 0.12).astype(np.uint8),
        "bright": (255 - (255 - base.astype(float)) * 0.08).astype(np.uint8),
        "blurry": np.asarray(Image.fromarray(base).filter(ImageFilter.GaussianBlur(3))),
        "grayscale": np.repeat(np.asarray(Image.fromarray(base).convert("L"))[..., None], 3, axis=2),
        "low_information": np.full_like(base, 128),
        "odd_size": np.asarray(Image.fromarray(base).resize((16, 20))),
        "odd_aspect": np.asarray(Image.fromarray(base).resize((96, 40))),
    }
    extra = [write(tmp_path, f"{issue}.png", arr) for issue, arr in odd.items()]
    flags = quality.flag_issues(quality.image_stats(paths + extra))
    by_path = flags.groupby("path")["issue"].apply(set).to_dict()
    for issue in odd:
        assert issue in by_path.get(str(tmp_path / f"{issue}.png"), set()), (issue, flags)
    assert not (set(by_path) & set(paths)), flags  # the ordinary photos stay unflagged
    assert set(quality.ISSUES) == set(odd)


def test_robust_z_resists_outliers_and_has_a_floor():
    values = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 50.0])
    z = quality.robust_z(values, min_spread=0.01)
    assert z[-1] > 100 and abs(z[0]) < 1  # the outlier does not widen the scale for the others
    assert quality.robust_z(np.ones(5), min_spread=0.5).tolist() == [0.0] * 5
    assert quality.robust_z(np.array([1.0, 1.0, 1.0, 2.0]), min_spread=0.5)[-1] == pytest.approx(2.0)


def test_statistics_come_from_a_draft_decode_and_headers_passed_in_are_used(planted, monkeypatch):
    root, _ = planted
    paths = all_images(root)[:6]
    asked = []
    real_open = images.open_rgb

    def spying_open(path, min_size=None):
        asked.append(min_size)
        return real_open(path, min_size=min_size)

    monkeypatch.setattr(images, "open_rgb", spying_open)
    stats = quality.image_stats(paths, sizes=[(1000, 10)] * len(paths))
    assert asked == [quality.DRAFT_MIN] * len(paths)  # never a full decode of a JPEG
    assert stats["width"].tolist() == [1000] * len(paths) and stats["height"].tolist() == [10] * len(paths)
    small = quality.working_image(paths[0])
    assert max(small.shape[:2]) <= quality.WORK_SIDE and small.dtype == np.uint8


def test_unreadable_images_are_skipped(tmp_path):
    good = [write(tmp_path, f"ok{k}.png", arr) for k, arr in enumerate(uniform_set(5))]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    stats = quality.image_stats([*good, str(bad)])
    assert stats["path"].tolist() == good


def test_cli_writes_one_row_per_flagged_image_and_issue(tmp_path, capsys):
    data = tmp_path / "data"
    pictures = uniform_set()
    for k, arr in enumerate(pictures):
        write(data / "sub", f"ok{k:02d}.png", arr)
    write(data, "+dark.png", (pictures[0] * 0.1).astype(np.uint8))
    out = tmp_path / "quality.csv"
    assert cli_main(["quality", str(data), "--out", str(out)]) == 0
    table = pd.read_csv(out, dtype={"path": str, "issue": str})
    assert list(table.columns) == ["path", "issue", "score"]
    assert set(table["path"]) == {"'+dark.png"}  # relative to DATA and spreadsheet-safe
    assert "dark" in set(table["issue"]) and table["score"].is_monotonic_decreasing
    assert "1 of 31 images flagged" in capsys.readouterr().out


def test_demo_data_cli_plants_issues_on_request(tmp_path):
    from core.__main__ import main
    from core.data import demo_plants

    out = tmp_path / "demo"
    assert main(["demo-data", str(out), "--people", "8", "--eval-people", "1", "--plant-issues", "--quiet"]) == 0
    rows = demo_plants.read_truth(out / demo_plants.TRUTH_NAME)
    assert {r["kind"] for r in rows} >= {"exact", "near", "dark", "bright", "blurry"}
    assert all((out / r["path"]).is_file() for r in rows)
