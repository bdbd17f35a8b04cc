"""Exact and near-duplicate photos, and the pairs that matter: across people, across train/validation.

Exact duplicates: the same bytes, found by a BLAKE2b hash of each file (``content_hashes``, threaded;
hashlib releases the GIL, so reading and hashing overlap). The scan reads each file's header already;
hashing the rest of the bytes there costs one more read and no decode.

Near duplicates: a re-encoded, resized or slightly shifted copy of a photo. Each photo's fingerprint
is its 8 x 8 colour thumbnail (192 numbers, made from a 1/8-scale draft decode through
``core.data.images``, contrast-normalised); two photos are near duplicates when their fingerprints
differ by at most NEAR_DISTANCE (root mean square, in about grey levels of a typical photo).
Measured on the demo data: a re-encoded or resized copy moves 1-3, a 1% shift up to 4, while two
*different* photos of one person in one place (mask on vs off) are 6.5 or more apart. A 64-bit
dHash or pHash was measured first and rejected: on grey-level structure alone, such photos of one
person are closer (Hamming distance 3/64) than a re-encoded copy of one of them, so those hashes
cannot tell them apart.

``find_duplicates(paths)`` -> frame path_a, path_b, kind ("exact" | "near"), distance (0 for exact;
the fingerprint distance for near), closest first. ``flag_pairs`` adds ``different_people`` (the two
photos are filed under different people: the competition's reused-id quirk) and ``leakage`` (one in
a run's training set, the other in its validation set: validation scores are inflated).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from core.data import images
from core.errors import ImageError

Progress = Callable[[int, int], None]  # (images done, images in all)

NEAR_DISTANCE = 5.0  # fingerprint RMS difference (grey levels) at or below which two photos are near duplicates
FINGERPRINT_SIDE = 8  # the fingerprint is an 8 x 8 colour thumbnail
THREADS = 4  # file reads and JPEG decodes release the GIL: a few threads overlap them on two cores
_CHUNK = 64  # images per task: few enough tasks to keep the pool cheap, small enough for smooth progress
_CONTRAST_FLOOR = 8.0  # grey levels
_TYPICAL_CONTRAST = 50.0  # a demo photo's thumbnail spread: distances stay in about grey levels
_BLOCK_ROWS = 1024  # rows of the pairwise distance matrix computed at once (1024 x N float32)
COLUMNS = ["path_a", "path_b", "kind", "distance"]


# ---- per-file work ------------------------------------------------------------------------------


def content_hash(path: str | os.PathLike) -> str | None:
    """BLAKE2b (128-bit) hex digest of the file's bytes; None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    except OSError:
        return None


def content_hashes(paths: Sequence[str | os.PathLike], progress: Progress | None = None) -> list[str | None]:
    """``content_hash`` of every path, in order, read in THREADS threads."""
    return _threaded(paths, content_hash, progress)


def fingerprint(path: str | os.PathLike) -> np.ndarray | None:
    """The photo's 8 x 8 RGB thumbnail as 192 float32 values (0..255); None when it cannot be decoded."""
    from PIL import Image

    try:
        im = images.open_rgb(path, min_size=(4 * FINGERPRINT_SIDE, 4 * FINGERPRINT_SIDE))
    except (ImageError, OSError, ValueError):
        return None
    # BOX averages whole source pixels: the same mean colours whatever the draft scale was
    small = im.resize((FINGERPRINT_SIDE, FINGERPRINT_SIDE), Image.Resampling.BOX, reducing_gap=None)
    values = np.asarray(small, dtype=np.float32).reshape(-1)
    # Contrast-normalised, so two different but very dark (or washed-out) photos are not "near" just
    # because all their colours are squeezed together; the floor keeps flat photos' noise from being magnified.
    return (values - values.mean()) / (values.std() + _CONTRAST_FLOOR) * _TYPICAL_CONTRAST


def fingerprints(paths: Sequence[str | os.PathLike], progress: Progress | None = None) -> np.ndarray:
    """N x 192 float32 fingerprints; rows of unreadable images are NaN (they match nothing)."""
    size = FINGERPRINT_SIDE * FINGERPRINT_SIDE * 3
    out = np.full((len(paths), size), np.nan, dtype=np.float32)
    for i, fp in enumerate(_threaded(paths, fingerprint, progress)):
        if fp is not None:
            out[i] = fp
    return out


def _threaded(paths: Sequence, work: Callable, progress: Progress | None) -> list:
    paths = list(paths)
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    results: list = []
    done = 0
    with ThreadPoolExecutor(THREADS, thread_name_prefix="dups") as pool:
        for part in pool.map(lambda chunk: [work(p) for p in chunk], chunks):
            results.extend(part)
            done += len(part)
            if progress:
                progress(done, len(paths))
    return results


# ---- pairs ------------------------------------------------------------------------------------------------


def exact_pairs(paths: Sequence[str], hashes: Sequence[str | None]) -> list[tuple[int, int]]:
    """Index pairs (i < j) of files with the same content hash."""
    groups: dict[str, list[int]] = {}
    for i, digest in enumerate(hashes):
        if digest is not None:
            groups.setdefault(digest, []).append(i)
    return [(a, b) for rows in groups.values() for k, a in enumerate(rows) for b in rows[k + 1 :]]


