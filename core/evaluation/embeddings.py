"""A run's penultimate-layer features ("embeddings"), a 2-D map of them, and nearest neighbours.

The features of an image are the input of the run's classifier head (the last ``nn.Linear``, the
module ``core.training.models.replace_head`` swaps): what the model "sees" just before it decides.
Photos close together there look alike to the model, so a 2-D map of them shows whether mistakes
form one cluster (one lighting, one person) or are scattered, and "more like this" finds a photo's
neighbours.

Files, in the run folder (float16 halves the size; the map and neighbours need no more precision)::

    embeddings.npy              N x D float16, row i = the i-th row of the index below
    embeddings.parquet          path (str) and, when known, group, label, pred, confidence
    embeddings-<slug>.npy/.parquet   the same for another image folder (``embed --data DATA``);
                                <slug> = the folder's name + 8 hex digits of its resolved path

``embeddings.*`` cover the run's validation images (the paths of val_predictions.parquet). The
training loop can save them at the best epoch at no extra forward pass: wrap its validation pass
in ``capture_head_inputs(model)`` and call ``save_run_embeddings(run, captured.array(), frame)``.
Both files are written atomically, the .npy first; a pair whose row counts differ is refused.

Typical use::

    path = embed_run("models/run-1", progress=print)           # validation images
    feats, index = load_embeddings("models/run-1")
    xy = project_2d(feats)                                      # N x 2 (UMAP; PCA for tiny sets)
    rows, dist = nearest_neighbours(feats, 0, k=8)              # "more like this" for row 0
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.errors import ConfigError, DatasetError, RunError
from core.fsutil import atomic_write

if TYPE_CHECKING:
    from torch import nn

    from core.evaluation.infer import RunModel

Progress = Callable[[int, int], None]  # (images done, images in all)
BASENAME = "embeddings"
PCA_BELOW = 50  # fewer points than this: PCA (UMAP's neighbourhood graph needs more to mean anything)
UMAP_NEIGHBOURS = 15  # umap-learn's default: local structure without splitting classes into specks
UMAP_INPUT_DIMS = 50  # features are reduced to this many principal components before UMAP (speed, less noise)


# ---- the head's input ----------------------------------------------------------------------------


def head_module(model: nn.Module) -> nn.Module:
    """The classifier head: the last ``nn.Linear`` (the rule models.replace_head and head_weight_key use)."""
    from core.training import models

    name = models.head_weight_key(model).rsplit(".", 1)[0]
    if name == "None":
        raise ConfigError(f"model: {type(model).__name__} has no linear classifier head to take features from")
    return model.get_submodule(name) if name else model


@dataclass
class CapturedFeatures:
    """Head inputs seen while a ``capture_head_inputs`` block ran, batch after batch."""

    batches: list[np.ndarray] = field(default_factory=list)

    def array(self) -> np.ndarray:
        """N x D float32 in the order the batches ran (an empty 0 x 0 array when none ran)."""
        return np.concatenate(self.batches) if self.batches else np.zeros((0, 0), dtype=np.float32)


@contextlib.contextmanager
def capture_head_inputs(model: nn.Module) -> Iterator[CapturedFeatures]:
    """Record the classifier head's input (flattened per image) for every forward pass inside the block."""
    captured = CapturedFeatures()

    def record(_module, inputs) -> None:
        x = inputs[0]
        captured.batches.append(x.detach().flatten(1).float().cpu().numpy())

    hook = head_module(model).register_forward_pre_hook(record)
    try:
        yield captured
    finally:
        hook.remove()


# ---- computing --------------------------------------------------------------------------------------


@dataclass
class Embeddings:
    """Features of the images that could be read, with their predictions, and the ones that could not."""

    frame: pd.DataFrame  # path, pred, confidence (+ whatever the caller's frame carried), one row per feature
    features: np.ndarray  # N x D float32
    failures: list[str]  # "name: reason" for images left out


