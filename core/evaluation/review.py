"""What a run gets wrong: selecting and paging predictions, and suspected label errors.

Predictions are a run's ``val_predictions.parquet`` (core.runs.folder: path, group, label, pred, loss,
p0..p{K-1}). :func:`enrich` adds the derived columns every view needs (correct, confidence,
true_prob, and for the 18-class task the attribute-error columns); :func:`select` and :func:`page`
filter, sort and cut them.

Suspected label errors follow confident learning (Northcutt et al.): with out-of-sample probabilities,
an image whose given label gets little probability while another class gets a lot is suspicious. The
score is the evidence against the given label in natural-log odds, ``log p[suggested] - log p[label]``,
probabilities floored at 1e-3 so one over-confident output cannot dominate: above 0 the model prefers
the suggestion, 2.3 means ten to one. ``confident`` marks images whose suggested class reaches that
class's own threshold (the mean probability the model gives images labelled with it: confident
learning's per-class threshold). Dividing every probability by its class threshold before scoring
was tried and ranked planted errors worse on both the synthetic and the demo sets, so the thresholds
only set the flag.

Because the common real error is a whole person with a wrong gender or age band, gender and age are
also scored per person by adding the evidence of all the person's photos: seven photos that agree
are far stronger evidence than one, and a few confidently wrong photos are outvoted by the rest.
Each image keeps whichever reading (its own, or its person's) is the stronger.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.data import tasks
from core.errors import RunError
from core.evaluation import metrics
from core.fsutil import atomic_write_text, spreadsheet_safe
from core.runs.folder import (
    RunFolder,
    list_run_folders,
    open_run,
    probability_columns,
    read_checked_predictions,
    read_config,
)

SORTS = ("confidence", "loss")
ISSUE_COLUMNS = ["path", "label", "suggested", "score"]
# What suspected_label_errors returns and the CSV export holds.
ISSUE_EXPORT_COLUMNS = [
    *ISSUE_COLUMNS, "group", "kind", "attribute", "label_name", "suggested_name", "given_prob", "suggested_prob",
    "confident",
]  # fmt: skip
Progress = Callable[[int, int, str], None]


# ---- derived columns -------------------------------------------------------------------------


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    cols = probability_columns(frame)
    if not cols:
        raise RunError("the predictions have no probability columns p0..pK-1")
    return frame[cols].to_numpy(dtype=np.float64)


def enrich(frame: pd.DataFrame, task: str | None, num_classes: int) -> pd.DataFrame:
    """A copy of ``frame`` with: correct, confidence (probability of the predicted class),
    true_prob (probability of the true class) and, for the 18-class task, err_mask, err_gender,
    err_age (bool) and wrong (e.g. 'gender+age')."""
    out = frame.reset_index(drop=True).copy()
    probs = probabilities(out)
    label = out["label"].to_numpy(dtype=np.int64)
    pred = out["pred"].to_numpy(dtype=np.int64)
    rows = np.arange(len(out))
    out["correct"] = label == pred
    out["confidence"] = probs[rows, pred] if len(out) else np.zeros(0)
    out["true_prob"] = probs[rows, label] if len(out) else np.zeros(0)
    if "group" not in out.columns:
        out["group"] = [Path(p).parent.name for p in out["path"]]
    if tasks.is_competition_task(task, num_classes):
        errors = metrics.attribute_errors(label, pred)
        for name in tasks.ATTRIBUTES:
            out[f"err_{name}"] = errors[name].to_numpy()
        out["wrong"] = errors["wrong"].to_numpy()
    return out


def top_k(probs_row: np.ndarray, k: int = 3) -> list[tuple[int, float]]:
    """The ``k`` most probable classes of one prediction, most probable first."""
    order = np.argsort(-np.asarray(probs_row), kind="stable")[:k]
    return [(int(c), float(probs_row[c])) for c in order]


# ---- selection and paging ---------------------------------------------------------------------


def _as_set(value: int | Iterable[int] | None) -> set[int] | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return {int(value)}
    return {int(v) for v in value}


def select(
    frame: pd.DataFrame,
    true: int | Iterable[int] | None = None,
    pred: int | Iterable[int] | None = None,
    attribute_error: str | None = None,
    correct: bool | None = None,
    sort: str = "confidence",
    descending: bool = True,
) -> pd.DataFrame:
    """Rows of an :func:`enrich`-ed frame matching every given filter, sorted.

    ``true``/``pred``: a class or classes; ``attribute_error``: 'mask', 'gender' or 'age' (rows
    where that attribute is wrong); ``correct``: True or False; ``sort``: 'confidence' (probability
    of the predicted class: for errors, how sure the model is of the wrong class) or 'loss'.
    Ties are broken by path so the order is stable across reruns.
    """
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}, not {sort!r}")
    keep = np.ones(len(frame), dtype=bool)
    if (wanted := _as_set(true)) is not None:
        keep &= frame["label"].isin(wanted).to_numpy()
    if (wanted := _as_set(pred)) is not None:
        keep &= frame["pred"].isin(wanted).to_numpy()
    if attribute_error:
        column = f"err_{attribute_error}"
        if column not in frame.columns:
            raise ValueError(f"attribute errors exist only for the 18-class task (no {column!r} column)")
        keep &= frame[column].to_numpy(dtype=bool)
    if correct is not None:
        keep &= frame["correct"].to_numpy(dtype=bool) == bool(correct)
    chosen = frame[keep]
    return chosen.sort_values([sort, "path"], ascending=[not descending, True], kind="stable")


def page_count(total: int, page_size: int) -> int:
    return max(1, -(-total // max(1, page_size)))


def page(items: pd.DataFrame, page_number: int, page_size: int = 24) -> pd.DataFrame:
    """Items on 1-based page ``page_number``; a number past either end is clamped to it."""
    page_size = max(1, int(page_size))
    number = min(max(1, int(page_number)), page_count(len(items), page_size))
    start = (number - 1) * page_size
    return items.iloc[start : start + page_size]


def best_and_worst(frame: pd.DataFrame, cls: int, n: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images labelled ``cls`` the model is surest of (highest true_prob) and least sure of."""
    own = frame[frame["label"] == cls]
    best = own.sort_values(["true_prob", "path"], ascending=[False, True], kind="stable").head(n)
    worst = own.sort_values(["true_prob", "path"], ascending=[True, True], kind="stable").head(n)
    return best, worst