def near_pairs(prints: np.ndarray, max_distance: float = NEAR_DISTANCE) -> list[tuple[int, int, float]]:
    """Index pairs (i < j) whose fingerprints are within ``max_distance`` (RMS grey levels), with the distance.

    All pairs are compared, a block of rows at a time, as |a|^2 + |b|^2 - 2ab (one matrix product per
    block): 18,900 photos take a few seconds on two cores.
    """
    x = np.asarray(prints, dtype=np.float32)
    ok = ~np.isnan(x).any(axis=1)
    rows = np.flatnonzero(ok)
    x = x[ok].astype(np.float64)  # float32 cancellation in |a|^2 + |b|^2 - 2ab would blur distances near 0
    dims = x.shape[1] if x.ndim == 2 and x.size else 1
    sq = (x * x).sum(axis=1)
    limit = max_distance * max_distance * dims
    found: list[tuple[int, int, float]] = []
    for start in range(0, len(x), _BLOCK_ROWS):
        block = x[start : start + _BLOCK_ROWS]
        d2 = sq[start : start + len(block), None] + sq[None, :] - 2.0 * (block @ x.T)
        ii, jj = np.nonzero(d2 <= limit)
        keep = jj > ii + start  # each unordered pair once, never a photo with itself
        for i, j in zip(ii[keep], jj[keep], strict=True):
            found.append((int(rows[start + i]), int(rows[j]), float(np.sqrt(max(d2[i, j], 0.0) / dims))))
    return found


def find_duplicates(
    paths: Sequence[str | os.PathLike],
    near_distance: float = NEAR_DISTANCE,
    progress: Progress | None = None,
    hashes: Sequence[str | None] | None = None,
) -> pd.DataFrame:
    """Exact and near-duplicate pairs among ``paths``: path_a, path_b, kind, distance, closest first.

    ``hashes`` (content hashes in the order of ``paths``, e.g. from the scan) skip re-reading the files.
    A pair that is exact is not listed again as near. ``progress`` counts both passes (2 x N steps).
    """
    paths = [str(p) for p in paths]
    n = len(paths)

    def stage(offset: int) -> Progress | None:
        return (lambda done, _total: progress(offset + done, 2 * n)) if progress else None

    if hashes is None:
        hashes = content_hashes(paths, stage(0))
    elif progress:
        progress(n, 2 * n)
    exact = exact_pairs(paths, hashes)
    rows = [(paths[a], paths[b], "exact", 0.0) for a, b in exact]
    seen = set(exact)
    if near_distance > 0:
        for a, b, dist in near_pairs(fingerprints(paths, stage(n)), near_distance):
            if (a, b) not in seen:
                rows.append((paths[a], paths[b], "near", round(dist, 3)))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["distance"] = frame["distance"].astype(float)
    kind_order = frame["kind"].map({"exact": 0, "near": 1})
    order = np.lexsort(
        (frame["path_b"].to_numpy(), frame["path_a"].to_numpy(), kind_order.to_numpy(), frame["distance"].to_numpy())
    )
    return frame.iloc[order].reset_index(drop=True)


def duplicate_groups(dups: pd.DataFrame) -> list[list[str]]:
    """Connected groups of paths (a photo and all its copies), largest first: what a gallery shows."""
    parent: dict[str, str] = {}

    def root(p: str) -> str:
        while parent.setdefault(p, p) != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for a, b in zip(dups["path_a"], dups["path_b"], strict=True):
        parent[root(a)] = root(b)
    groups: dict[str, list[str]] = {}
    for p in parent:
        groups.setdefault(root(p), []).append(p)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


# ---- what a pair means ------------------------------------------------------------------------------------------


def flag_pairs(
    dups: pd.DataFrame,
    index_frame: pd.DataFrame | None = None,
    train_paths: Iterable[str] | None = None,
    val_paths: Iterable[str] | None = None,
) -> pd.DataFrame:
    """``dups`` with ``different_people`` and ``leakage`` columns added (a copy).

    ``different_people``: both photos are in ``index_frame`` (a DatasetIndex frame: path and person_id
    or group) and filed under different people. ``leakage``: one photo is in ``train_paths`` and the
    other in ``val_paths`` (a run's split), so the model was validated on a photo it trained on.
    """
    out = dups.copy()
    a, b = out["path_a"].astype(str), out["path_b"].astype(str)
    if index_frame is not None and len(index_frame) and "path" in index_frame.columns:
        column = "person_id" if "person_id" in index_frame.columns else "group"
        person = dict(zip(index_frame["path"].astype(str), index_frame[column].astype(str), strict=False))
        pa, pb = a.map(person), b.map(person)
        out["different_people"] = (pa.notna() & pb.notna() & (pa != pb)).to_numpy()
    else:
        out["different_people"] = False
    train = {str(p) for p in train_paths or ()}
    val = {str(p) for p in val_paths or ()}
    out["leakage"] = ((a.isin(train) & b.isin(val)) | (a.isin(val) & b.isin(train))).to_numpy()
    return out
