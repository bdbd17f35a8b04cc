"""The demo dataset: layout, proportions, quirks, determinism, planted label errors, CLI."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from core.__main__ import main as cli_main
from core.data import demo, tasks

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = {"mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal"}
FOLDER_RE = re.compile(r"^(\d{6}(?:-\d+)?)_(male|female)_Asian_(\d+)$")
# Images per class in the real training set (COMPETITION.md).
REAL_CLASS_COUNTS = [2745, 2050, 415, 3660, 4085, 545, 549, 410, 83, 732, 817, 109, 549, 410, 83, 732, 817, 109]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def real_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("._"))


def label_from_path(rel: str) -> int:
    """The label a user reads from the file path alone (folder name + photo name)."""
    folder, photo = Path(rel).parent.name, Path(rel).stem
    _, gender, age = FOLDER_RE.match(folder).groups()
    mask = 0 if photo.startswith("mask") else 1 if photo == "incorrect_mask" else 2
    return tasks.encode_class(mask, gender == "female", tasks.age_band(int(age)))


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- layout


def test_train_layout_matches_the_competition(demo_root):
    rows = read_csv(demo_root / "train" / "train.csv")
    assert list(rows[0]) == ["id", "gender", "race", "age", "path"]
    assert len(rows) == 14
    for row in rows:
        match = FOLDER_RE.match(row["path"])
        assert match, row["path"]
        assert match.groups() == (row["id"], row["gender"], row["age"])
        assert row["race"] == "Asian"
        assert 18 <= int(row["age"]) <= 60
        folder = demo_root / "train" / "images" / row["path"]
        files = real_files(folder)
        assert {p.stem for p in files} == PHOTOS
        for path in files:
            with Image.open(path) as img:
                assert img.size == (384, 512)
                assert img.format == ("PNG" if path.suffix == ".png" else "JPEG")
    listed = {row["path"] for row in rows}
    on_disk = {p.name for p in (demo_root / "train" / "images").iterdir() if not p.name.startswith("._")}
    assert listed == on_disk


def test_eval_layout_hides_the_answers(demo_root):
    rows = read_csv(demo_root / "eval" / "info.csv")
    assert list(rows[0]) == ["ImageID", "ans"]
    assert len(rows) == 4 * 7
    assert all(re.fullmatch(r"[0-9a-f]{40}\.jpg", r["ImageID"]) for r in rows)
    assert {r["ans"] for r in rows} == {"0"}
    files = {p.name for p in (demo_root / "eval" / "images").iterdir()}
    assert files == {r["ImageID"] for r in rows}
    with Image.open(demo_root / "eval" / "images" / rows[0]["ImageID"]) as img:
        assert img.size == (384, 512)


def test_real_quirks_are_present(demo_root):
    rows = read_csv(demo_root / "train" / "train.csv")
    ids = Counter(r["id"] for r in rows)
    assert any("-" in i for i in ids), "an id with a suffix like 001498-1"
    assert any(n == 2 for n in ids.values()), "one id used by two folders"
    images = demo_root / "train" / "images"
    # AppleDouble twins beside every person folder and every photo, holding junk bytes.
    for row in rows:
        assert (images / f"._{row['path']}").is_file()
        for photo in real_files(images / row["path"]):
            twin = photo.parent / f"._{photo.name}"
            assert twin.is_file()
            assert twin.read_bytes().startswith(b"\x00\x05\x16\x07")
    # Mixed extensions inside one folder.
    mixed = [r["path"] for r in rows if len({p.suffix for p in real_files(images / r["path"])}) == 3]
    assert mixed, "some folder holds .jpg, .jpeg and .png at once"


def test_every_class_is_present_even_in_a_tiny_set(demo_root):
    rows = read_csv(demo_root / "train" / "train.csv")
    cells = {(r["gender"], tasks.age_band(int(r["age"]))) for r in rows}
    assert len(cells) == 6  # so all 18 classes exist


# ----------------------------------------------------------------------------------------- proportions


@pytest.mark.parametrize("people", [300, 2700])
def test_class_proportions_follow_the_real_data(people):
    persons = demo.plan_train(people, seed=1, label_noise=0.0)
    plans = demo.train_plans(persons, seed=1)
    counts = Counter(label_from_path(shot.relpath) for plan in plans for shot in plan.shots)
    total = sum(REAL_CLASS_COUNTS)
    for label, real in enumerate(REAL_CLASS_COUNTS):
        expected = real / total * people * 7
        assert abs(counts[label] - expected) <= max(5, 0.1 * expected), (label, counts[label], expected)
    assert sum(counts.values()) == people * 7
    ages = [p.given_age for p in persons]
    assert min(ages) == 18 and max(ages) == 60
    assert 33 <= sum(ages) / len(ages) <= 42  # the real mean is about 37.7


def test_full_competition_size_plan_matches_the_table_exactly():
    persons = demo.plan_train(2700, seed=0, label_noise=0.0)
    cells = Counter((p.given_gender, tasks.age_band(p.given_age)) for p in persons)
    assert cells == Counter(demo.REAL_PEOPLE)


def test_extension_mix_is_roughly_real():
    plans = demo.train_plans(demo.plan_train(2700, seed=0, label_noise=0.0), seed=0)
    suffixes = Counter(Path(s.relpath).suffix for plan in plans for s in plan.shots)
    n = sum(suffixes.values())
    assert 0.92 < suffixes[".jpg"] / n < 0.97
    assert 0.01 < suffixes[".jpeg"] / n < 0.035
    assert 0.015 < suffixes[".png"] / n < 0.045


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path, monkeypatch):
    a = demo.generate(tmp_path / "a", people=4, eval_people=1, seed=3, workers=1)
    monkeypatch.setattr(demo, "SMALL_RUN", 1)  # force the process pool even for 5 people
    b = demo.generate(tmp_path / "b", people=4, eval_people=1, seed=3, workers=2)
    c = demo.generate(tmp_path / "c", people=4, eval_people=1, seed=4, workers=1)
    assert all_bytes(a) == all_bytes(b)
    assert all_bytes(a) != all_bytes(c)


def test_people_differ_and_photos_of_one_person_differ(demo_root):
    rows = read_csv(demo_root / "train" / "train.csv")
    first = demo_root / "train" / "images" / rows[0]["path"]
    second = demo_root / "train" / "images" / rows[1]["path"]
    photos = [p.read_bytes() for p in real_files(first)]
    assert len(set(photos)) == 7
    assert not set(photos) & {p.read_bytes() for p in real_files(second)}


# ---------------------------------------------------------------------------------------- label noise


def test_truth_lists_exactly_the_planted_errors(tmp_path):
    truth = tmp_path / "truth.csv"
    root = demo.generate(tmp_path / "noisy", people=12, eval_people=2, seed=5, label_noise=0.15, truth=truth)
    rows = read_csv(truth)
    assert list(rows[0]) == ["path", "kind", "true_label", "given_label"]
    kinds = Counter(r["kind"] for r in rows)
    assert set(kinds) == {"gender", "age", "mask_swap"}
    # About the asked share of the 84 training photos, in whole planted units.
    assert 0.15 * 84 <= len(rows) <= 0.15 * 84 + 7
    by_folder: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        assert (root / r["path"]).is_file()
        assert int(r["given_label"]) == label_from_path(r["path"])  # the label the dataset states
        assert r["true_label"] != r["given_label"]
        by_folder.setdefault(str(Path(r["path"]).parent), []).append(r)
    for folder, items in by_folder.items():
        kind = {r["kind"] for r in items}
        assert len(kind) == 1
        kind = kind.pop()
        true = [divmod(int(r["true_label"]), 6) for r in items]
        given = [divmod(int(r["given_label"]), 6) for r in items]
        if kind == "gender":  # the whole person, only the gender flipped
            assert len(items) == 7
            assert all(t[0] == g[0] and abs(t[1] - g[1]) == 3 for t, g in zip(true, given, strict=True))
        elif kind == "age":  # the whole person, one year across a band boundary
            assert len(items) == 7
            age = int(FOLDER_RE.match(Path(folder).name).group(3))
            assert age in (29, 30, 59, 60)
            assert all(t[0] == g[0] and abs(t[1] - g[1]) == 1 for t, g in zip(true, given, strict=True))
        else:  # incorrect_mask and normal swapped inside one folder
            assert sorted(Path(r["path"]).stem for r in items) == ["incorrect_mask", "normal"]
            assert sorted(t[0] for t in true) == [1, 2]
            assert all(t[0] != g[0] and t[1] == g[1] for t, g in zip(true, given, strict=True))


def test_no_noise_means_an_empty_truth_and_labels_read_from_paths_are_true(tmp_path):
    truth = tmp_path / "t.csv"
    demo.generate(tmp_path / "clean", people=3, eval_people=1, seed=0, truth=truth)
    assert read_csv(truth) == []
    assert truth.read_text().startswith("path,kind,true_label,given_label")


def test_eval_truth_matches_info_csv(tmp_path):
    truth = tmp_path / "t.csv"
    root = demo.generate(tmp_path / "d", people=2, eval_people=3, seed=0, truth=truth)
    info = read_csv(root / "eval" / "info.csv")
    answers = read_csv(demo.eval_truth_path(truth))
    assert [r["ImageID"] for r in answers] == [r["ImageID"] for r in info]
    for r in answers:
        label = int(r["ans"])
        assert label == tasks.encode_class(int(r["mask"]), int(r["gender"]), tasks.age_band(int(r["age"])))
    # Each eval person has all three mask states: 5 wear, 1 incorrect, 1 not wear.
    per_person = Counter((r["person"], r["mask"]) for r in answers)
    assert all(per_person[(str(p), "0")] == 5 and per_person[(str(p), "1")] == 1 for p in range(3))


# ----------------------------------------------------------------------------- atomicity and the CLI


def test_an_interrupted_run_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def failing(job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    real = demo._write_person
    monkeypatch.setattr(demo, "_write_person", failing)
    with pytest.raises(KeyboardInterrupt):
        demo.generate(tmp_path / "out", people=3, eval_people=0, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_dataset_and_reports_mistakes(tmp_path, capsys):
    out = tmp_path / "cli"
    truth = tmp_path / "truth.csv"
    rc = cli_main(
        [
            "demo-data",
            str(out),
            "--people",
            "2",
            "--eval-people",
            "1",
            "--label-noise",
            "0.1",
            "--truth",
            str(truth),
            "--quiet",
        ]
    )
    assert rc == 0
    assert (out / "train" / "train.csv").is_file() and (out / "eval" / "info.csv").is_file()
    assert len(read_csv(truth)) >= 1 and demo.eval_truth_path(truth).is_file()
    capsys.readouterr()
    # An existing, non-empty folder is refused and left untouched.
    before = all_bytes(out)
    assert cli_main(["demo-data", str(out), "--people", "2", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert all_bytes(out) == before
    assert cli_main(["demo-data", str(tmp_path / "x"), "--label-noise", "2", "--quiet"]) == 2
    assert cli_main(["demo-data", str(tmp_path / "y"), "--people", "0", "--quiet"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_runs_as_a_module(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "demo-data",
            str(tmp_path / "m"),
            "--people",
            "1",
            "--eval-people",
            "0",
            "--quiet",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(read_csv(tmp_path / "m" / "train" / "train.csv")) == 1
    bad = subprocess.run(
        [sys.executable, "-m", "core", "demo-data", str(tmp_path / "m"), "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_an_unwritable_destination_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(demo.DatasetError, match="could not write the demo dataset"):
        demo.generate(blocker / "demo", people=1, eval_people=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
