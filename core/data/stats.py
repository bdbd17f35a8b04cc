"""Statistics of a scanned dataset for the Dataset page and ``scan``: class and attribute counts,
the gender × age table, class imbalance, image sizes and per-channel mean/std.

All but :func:`channel_stats` are pure pandas over a :class:`~core.data.datasets.DatasetIndex`'s frame;
class and attribute names come from the index and from :mod:`core.data.tasks`.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from core.data import images
from core.data.datasets import DatasetIndex, ProgressFn
from core.data.tasks import AGE_NAMES, GENDER_NAMES
from core.errors import DatasetError, ImageError


def class_distribution(index: DatasetIndex) -> pd.DataFrame:
    """label, class_name, images, people: one row per class (zeros included), in label order."""
    frame = index.frame
    counts = frame["label"].value_counts()
    people = frame.groupby("label")["group"].nunique()
    return pd.DataFrame(
        {
            "label": range(len(index.classes)),
            "class_name": index.classes,
            "images": [int(counts.get(i, 0)) for i in range(len(index.classes))],
            "people": [int(people.get(i, 0)) for i in range(len(index.classes))],
        }
    )


def attribute_distribution(index: DatasetIndex, attribute: str) -> pd.Series:
    """Images per value name of ``attribute`` ("mask", "gender" or "age"), zeros included."""
    return index.attribute_counts(attribute)


def gender_age_table(index: DatasetIndex, unit: str = "people") -> pd.DataFrame:
    """Gender (rows) x age band (columns): people (one per group) or images."""
    frame = index.frame
    if unit == "people":
        frame = frame.drop_duplicates("group")
    genders, bands = range(len(GENDER_NAMES)), range(len(AGE_NAMES))
    table = pd.crosstab(frame["gender"], frame["age_band"]).reindex(index=genders, columns=bands, fill_value=0)
    table.index = list(GENDER_NAMES)
    table.columns = list(AGE_NAMES)
    return table.astype("int64")


def imbalance_ratio(index: DatasetIndex) -> float:
    """Largest class / smallest non-empty class (inf when a class is empty)."""
    counts = class_distribution(index)["images"]
    smallest = int(counts.min())
    return float("inf") if smallest == 0 else float(counts.max()) / smallest


def size_table(index: DatasetIndex) -> pd.DataFrame:
    """width, height, images: one row per distinct (upright) size, most common first."""
    table = index.frame.groupby(["width", "height"]).size().reset_index(name="images")
    return table.sort_values(["images", "width", "height"], ascending=[False, True, True]).reset_index(drop=True)


def channel_stats(
    index: DatasetIndex, sample: int = 200, seed: int = 0, progress: ProgressFn | None = None, side: int = 128
) -> dict:
    """Per-channel mean/std (0..1 scale, RGB) over a random sample, decoded at reduced size.

    Returns {"mean": [r, g, b], "std": [r, g, b], "n": images used}: the values for Normalize.
    """
    paths = list(index.frame["path"])
    chosen = random.Random(seed).sample(paths, min(sample, len(paths)))
    total = np.zeros(3)
    total_sq = np.zeros(3)
    pixels = 0
    used = 0
    for done, path in enumerate(chosen, start=1):
        try:
            im = images.open_rgb(path, min_size=(side, side))
        except ImageError:
            continue
        arr = np.asarray(im, dtype=np.float64).reshape(-1, 3) / 255.0
        total += arr.sum(0)
        total_sq += (arr * arr).sum(0)
        pixels += arr.shape[0]
        used += 1
        if progress:
            progress(done, len(chosen))
    if not pixels:
        raise DatasetError("no readable image in the sample; check the problems table")
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean * mean, 0.0))
    return {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std], "n": used}
