"""core.evaluation.review: derived columns, selection, paging, best/worst, suspected label errors (synthetic)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError, RunError
from core.evaluation import review
from core.runs.folder import create_run_folder, write_config, write_predictions


def label(mask: int, gender: int, age: int) -> int:
    return mask * 6 + gender * 3 + age


def frame_from(labels, probs, paths=None, groups=None) -> pd.DataFrame:
    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels)
    n = len(labels)
    frame = pd.DataFrame(
        {
            "path": paths if paths is not None else [f"/d/p{i // 7}/img{i}.jpg" for i in range(n)],
            "group": groups if groups is not None else [f"p{i // 7}" for i in range(n)],
            "label": labels,
            "pred": probs.argmax(axis=1),
        }
    )
    frame["loss"] = -np.log(np.clip(probs[np.arange(n), labels], 1e-9, None))
    for j in range(probs.shape[1]):
        frame[f"p{j}"] = probs[:, j]
    return frame


def one_hot_ish(classes: list[int], k: int, sure: list[float]) -> np.ndarray:
    """Rows putting ``sure`` on the given class and the rest spread evenly."""
    probs = np.zeros((len(classes), k))
    for i, (c, s) in enumerate(zip(classes, sure, strict=True)):
        probs[i] = (1 - s) / (k - 1)
        probs[i, c] = s
    return probs


@pytest.fixture
def small() -> pd.DataFrame:
    # 6 predictions over 4 classes, crafted: (label, predicted, confidence)
    labels = [0, 0, 1, 2, 2, 3]
    preds = [0, 1, 1, 0, 1, 3]
    sure = [0.9, 0.7, 0.6, 0.95, 0.5, 0.8]
    frame = frame_from(labels, one_hot_ish(preds, 4, sure), paths=[f"/d/x{i}.jpg" for i in range(6)])
    return review.enrich(frame, task="class", num_classes=4)


def test_enrich_adds_correctness_and_confidences(small):
    assert list(small["correct"]) == [True, False, True, False, False, True]
    np.testing.assert_allclose(small["confidence"], [0.9, 0.7, 0.6, 0.95, 0.5, 0.8])
    assert small.loc[1, "true_prob"] == pytest.approx(0.1)
    assert "err_mask" not in small.columns  # not the 18-class task


def test_select_filters_and_sorts_exactly(small):
    wrong = review.select(small, correct=False)
    assert list(wrong["path"]) == ["/d/x3.jpg", "/d/x1.jpg", "/d/x4.jpg"]  # by confidence, highest first
    by_loss = review.select(small, correct=False, sort="loss")
    assert list(by_loss["path"]) == ["/d/x3.jpg", "/d/x1.jpg", "/d/x4.jpg"]  # true_prob .0167 < .1 < .1667
    assert list(review.select(small, correct=False, sort="loss", descending=False)["path"])[0] == "/d/x4.jpg"
    assert list(review.select(small, true=2, pred=1)["path"]) == ["/d/x4.jpg"]
    assert list(review.select(small, pred=[0, 1], correct=True, descending=False)["path"]) == ["/d/x2.jpg", "/d/x0.jpg"]
    assert review.select(small, true=3, correct=False).empty
    with pytest.raises(ValueError):
        review.select(small, sort="random")
    with pytest.raises(ValueError):
        review.select(small, attribute_error="gender")


def test_select_by_attribute_error_on_the_18_class_task():
    labels = [label(0, 0, 0), label(0, 1, 1), label(1, 0, 2), label(2, 1, 0)]
    preds = [label(0, 0, 0), label(0, 0, 1), label(2, 0, 1), label(2, 1, 0)]
    frame = review.enrich(frame_from(labels, one_hot_ish(preds, 18, [0.9] * 4)), task="class", num_classes=18)
    assert list(frame["wrong"]) == ["", "gender", "mask+age", ""]
    assert list(review.select(frame, attribute_error="gender")["label"]) == [labels[1]]
    assert list(review.select(frame, attribute_error="age")["label"]) == [labels[2]]
    assert len(review.select(frame, attribute_error="mask")) == 1


def test_paging_returns_exact_slices_and_clamps():
    items = pd.DataFrame({"n": range(50)})
    assert review.page_count(50, 24) == 3 and review.page_count(0, 24) == 1
    assert list(review.page(items, 1, 24)["n"]) == list(range(24))
    assert list(review.page(items, 3, 24)["n"]) == [48, 49]
    assert list(review.page(items, 9, 24)["n"]) == [48, 49]  # past the end: the last page
    assert list(review.page(items, 0, 24)["n"]) == list(range(24))
    assert review.page(items.iloc[:0], 1, 24).empty
    pages = [review.page(items, p, 12) for p in range(1, 6)]
    assert sum(len(p) for p in pages) == 50 and pd.concat(pages)["n"].is_unique


def test_best_and_worst_per_class(small):
    best, worst = review.best_and_worst(small, 0, n=1)
    assert list(best["path"]) == ["/d/x0.jpg"] and list(worst["path"]) == ["/d/x1.jpg"]
    best, worst = review.best_and_worst(small, 2, n=5)
    assert list(best["path"]) == ["/d/x4.jpg", "/d/x3.jpg"]
    assert list(worst["path"]) == ["/d/x3.jpg", "/d/x4.jpg"]


def test_top_k():
    assert review.top_k(np.array([0.1, 0.5, 0.15, 0.25]), 3) == [(1, 0.5), (3, 0.25), (2, 0.15)]


def synthetic_noisy_predictions(seed: int = 0, people: int = 40):
    """An 18-class set of 7-photo people whose probabilities follow the TRUE labels (as a good
    out-of-sample model would), with planted label errors of the real kinds."""
    rng = np.random.default_rng(seed)
    labels, truth, groups, paths = [], [], [], []
    for person in range(people):
        gender, age = int(rng.integers(2)), int(rng.integers(3))
        for photo, mask in enumerate([0] * 5 + [1, 2]):
            truth.append(label(mask, gender, age))
            groups.append(f"p{person:03d}")
            paths.append(f"/d/p{person:03d}/photo{photo}.jpg")
    truth = np.array(truth)
    labels = truth.copy()
    planted: set[str] = set()
    # A whole person with the wrong gender, one with a wrong age band, one with swapped mask photos.
    for i in range(0, 7):
        labels[i] = label(truth[i] // 6, 1 - (truth[i] // 3) % 2, truth[i] % 3)
    for i in range(7, 14):
        labels[i] = label(truth[i] // 6, (truth[i] // 3) % 2, (truth[i] % 3 + 1) % 3)
    labels[19], labels[20] = truth[20], truth[19]
    planted.update(paths[:14] + paths[19:21])
    # A mediocre model: right class 60% of the time with noisy confidence, else a random class.
    logits = rng.normal(0, 1.0, (len(truth), 18))
    hit = rng.random(len(truth)) < 0.6
    logits[np.arange(len(truth)), np.where(hit, truth, rng.integers(18, size=len(truth)))] += 2.5
    logits[np.arange(len(truth)), truth] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return frame_from(labels, probs, paths=paths, groups=groups), planted


def test_label_error_ranking_puts_planted_errors_on_top():
    frame, planted = synthetic_noisy_predictions()
    issues = review.suspected_label_errors(frame, [f"c{i}" for i in range(18)], task="class")
    assert list(issues.columns[:4]) == ["path", "label", "suggested", "score"]
    assert len(issues) == len(frame) and issues["score"].is_monotonic_decreasing
    # 16 of 280 images are planted: a random ranking has expected precision 0.057. This model is
    # confidently wrong on ~40% of images at random, so a few such images outrank planted ones.
    precisions = [review.precision_at_k(issues["path"], planted)]
    for seed in (1, 2, 3):
        other, other_planted = synthetic_noisy_predictions(seed)
        ranked = review.suspected_label_errors(other, [f"c{i}" for i in range(18)], task="class")
        precisions.append(review.precision_at_k(ranked["path"], other_planted))
    assert min(precisions) >= 0.5 and np.mean(precisions) >= 0.7, precisions
    top_person = issues[issues["group"] == "p000"]
    assert set(top_person["kind"]) == {"person"} and set(top_person["attribute"]) == {"gender"}
    # The suggestion for the wrong-gender person restores the true labels.
    truth_gender = (frame.set_index("path").loc[top_person["path"], "label"] // 3) % 2
    assert ((top_person["suggested"].to_numpy() // 3) % 2 == 1 - truth_gender.to_numpy()).all()


def test_label_errors_for_a_plain_task_are_image_level():
    probs = one_hot_ish([1, 0, 1, 0], 2, [0.9, 0.9, 0.6, 0.8])
    frame = frame_from([0, 0, 1, 0], probs, paths=list("abcd"), groups=list("abcd"))
    issues = review.suspected_label_errors(frame, ["cat", "dog"], task="class")
    assert list(issues["path"]) == ["a", "c", "d", "b"]
    assert list(issues["suggested"][:1]) == [1] and issues.loc[0, "suggested_name"] == "dog"
    assert set(issues["kind"]) == {"image"}


def test_issues_csv_neutralises_formulas():
    frame = frame_from([0, 1], one_hot_ish([1, 1], 2, [0.9, 0.9]), paths=['=HYPERLINK("http://x")', "ok.jpg"])
    issues = review.suspected_label_errors(frame, ["=cmd|' /C calc'!A0", "b"], task="class")
    text = review.issues_csv(issues)
    assert text.splitlines()[0].startswith("path,label,suggested,score")
    assert "'=HYPERLINK" in text and "\n=HYPERLINK" not in text and ",=cmd" not in text


def test_label_issues_from_a_run_folder(tmp_path):
    frame, planted = synthetic_noisy_predictions(seed=1)
    run = create_run_folder(tmp_path, "r1")
    write_config(run, {"kind": "train", "task": "class", "classes": [f"c{i}" for i in range(18)]})
    write_predictions(run.val_predictions, frame)
    issues = review.label_issues(run.root)
    assert review.precision_at_k(issues["path"], planted) >= 0.5
    with pytest.raises(ConfigError):
        review.label_issues(run.root, kfold=1)
    empty = create_run_folder(tmp_path, "r2")
    write_config(empty, {"kind": "train", "task": "class", "classes": ["a", "b"]})
    with pytest.raises(RunError, match="no predictions"):
        review.label_issues(empty.root)


def test_a_runs_class_names_come_from_its_config_or_its_task(tmp_path):
    """The recorded class list wins; else the competition's names when the count fits; else numbers."""
    probs = one_hot_ish([0, 1, 2], 3, [0.9, 0.8, 0.7])
    frame = pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "label": [0, 1, 2], "pred": [0, 1, 2]})
    frame = frame.assign(**{f"p{i}": probs[:, i] for i in range(3)})
    cases = [
        ({"task": "class", "classes": ["cat", "dog", "eel"]}, ["cat", "dog", "eel"], "class"),
        ({"task": "mask"}, ["Wear", "Incorrect", "Not wear"], "mask"),
        ({"task": "age", "classes": ["too", "few"]}, ["<30", "30-59", "60+"], "age"),
        ({"task": "class"}, ["0", "1", "2"], "class"),
        ({}, ["0", "1", "2"], "class"),
    ]
    for i, (config, names, task) in enumerate(cases):
        run = create_run_folder(tmp_path, f"r{i}")
        write_config(run, {"kind": "train", **config})
        write_predictions(run.val_predictions, frame)
        got_frame, got_names, got_task = review.run_predictions(run.root)
        assert (got_names, got_task) == (names, task), config
        assert len(got_frame) == 3


