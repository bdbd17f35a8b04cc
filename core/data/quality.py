"""Image-quality issues: too dark, too bright, blurry, low information, grayscale, odd aspect, odd size.

Each photo gets one statistic per issue, computed from a small draft decode (JPEGs are decoded by
libjpeg at 1/4 scale or smaller, then box-averaged to at most WORK_SIDE pixels on the long side; no
full decode) and, for size and aspect, from the header alone:

    dark             brightness of the brightest tenth of the pixels (90th percentile of perceived
                     luminance, 0..1): a dark photo is dark even in its bright parts
    bright           brightness of the darkest tenth (10th percentile): a washed-out photo is bright
                     even in its shadows
    blurry           fine-detail energy over the energy one scale coarser (log of the Laplacian's
                     variance at working size over that at half size): blur removes the finest detail
                     first, whatever the photo's contrast or content
    low_information  entropy of the grey-level histogram, in bits (0..8): a blank or nearly flat photo
    grayscale        mean spread between the colour channels (0..1): 0 for a grey photo
    odd_aspect       log of width / height (header)
    odd_size         log of width x height (header)

Thresholds are relative to the dataset, as CleanVision's are: each statistic (on the scale given in
RULES) is turned into a robust z-score, its distance from the dataset's median in units of the
median absolute deviation (x 1.4826, so one unit is one standard deviation for normal data). A photo
is flagged for an issue when its z-score is beyond Z_THRESHOLD (3.5, the usual outlier cut-off) on
the issue's bad side *and* its statistic is past the issue's absolute bound, where the problem is
visible to a person (e.g. dark: even the brightest tenth below 25% of white). The relative test keeps
a dataset of night shots from being all "dark"; the absolute one keeps a tight dataset from flagging
photos that are merely a little darker than the rest. Size and aspect have no absolute bound; their
z-scores use a minimum spread instead (10% in aspect, 25% in area), so a dataset of identical sizes
flags only real outliers. ``score`` is the z-score oriented so that larger is worse.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from core.data import images
from core.errors import ImageError

Progress = Callable[[int, int], None]  # (images done, images in all)

WORK_SIDE = 128  # statistics are computed at this long side: a 1/4 draft of a 512x384 photo, no resize
DRAFT_MIN = (96, 96)  # ask libjpeg for a scale whose result covers this; 1/4 for the competition's photos
Z_THRESHOLD = 3.5
THREADS = 4  # decoding releases the GIL: a few threads keep two cores busy
_CHUNK = 32
STAT_COLUMNS = ["p90_luminance", "p10_luminance", "sharpness", "entropy", "colour_spread", "width", "height"]
ISSUES = ("dark", "bright", "blurry", "low_information", "grayscale", "odd_aspect", "odd_size")


@dataclass(frozen=True)
class Rule:
    """How one issue is read off the statistics: ``value(stats)`` on a scale where the z-score makes
    sense; ``side`` -1 flags low values, +1 high ones, 0 both; ``bound`` is the absolute limit on the
    raw statistic the photo must also be past (None: none); ``min_spread`` floors the z-score's unit."""

    stat: str
    value: Callable[[pd.DataFrame], np.ndarray]
    side: int
    bound: float | None
    min_spread: float
    z: float = Z_THRESHOLD


def _column(name: str) -> Callable[[pd.DataFrame], np.ndarray]:
    return lambda s: s[name].to_numpy(dtype=np.float64)


RULES: dict[str, Rule] = {
    # log scale: darkening multiplies luminance, so a quarter of the brightness is the same step from any start
    "dark": Rule("p90_luminance", lambda s: np.log(s["p90_luminance"].to_numpy(np.float64) + 0.01), -1, 0.25, 0.05),
    "bright": Rule("p10_luminance", lambda s: -np.log(1.01 - s["p10_luminance"].to_numpy(np.float64)), +1, 0.82, 0.05),
    "blurry": Rule("sharpness", _column("sharpness"), -1, -1.2, 0.05),
    "low_information": Rule("entropy", _column("entropy"), -1, 4.0, 0.1),
    # grey photos in a colour dataset: a gentler z (the spread of colour varies a lot between photos)
    "grayscale": Rule("colour_spread", _column("colour_spread"), -1, 0.02, 0.01, z=2.0),
    "odd_aspect": Rule(
        "aspect", lambda s: np.log(s["width"].to_numpy(np.float64) / s["height"].to_numpy(np.float64)), 0, None, 0.1
    ),
    "odd_size": Rule(
        "pixels", lambda s: np.log(s["width"].to_numpy(np.float64) * s["height"].to_numpy(np.float64)), 0, None, 0.25
    ),
}


# ---- per image --------------------------------------------------------------------------------------


def working_image(path: str | os.PathLike) -> np.ndarray:
    """The photo as uint8 H x W x 3, at most WORK_SIDE on its long side (draft decode + box average)."""
    im = images.open_rgb(path, min_size=DRAFT_MIN)
    long_side = max(im.size)
    if long_side > WORK_SIDE:
        scale = WORK_SIDE / long_side
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.BOX, reducing_gap=None)
    return np.asarray(im, dtype=np.uint8)


# perceived brightness (HSP: sqrt(.241 R^2 + .691 G^2 + .068 B^2)) by lookup: three table reads per pixel
_SQUARES = (np.arange(256, dtype=np.float32) / 255.0) ** 2
_LUMA_WEIGHTS = (0.241, 0.691, 0.068)