def thumbnails(paths: Iterable[str], max_side: int = 160, workers: int = 4) -> list[bytes]:
    """Thumbnails of a gallery page, made in a few threads (Pillow decodes without holding the GIL,
    so a cold page uses every core); a file that cannot be read gives the placeholder tile."""
    from concurrent.futures import ThreadPoolExecutor

    from core.data.thumbnails import thumbnail_or_placeholder

    paths = [str(p) for p in paths]
    if workers <= 1 or len(paths) <= 1:
        return [thumbnail_or_placeholder(p, max_side) for p in paths]
    with ThreadPoolExecutor(max_workers=min(workers, len(paths)), thread_name_prefix="thumbs") as pool:
        return list(pool.map(lambda p: thumbnail_or_placeholder(p, max_side), paths))


def person_photos(path: str | os.PathLike, index: pd.DataFrame | None = None) -> list[str]:
    """All photos of the person in ``path``: the same ``group`` in a dataset index when given,
    else the image files in the same folder (the competition keeps a person's 7 photos together)."""
    path = str(path)
    if index is not None and "group" in index.columns and (index["path"] == path).any():
        group = index.loc[index["path"] == path, "group"].iloc[0]
        return sorted(index.loc[index["group"] == group, "path"].astype(str))
    from core.data.images import is_image_name

    folder = Path(path).parent
    try:
        return sorted(str(p) for p in folder.iterdir() if p.is_file() and is_image_name(p.name))
    except OSError:
        return [path]