def test_person_photos_from_the_folder_or_the_index(tmp_path):
    from PIL import Image

    person = tmp_path / "000001_female_Asian_45"
    person.mkdir()
    for name in ("mask1.jpg", "mask2.png", "normal.jpeg"):
        Image.new("RGB", (8, 8)).save(person / name)
    (person / "._mask1.jpg").write_bytes(b"junk")
    (person / "notes.txt").write_text("x")
    photos = review.person_photos(person / "mask1.jpg")
    assert [p.rsplit("/", 1)[1] for p in photos] == ["mask1.jpg", "mask2.png", "normal.jpeg"]
    index = pd.DataFrame({"path": ["/a/1.jpg", "/b/2.jpg", "/c/3.jpg"], "group": ["p1", "p2", "p1"]})
    assert review.person_photos("/a/1.jpg", index) == ["/a/1.jpg", "/c/3.jpg"]


def test_thumbnails_keep_order_and_replace_broken_files(tmp_path, monkeypatch):
    from PIL import Image

    from core.data import thumbnails

    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    paths = []
    for i, colour in enumerate(["red", "green", "blue"]):
        paths.append(tmp_path / f"{i}.jpg")
        Image.new("RGB", (300, 400), colour).save(paths[-1])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really")
    thumbs = review.thumbnails([*map(str, paths), str(broken)], max_side=64)
    assert thumbs[:3] == [thumbnails.thumbnail_jpeg(p, 64) for p in paths]
    assert thumbs[3][:2] == b"\xff\xd8" and thumbs[3] not in thumbs[:3]
    for data in thumbs[:3]:
        with Image.open(io.BytesIO(data)) as im:
            assert max(im.size) <= 64


def test_damaged_predictions_are_a_run_error(tmp_path):
    run = create_run_folder(tmp_path, "bad")
    write_config(run, {"kind": "train", "task": "class", "classes": ["a", "b"]})
    run.val_predictions.write_bytes(b"PAR1 not parquet")
    with pytest.raises(RunError, match="not a readable predictions file"):
        review.run_predictions(run.root)
    write_predictions(
        run.val_predictions, pd.DataFrame({"path": ["x"], "label": [0], "pred": [5], "p0": [1.0], "p1": [0.0]})
    )
    with pytest.raises(RunError, match="column pred holds values outside the 2 classes"):
        review.run_predictions(run.root)
    write_predictions(run.val_predictions, pd.DataFrame({"path": ["x"], "label": [0]}))
    with pytest.raises(RunError, match="lack the column"):
        review.label_issues(run.root)