def compute_embeddings(
    run_model: RunModel,
    paths: Sequence[str],
    batch_size: int = 64,
    progress: Progress | None = None,
) -> Embeddings:
    """Head-input features of ``paths`` through the run's eval pipeline (the same pixels as prediction).

    Unreadable images are left out and listed in ``failures``; decoding runs in threads ahead of the model.
    """
    import torch

    from core.evaluation.infer import InputPipeline, iter_batches

    pipeline = InputPipeline(run_model.eval_spec)
    kept: list[int] = []
    preds: list[np.ndarray] = []
    confidence: list[np.ndarray] = []
    failures: list[str] = []
    done = 0
    with torch.inference_mode(), capture_head_inputs(run_model.net) as captured:
        for start, items in iter_batches(list(paths), pipeline.load_uint8, batch_size):
            rows = [i for i, item in enumerate(items) if not isinstance(item, str)]
            failures.extend(item for item in items if isinstance(item, str))
            if rows:
                batch = pipeline.finish(torch.stack([items[i] for i in rows])).to(run_model.device)
                probs = torch.softmax(run_model.net(batch.contiguous(memory_format=torch.channels_last)).float(), 1)
                top, pred = probs.max(dim=1)
                preds.append(pred.cpu().numpy())
                confidence.append(top.cpu().numpy())
                kept.extend(start + i for i in rows)
            done += len(items)
            if progress:
                progress(done, len(paths))
    features = captured.array()
    frame = pd.DataFrame({"path": [str(paths[i]) for i in kept]})
    frame["pred"] = np.concatenate(preds).astype(np.int64) if preds else np.zeros(0, np.int64)
    frame["confidence"] = np.concatenate(confidence).astype(np.float32) if confidence else np.zeros(0, np.float32)
    return Embeddings(frame=frame, features=features.astype(np.float32, copy=False), failures=failures)


# ---- files ------------------------------------------------------------------------------------------------


def embedding_paths(run_root: str | os.PathLike, data: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(features .npy, index .parquet) in the run folder: the validation set's, or ``data``'s."""
    root = Path(run_root)
    if data is None:
        stem = BASENAME
    else:
        resolved = str(Path(data).resolve())
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(resolved).name)[:40] or "data"
        stem = f"{BASENAME}-{name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"
    return root / f"{stem}.npy", root / f"{stem}.parquet"


def save_embeddings(
    run_root: str | os.PathLike, frame: pd.DataFrame, features: np.ndarray, data: str | os.PathLike | None = None
) -> Path:
    """Write ``features`` (float16) and ``frame`` (needs a path column; row i = feature row i); return the .npy."""
    features = np.asarray(features)
    if "path" not in frame.columns or len(frame) != len(features):
        raise ConfigError(
            f"embeddings: need a path column and one row per feature ({len(frame)} rows, {len(features)} features)"
        )
    npy, index = embedding_paths(run_root, data)
    half = np.ascontiguousarray(features, dtype=np.float16)
    atomic_write(npy, lambda fh: np.save(fh, half, allow_pickle=False), "wb")
    table = frame.reset_index(drop=True).copy()
    table["path"] = table["path"].astype(str)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    atomic_write(index, lambda fh: fh.write(buffer.getvalue()), "wb")
    return npy


def save_run_embeddings(run, features: np.ndarray, frame: pd.DataFrame) -> Path:
    """The training loop's hook: the validation images' features at the best epoch (``run``: RunFolder or path).

    ``frame`` is the validation predictions' frame (path, group, label, pred, ...), row i = features row i.
    """
    root = getattr(run, "root", run)
    keep = [c for c in ("path", "group", "label", "pred") if c in frame.columns]
    table = frame.loc[:, keep].reset_index(drop=True)
    prob_cols = [c for c in frame.columns if re.fullmatch(r"p\d+", str(c))]
    if prob_cols:
        table["confidence"] = frame[prob_cols].to_numpy().max(axis=1).astype(np.float32)
    return save_embeddings(root, table, features)


def load_embeddings(
    run_root: str | os.PathLike, data: str | os.PathLike | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """(N x D float16 features, index frame) saved for the run (validation set, or ``data``)."""
    npy, index = embedding_paths(run_root, data)
    if not npy.is_file() or not index.is_file():
        what = f"images in {data}" if data is not None else "validation images"
        hint = f" --data {data}" if data is not None else ""
        command = f"python -m core embed --run {npy.parent}{hint}"
        raise RunError(f"{npy.parent}: no embeddings of the {what} yet; compute them with `{command}`")
    try:
        features = np.load(npy, allow_pickle=False)
        frame = pd.read_parquet(index)
    except (OSError, ValueError) as err:
        raise RunError(f"{npy}: unreadable embeddings ({err}); compute them again") from err
    if features.ndim != 2 or len(features) != len(frame):
        raise RunError(
            f"{npy}: {len(features)} features for {len(frame)} index rows (half written?); compute them again"
        )
    return features, frame


def validation_frame(run_root: str | os.PathLike) -> pd.DataFrame:
    """The run's validation images (path, group, label, pred, confidence) from val_predictions.parquet."""
    from core import runs

    run = runs.open_run(run_root)
    frame = runs.read_predictions_safely(run.val_predictions)
    keep = [c for c in ("path", "group", "label") if c in frame.columns]
    return frame.loc[:, keep].reset_index(drop=True)


def embed_run(
    run_ref: str | os.PathLike,
    data: str | os.PathLike | None = None,
    progress: Progress | None = None,
    batch_size: int = 64,
    device: str | None = None,
) -> tuple[Path, Embeddings]:
    """Compute and save a run's embeddings of its validation images (or every image of ``data``).

    The CLI's and a background job's one call. Returns the .npy path and what was computed.
    """
    from core.evaluation.infer import collect_items, load_run

    member = load_run(run_ref, device)
    if data is None:
        frame = validation_frame(member.root)
    else:
        items = collect_items(data)
        frame = items.frame.loc[:, ["path", "label"]].copy()
        frame["label"] = frame["label"].astype(np.int64)
    if frame.empty:
        raise DatasetError(f"{data or member.root}: no images to embed")
    result = compute_embeddings(member, frame["path"].astype(str).tolist(), batch_size=batch_size, progress=progress)
    extra = frame.drop_duplicates("path").set_index("path")
    merged = result.frame.join(extra, on="path")
    result.frame = merged.loc[:, ["path", *extra.columns, "pred", "confidence"]]
    return save_embeddings(member.root, result.frame, result.features, data), result


# ---- the 2-D map and neighbours --------------------------------------------------------------------------


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def project_2d(features: np.ndarray, method: str = "auto", random_state: int = 0) -> np.ndarray:
    """N x 2 float32 coordinates for a scatter map of ``features`` (N x D).

    ``method``: "umap" (umap-learn, cosine distances, ``n_neighbors`` at most N-1, deterministic for a
    given ``random_state``), "pca" (scikit-learn), or "auto": PCA below PCA_BELOW points or when
    umap-learn is not installed, else UMAP.
    """
    if method not in ("auto", "umap", "pca"):
        raise ConfigError(f"map method {method!r}: choose auto, umap or pca")
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ConfigError(f"features: need an N x D array, got shape {x.shape}")
    n = len(x)
    if n < 3 or x.shape[1] < 2:
        return np.zeros((n, 2), dtype=np.float32)
    if method == "umap" and not umap_available():
        raise ConfigError("map method umap: umap-learn is not installed; `pip install umap-learn==0.5.12` or use pca")
    if method == "pca" or (method == "auto" and (n < PCA_BELOW or not umap_available())):
        return _pca(x, 2)
    return _umap(x, random_state)


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = min(dims, x.shape[0], x.shape[1])
    out = PCA(n_components=dims, random_state=0).fit_transform(x).astype(np.float32)
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out


def _umap(x: np.ndarray, random_state: int) -> np.ndarray:
    import warnings

    import umap

    if x.shape[1] > UMAP_INPUT_DIMS:
        x = _pca(x, UMAP_INPUT_DIMS)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(UMAP_NEIGHBOURS, len(x) - 1)),
        metric="cosine",
        random_state=random_state,
        init="spectral" if len(x) > UMAP_NEIGHBOURS + 1 else "random",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": determinism is the point
        return reducer.fit_transform(x).astype(np.float32)