def image_statistics(rgb: np.ndarray) -> dict[str, float]:
    """The statistics of one working image (uint8 H x W x 3, or float in [0, 1]; see the module docstring).

    Cheap on purpose (about as costly as the draft decode): percentiles come from the 256-bin
    histogram the entropy needs anyway, channel extremes from pairwise maxima, not a sort or a reduce
    over a 3-long axis.
    """
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.asarray(rgb, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    wr, wg, wb = _LUMA_WEIGHTS
    lum = np.sqrt(wr * _SQUARES[r] + wg * _SQUARES[g] + wb * _SQUARES[b])  # 0..1
    counts = np.bincount(np.minimum(lum * 256, 255).astype(np.intp).ravel(), minlength=256)
    share = counts / lum.size
    cumulative = np.cumsum(share)
    nz = share[share > 0]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return {
        "p90_luminance": _level(cumulative, 0.9),
        "p10_luminance": _level(cumulative, 0.1),
        "sharpness": _sharpness(lum),
        "entropy": float(-(nz * np.log2(nz)).sum()),
        "colour_spread": float(spread.mean()) / 255.0,
    }


def _level(cumulative: np.ndarray, q: float) -> float:
    """The luminance (bin centre, 0..1) below which a share ``q`` of the pixels lies."""
    return (int(np.searchsorted(cumulative, q)) + 0.5) / 256.0


def _laplacian_variance(grey: np.ndarray) -> float:
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(lap.var())


def _sharpness(grey: np.ndarray) -> float:
    h, w = (grey.shape[0] // 2) * 2, (grey.shape[1] // 2) * 2
    half = grey[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return float(np.log(_laplacian_variance(grey) + 1e-7) - np.log(_laplacian_variance(half) + 1e-7))


def _one(path: str, header: tuple[int, int] | None) -> dict | None:
    try:
        if header is None:
            head = images.read_header(path)
            header = (head.width, head.height)
        stats = image_statistics(working_image(path))
    except (ImageError, OSError, ValueError):
        return None
    return {"path": path, **stats, "width": int(header[0]), "height": int(header[1])}


def image_stats(
    paths: Sequence[str | os.PathLike],
    sizes: Sequence[tuple[int, int]] | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """One row of statistics per readable image (path, STAT_COLUMNS), in the order of ``paths``.

    ``sizes`` (width, height per path, e.g. the scan's header columns) save reading the headers again.
    Unreadable images are left out (the scan reports them). Threaded, with ``progress(done, total)``.
    """
    items = [(str(p), None if sizes is None else (int(sizes[i][0]), int(sizes[i][1]))) for i, p in enumerate(paths)]
    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    rows: list[dict] = []
    done = 0
    with ThreadPoolExecutor(THREADS, thread_name_prefix="quality") as pool:
        for part in pool.map(lambda chunk: [_one(p, h) for p, h in chunk], chunks):
            rows.extend(r for r in part if r is not None)
            done += len(part)
            if progress:
                progress(done, len(items))
    return pd.DataFrame(rows, columns=["path", *STAT_COLUMNS])


# ---- flags --------------------------------------------------------------------------------------------------


def robust_z(values: np.ndarray, min_spread: float) -> np.ndarray:
    """(x - median) / max(1.4826 * MAD, min_spread): a z-score that a few outliers cannot drag."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    median = np.median(values)
    spread = max(1.4826 * float(np.median(np.abs(values - median))), min_spread)
    return (values - median) / spread


def issue_scores(stats: pd.DataFrame) -> pd.DataFrame:
    """Per image and issue, the oriented z-score (larger = worse) and whether it is flagged.

    Columns: path, then ``<issue>_score`` and ``<issue>`` (bool) for every issue in ISSUES.
    """
    out = pd.DataFrame({"path": stats["path"].astype(str).to_numpy()})
    for issue in ISSUES:
        rule = RULES[issue]
        z = robust_z(rule.value(stats), rule.min_spread)
        score = np.abs(z) if rule.side == 0 else rule.side * z
        flagged = score >= rule.z
        if rule.bound is not None:
            raw = stats[rule.stat].to_numpy(dtype=np.float64)
            flagged &= raw < rule.bound if rule.side < 0 else raw > rule.bound
        out[f"{issue}_score"] = np.round(score, 3)
        out[issue] = flagged
    return out


def flag_issues(stats: pd.DataFrame) -> pd.DataFrame:
    """The flagged (image, issue) pairs: path, issue, score; worst first (the quality CSV)."""
    scores = issue_scores(stats)
    parts = [
        pd.DataFrame(
            {
                "path": scores.loc[scores[issue], "path"],
                "issue": issue,
                "score": scores.loc[scores[issue], f"{issue}_score"],
            }
        )
        for issue in ISSUES
    ]
    flags = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["path", "issue", "score"])
    flags["score"] = flags["score"].astype(float)
    return flags.sort_values(["score", "issue", "path"], ascending=[False, True, True], kind="stable").reset_index(
        drop=True
    )


def quality_report(
    paths: Sequence[str | os.PathLike],
    sizes: Sequence[tuple[int, int]] | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """``flag_issues(image_stats(paths, sizes, progress))``: the CLI's and a background job's one call."""
    return flag_issues(image_stats(paths, sizes, progress))