# ---- suspected label errors ---------------------------------------------------------------------


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class, the mean probability the model gives images labelled with it (confident learning's
    threshold t_j); classes with no images get 1.0 so nothing is confidently suggested into them."""
    k = probs.shape[1]
    thresholds = np.ones(k)
    for j in range(k):
        mask = labels == j
        if mask.any():
            thresholds[j] = probs[mask, j].mean()
    return thresholds


PROB_FLOOR = 1e-3  # caps one photo's evidence at log(1/0.001) = 6.9


def _evidence(log_probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the most probable class other than the label and its log-odds against the label."""
    rows = np.arange(len(labels))
    others = log_probs.copy()
    others[rows, labels] = -np.inf
    suggested = others.argmax(axis=1)
    return log_probs[rows, suggested] - log_probs[rows, labels], suggested


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, PROB_FLOOR, None))


def _person_attributes(task: str | None, num_classes: int) -> list[str]:
    """Attributes constant within a person that can be scored per person."""
    if tasks.is_competition_task(task, num_classes):
        return list(tasks.PERSON_ATTRIBUTES)
    if task in tasks.PERSON_ATTRIBUTES:
        return [task]
    return []


def _attribute_probs(probs: np.ndarray, attribute: str, task: str | None) -> np.ndarray:
    """Probabilities of the attribute's values: summed over 18 classes, or the task's own."""
    if task == attribute:
        return probs
    index = tasks.attribute_class_index(attribute)
    values = len(tasks.ATTRIBUTE_NAMES[attribute])
    return np.stack([probs[:, index == v].sum(axis=1) for v in range(values)], axis=1)