def nearest_neighbours(features: np.ndarray, i: int, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cosine distances) of the ``k`` rows nearest to row ``i``, closest first, ``i`` itself left out.

    Plain numpy: one matrix-vector product, a few ms for tens of thousands of rows (the rows are
    converted to float32 unit vectors once per array and kept for the next query on the same array,
    so change a features array only by making a new one).
    """
    unit = _unit_rows(features)
    if not 0 <= i < len(unit):
        raise ConfigError(f"row {i}: the embeddings have rows 0..{len(unit) - 1}")
    sims = unit @ unit[i]
    sims[i] = -np.inf
    k = max(0, min(int(k), len(unit) - 1))
    rows = np.argpartition(-sims, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
    rows = rows[np.argsort(-sims[rows], kind="stable")]
    return rows.astype(np.int64), (1.0 - sims[rows]).astype(np.float32)


_unit_cache: list = [None, None]  # [weak reference to the last features array, its float32 unit rows]


def _unit_rows(features: np.ndarray) -> np.ndarray:
    import weakref

    ref, unit = _unit_cache
    if ref is not None and ref() is features:
        return unit
    x = np.array(features, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    x /= norms
    try:
        _unit_cache[:] = [weakref.ref(features), x]
    except TypeError:  # not an ndarray (a list): nothing to remember it by
        pass
    return x
