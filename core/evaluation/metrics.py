"""Classification metrics over a run's predictions (scikit-learn underneath).

The competition task has 18 classes, ``class = mask * 6 + gender * 3 + age``; its errors are best
understood per attribute, so this module also derives the three attribute confusion matrices
(mask 3x3, gender 2x2, age 3x3) from 18-class labels and says which attributes each error gets wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from core.data.tasks import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    decode_attribute,
    encode_attributes,
    is_competition_task,
)


def replace_attribute(labels: np.ndarray, attribute: str, values: np.ndarray) -> np.ndarray:
    """18-class labels with ``attribute`` set to ``values`` and the other two attributes kept."""
    labels = np.asarray(labels, dtype=np.int64)
    parts = {name: decode_attribute(labels, name) for name in ATTRIBUTES}
    parts[attribute] = np.asarray(values, dtype=np.int64)
    return encode_attributes(parts["mask"], parts["gender"], parts["age"])


def accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    return float(accuracy_score(true, pred)) if len(true) else 0.0


# F1, defined once. The leaderboard scores scikit-learn's f1_score(average="macro") without labels=,
# which averages over the classes present in y_true or y_pred: a class with no images that is never
# predicted does not count (rather than counting as 0 and lowering the score). per_class_f1 reports
# the same per-class values and NaN for the classes that do not count, so the mean of its counted
# (non-NaN) values is exactly macro_f1. Training's val_f1 / val_f1_per_class and the review page's
# per-class table both come from here.


def counted_classes(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The classes macro F1 averages over: those present in ``true`` or ``pred``, sorted."""
    return np.union1d(np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64))


def macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes present in ``true`` or ``pred`` (the leaderboard's metric); 0.0 for no images."""
    return float(f1_score(true, pred, average="macro", zero_division=0)) if len(true) else 0.0


def per_class_f1(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """F1 of each class 0..num_classes-1, NaN for a class macro_f1 does not count (absent from both
    ``true`` and ``pred``); ``np.nanmean`` of the result equals ``macro_f1(true, pred)``."""
    out = np.full(num_classes, np.nan)
    if len(true):
        counted = counted_classes(true, pred)
        scores = f1_score(true, pred, labels=counted, average=None, zero_division=0)
        inside = counted < num_classes  # a label beyond the class list has no slot to report in
        out[counted[inside]] = scores[inside]
    return out


def per_class_report(true: np.ndarray, pred: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per class: class (index), name, precision, recall, f1, support, predicted (count).

    ``f1`` is per_class_f1: NaN for a class with no images that is never predicted (not counted by macro F1)."""
    labels = np.arange(len(class_names))
    precision, recall, _, support = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0)
    f1 = per_class_f1(true, pred, len(class_names))
    predicted = np.bincount(np.asarray(pred, dtype=np.int64), minlength=len(labels))[: len(labels)]
    return pd.DataFrame(
        {
            "class": labels,
            "name": list(class_names),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support.astype(int),
            "predicted": predicted.astype(int),
        }
    )


def confusion(true: np.ndarray, pred: np.ndarray, num_classes: int, normalize: bool = False) -> np.ndarray:
    """Rows are true classes, columns predicted. ``normalize`` divides each row by its total
    (rows with no images stay zero instead of NaN)."""
    labels = np.arange(num_classes)
    matrix = confusion_matrix(true, pred, labels=labels) if len(true) else np.zeros((num_classes,) * 2, int)
    if not normalize:
        return matrix
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)


def attribute_confusions(true: np.ndarray, pred: np.ndarray, normalize: bool = False) -> dict[str, np.ndarray]:
    """Mask 3x3, gender 2x2 and age 3x3 confusion matrices derived from 18-class labels."""
    return {
        name: confusion(
            decode_attribute(true, name), decode_attribute(pred, name), len(ATTRIBUTE_NAMES[name]), normalize
        )
        for name in ATTRIBUTES
    }


def attribute_accuracy(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy of each attribute on its own (an 18-class error can still get the mask right)."""
    return {name: accuracy(decode_attribute(true, name), decode_attribute(pred, name)) for name in ATTRIBUTES}


def attribute_errors(true: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """Per prediction: a boolean column per attribute (True where that attribute is wrong) and
    ``wrong``, the wrong attributes joined with '+' ('' for a correct prediction)."""
    frame = pd.DataFrame({name: decode_attribute(true, name) != decode_attribute(pred, name) for name in ATTRIBUTES})
    names = np.array(ATTRIBUTES)
    frame["wrong"] = ["+".join(names[row]) for row in frame[list(ATTRIBUTES)].to_numpy()]
    return frame


@dataclass
class Summary:
    """Headline numbers of one set of predictions."""

    count: int
    accuracy: float
    macro_f1: float
    per_class: pd.DataFrame
    attribute_accuracy: dict[str, float] = field(default_factory=dict)  # empty unless 18-class


def summarize(true: np.ndarray, pred: np.ndarray, class_names: list[str], task: str | None = "class") -> Summary:
    true = np.asarray(true, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    return Summary(
        count=len(true),
        accuracy=accuracy(true, pred),
        macro_f1=macro_f1(true, pred),
        per_class=per_class_report(true, pred, class_names),
        attribute_accuracy=attribute_accuracy(true, pred) if is_competition_task(task, len(class_names)) else {},
    )
