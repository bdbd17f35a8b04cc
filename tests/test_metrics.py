"""core.evaluation.metrics against scikit-learn and hand-worked attribute cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from core.data import tasks
from core.evaluation import metrics


def label(mask: int, gender: int, age: int) -> int:
    return mask * 6 + gender * 3 + age


TRUE = np.array([0, 0, 1, 1, 2, 2, 2, 3])
PRED = np.array([0, 1, 1, 1, 2, 0, 3, 3])


def test_accuracy_and_macro_f1_agree_with_sklearn():
    assert metrics.accuracy(TRUE, PRED) == pytest.approx(accuracy_score(TRUE, PRED))
    assert metrics.macro_f1(TRUE, PRED) == pytest.approx(f1_score(TRUE, PRED, average="macro"))
    # Hand check: per-class F1 = 0.5, 0.8, 0.5, 2/3
    assert metrics.macro_f1(TRUE, PRED) == pytest.approx((0.5 + 0.8 + 0.5 + 2 / 3) / 4)


def test_per_class_report_agrees_with_sklearn_and_keeps_absent_classes():
    names = ["a", "b", "c", "d", "e"]  # class 4 never appears
    report = metrics.per_class_report(TRUE, PRED, names)
    p, r, f, s = precision_recall_fscore_support(TRUE, PRED, labels=range(5), zero_division=0)
    assert list(report["name"]) == names
    np.testing.assert_allclose(report["precision"], p)
    np.testing.assert_allclose(report["recall"], r)
    np.testing.assert_allclose(report["f1"][:4], f[:4])
    assert list(report["support"]) == [2, 2, 3, 1, 0]
    assert list(report["predicted"]) == [2, 3, 1, 2, 0]
    assert np.isnan(report.loc[4, "f1"])  # no images, never predicted: not counted by macro F1
    assert report["f1"].mean() == pytest.approx(metrics.macro_f1(TRUE, PRED))


def test_per_class_f1_counts_the_classes_macro_f1_counts():
    # Class 2 is absent from validation but predicted (counted, F1 0); class 4 is absent from both (not counted).
    true = np.array([0, 0, 1, 1, 3, 3])
    pred = np.array([0, 1, 1, 2, 3, 3])
    per_class = metrics.per_class_f1(true, pred, 5)
    assert np.isnan(per_class[4]) and per_class[2] == 0.0
    np.testing.assert_allclose(per_class[:4], [2 / 3, 0.5, 0.0, 1.0])  # by hand: 2TP / (2TP + FP + FN)
    assert np.nanmean(per_class) == pytest.approx(metrics.macro_f1(true, pred))
    assert metrics.macro_f1(true, pred) == pytest.approx(f1_score(true, pred, average="macro"))
    assert metrics.counted_classes(true, pred).tolist() == [0, 1, 2, 3]
    assert np.isnan(metrics.per_class_f1(np.array([], int), np.array([], int), 3)).all()


def test_confusion_counts_and_row_normalisation():
    counts = metrics.confusion(TRUE, PRED, 5)
    np.testing.assert_array_equal(counts, confusion_matrix(TRUE, PRED, labels=range(5)))
    norm = metrics.confusion(TRUE, PRED, 5, normalize=True)
    np.testing.assert_allclose(norm[2], [1 / 3, 0, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(norm[4], 0)  # an empty row stays zero, not NaN
    np.testing.assert_allclose(norm[:4].sum(axis=1), 1)


def test_decode_attribute_matches_competition_encoding():
    labels = np.arange(18)
    assert list(tasks.decode_attribute(labels, "mask")) == [0] * 6 + [1] * 6 + [2] * 6
    assert list(tasks.decode_attribute(labels, "gender")) == ([0] * 3 + [1] * 3) * 3
    assert list(tasks.decode_attribute(labels, "age")) == [0, 1, 2] * 6
    assert metrics.replace_attribute(np.array([label(1, 0, 2)]), "gender", np.array([1]))[0] == label(1, 1, 2)
    with pytest.raises(ValueError):
        tasks.decode_attribute(labels, "race")


def test_attribute_matrices_for_crafted_predictions():
    true = np.array([label(0, 0, 0), label(0, 1, 1), label(1, 1, 2), label(2, 0, 1), label(2, 1, 0)])
    pred = np.array([label(0, 0, 0), label(0, 0, 1), label(2, 1, 1), label(2, 0, 1), label(1, 0, 0)])
    mats = metrics.attribute_confusions(true, pred)
    assert mats["mask"].shape == (3, 3) and mats["gender"].shape == (2, 2) and mats["age"].shape == (3, 3)
    np.testing.assert_array_equal(mats["mask"], [[2, 0, 0], [0, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(mats["gender"], [[2, 0], [2, 1]])
    np.testing.assert_array_equal(mats["age"], [[2, 0, 0], [0, 2, 0], [0, 1, 0]])
    acc = metrics.attribute_accuracy(true, pred)
    assert acc == {"mask": pytest.approx(3 / 5), "gender": pytest.approx(3 / 5), "age": pytest.approx(4 / 5)}
    errors = metrics.attribute_errors(true, pred)
    assert list(errors["wrong"]) == ["", "gender", "mask+age", "", "mask+gender"]
    assert list(errors["gender"]) == [False, True, False, False, True]


def test_summary_has_attribute_accuracy_only_for_the_18_class_task():
    true = np.array([0, 5, 17])
    pred = np.array([0, 4, 17])
    names = [f"c{i}" for i in range(18)]
    full = metrics.summarize(true, pred, names, task="class")
    assert full.count == 3 and full.accuracy == pytest.approx(2 / 3)
    assert set(full.attribute_accuracy) == {"mask", "gender", "age"}
    assert metrics.summarize(np.array([0, 1]), np.array([0, 1]), ["m", "f"], task="gender").attribute_accuracy == {}