def _person_scores(
    frame: pd.DataFrame, probs: np.ndarray, labels: np.ndarray, attribute: str, task: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the summed evidence of its person's photos against the person's ``attribute``
    value, and the image's label with that attribute replaced by the person's suggested value."""
    attr_label = labels if task == attribute else tasks.decode_attribute(labels, attribute)
    attr_log = _log(_attribute_probs(probs, attribute, task))
    groups = frame["group"].astype(str).to_numpy()
    person = pd.DataFrame(attr_log).groupby(groups, sort=False)
    summed = person.transform("sum").to_numpy()
    sizes = person[0].transform("size").to_numpy()
    # The person's value is the one most of their photos carry (they should all agree).
    person_label = pd.Series(attr_label).groupby(groups, sort=False).transform(lambda s: s.mode().iloc[0])
    score, suggested_value = _evidence(summed, person_label.to_numpy(dtype=np.int64))
    score = np.where(sizes >= 2, score, -np.inf)  # a lone image is already scored on its own
    suggested = suggested_value if task == attribute else metrics.replace_attribute(labels, attribute, suggested_value)
    return score, suggested


def _changed_attributes(labels: np.ndarray, suggested: np.ndarray, task: str | None, num_classes: int) -> list[str]:
    if not tasks.is_competition_task(task, num_classes):
        return [task if task in tasks.ATTRIBUTES else tasks.CLASS_TASK] * len(labels)
    return list(metrics.attribute_errors(labels, suggested)["wrong"])


def suspected_label_errors(frame: pd.DataFrame, classes: list[str], task: str | None = "class") -> pd.DataFrame:
    """Every image ranked by how strongly the (out-of-sample) predictions disagree with its label.

    Columns: path, label, suggested, score, group, kind ('image' or 'person': scored from all the
    person's photos), attribute (what the suggestion changes, e.g. 'gender'), label_name,
    suggested_name, given_prob (probability of the given label), suggested_prob, confident.
    Most suspicious first.
    """
    frame = frame.reset_index(drop=True)
    if "group" not in frame.columns:
        frame = frame.assign(group=[Path(p).parent.name for p in frame["path"]])
    probs = probabilities(frame)
    num_classes = probs.shape[1]
    labels = frame["label"].to_numpy(dtype=np.int64)
    if len(frame) == 0:
        return pd.DataFrame(columns=[*ISSUE_COLUMNS, "group", "kind", "attribute"])
    if labels.max() >= num_classes or labels.min() < 0:
        raise RunError(f"labels run outside the {num_classes} probability columns: predictions and classes disagree")

    score, suggested = _evidence(_log(probs), labels)
    kind = np.full(len(frame), "image", dtype=object)
    for attribute in _person_attributes(task, num_classes):
        person_score, person_suggested = _person_scores(frame, probs, labels, attribute, task)
        better = person_score >= score  # on a tie the person-level reading explains more photos
        score = np.where(better, person_score, score)
        suggested = np.where(better, person_suggested, suggested)
        kind = np.where(better, "person", kind)

    rows = np.arange(len(frame))
    thresholds = class_thresholds(probs, labels)
    names = list(classes) if len(classes) == num_classes else [str(c) for c in range(num_classes)]
    result = pd.DataFrame(
        {
            "path": frame["path"].astype(str),
            "label": labels,
            "suggested": suggested.astype(np.int64),
            "score": np.round(score, 6),
            "group": frame["group"].astype(str),
            "kind": kind.astype(str),
            "attribute": _changed_attributes(labels, suggested, task, num_classes),
            "label_name": [names[i] for i in labels],
            "suggested_name": [names[i] for i in suggested],
            "given_prob": probs[rows, labels],
            "suggested_prob": probs[rows, suggested],
            "confident": probs[rows, suggested] >= thresholds[suggested],
        }
    )
    return result.sort_values(["score", "group", "path"], ascending=[False, True, True], kind="stable").reset_index(
        drop=True
    )


def precision_at_k(ranked_paths: Iterable[str], planted: Iterable[str], k: int | None = None) -> float:
    """Share of the first ``k`` ranked paths (default: as many as planted) that are planted errors."""
    planted = {str(p) for p in planted}
    k = len(planted) if k is None else k
    if k == 0:
        return 1.0
    top = list(ranked_paths)[:k]
    return sum(str(p) in planted for p in top) / k


def issues_csv(issues: pd.DataFrame) -> str:
    """CSV text with path,label,suggested,score first; every cell neutralised for spreadsheets."""
    ordered = issues[[*ISSUE_COLUMNS, *[c for c in issues.columns if c not in ISSUE_COLUMNS]]]
    safe = ordered.astype(object).map(spreadsheet_safe)
    return safe.to_csv(index=False)


def write_issues_csv(issues: pd.DataFrame, path: str | os.PathLike) -> None:
    atomic_write_text(path, issues_csv(issues))


# ---- runs: predictions and k-fold out-of-sample predictions -------------------------------------


def runs_with_predictions(models_dir: str | os.PathLike) -> list[RunFolder]:
    """Run folders under ``models_dir`` that have validation predictions, newest first."""
    return [run for run in list_run_folders(models_dir) if run.val_predictions.is_file()]


def _run_task(config: dict[str, Any], predictions: pd.DataFrame) -> tasks.Task:
    """The run's task with its class names, from its config and its predictions' class count."""
    return tasks.run_task(config.get("task"), config.get("classes"), len(probability_columns(predictions)))


def run_predictions(run: str | os.PathLike | RunFolder) -> tuple[pd.DataFrame, list[str], str]:
    """(predictions, class names, task) of a run folder. Raises RunError when it has none."""
    folder = run if isinstance(run, RunFolder) else open_run(run)
    frame = read_checked_predictions(folder.val_predictions)
    task = _run_task(read_config(folder), frame)
    return frame, list(task.classes), task.name


def label_issues(
    run: str | os.PathLike | RunFolder, kfold: int | None = None, progress: Progress | None = None
) -> pd.DataFrame:
    """Suspected label errors of a run: from its validation predictions, or with ``kfold`` from
    out-of-sample predictions for every training image. Most suspicious first."""
    folder = run if isinstance(run, RunFolder) else open_run(run)
    if not kfold:
        frame, classes, task = run_predictions(folder)
        return suspected_label_errors(frame, classes, task)
    from core.training.kfold import out_of_fold_predictions

    frame = out_of_fold_predictions(folder, kfold, progress)
    task = _run_task(read_config(folder), frame)
    return suspected_label_errors(frame, list(task.classes), task.name)
