"""Predictions over a dataset with one run or an ensemble (optional TTA), and submission.csv.

A run is always predicted with its own eval spec (which fixes the input geometry) and its own
weights: there is deliberately no parameter to change the size or the crop, because "trained with a
crop, predicted without it" is the competition's most common bug.

Speed: images are decoded in a thread pool (Pillow releases the GIL) a couple of batches ahead of
the model; a JPEG is draft-decoded by libjpeg at the smallest scale that still covers the first
Resize of the spec (2-4x cheaper than a full decode); the model runs batched on a copy with each
BatchNorm folded into its convolution, channels_last, under ``torch.inference_mode``; on CUDA when present
(autocast, bf16 where the GPU has it, uint8 batches normalised there); on a CPU cores are shared (core.training.cputhreads.CpuShare).
bench/infer.py: 5.8x the notebook's batch-1 loop over the 12,600-photo demo eval set on 2 cores.

Typical use::

    result = predict(["models/run-1", "models/run-2"], "data/demo/eval", tta=True)
    summary = write_outputs(result, "submissions/sub-1/submission.csv")
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core import runs
from core.errors import CheckpointError, ConfigError, DatasetError, ImageError, SpecError, SubmissionError
from core.evaluation import submission
from core.evaluation.predjobs import output_paths, resolve_run_path
from core.fsutil import atomic_write_json
from core.specs.spec import TransformSpec
from core.training.cputhreads import CpuShare
from core.training.loader import DeviceNormalize
from core.training.parts import amp_dtype, autocast

Progress = Callable[[int, int], None]  # (images done, images in all) over every run of the ensemble
DEFAULT_BATCH_SIZE = 64
_MAX_LISTED = 20


class EvalImagesError(SubmissionError):
    """Images to predict are missing or unreadable; ``images`` lists them as 'name: reason'."""

    def __init__(self, images: list[str]):
        self.images = list(images)
        shown = "; ".join(self.images[:_MAX_LISTED])
        more = len(self.images) - _MAX_LISTED
        super().__init__(
            f"{len(self.images)} image(s) are missing or unreadable, nothing was written; restore or replace "
            f"them and predict again: {shown}" + (f" and {more} more" if more > 0 else "")
        )


# ---- runs -------------------------------------------------------------------------------------


@dataclass
class RunModel:
    """A run ready to predict: its network (eval mode, on ``device``) and what it was trained for."""

    run_id: str
    root: Path
    model_name: str
    task: str
    classes: list[str]
    img_size: tuple[int, int]
    eval_spec: TransformSpec  # validated once when the run is loaded
    model: torch.nn.Module  # the weights as loaded
    device: torch.device
    net: torch.nn.Module | None = None  # what predictions run through: ``model`` fused for inference
    amp_dtype: torch.dtype | None = None  # autocast dtype on CUDA (None: full precision)

    def __post_init__(self) -> None:
        if self.net is None:
            self.net = self.model

    def describe(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "path": str(self.root),
            "model": self.model_name,
            "task": self.task,
            "classes": len(self.classes),
            "img_size": list(self.img_size),
        }


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_path(run: runs.RunFolder) -> Path:
    """best.pt when present (the one chosen on validation), else last.pt."""
    for path in (run.best_checkpoint, run.last_checkpoint):
        if path.is_file():
            return path
    raise CheckpointError(f"{run.root}: no checkpoint yet (checkpoints/best.pt or last.pt); train or import one")


def load_run(ref: str | os.PathLike, device: str | torch.device | None = None) -> RunModel:
    """Load a run's checkpoint into its architecture; refuse a checkpoint that does not match the run."""
    from core.training import models

    run = runs.open_run(resolve_run_path(ref))
    config = runs.read_config(run)
    ckpt_path = checkpoint_path(run)
    ckpt = runs.load_checkpoint(ckpt_path)
    missing = [k for k in ("model", "model_name", "task", "classes", "eval_spec") if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{ckpt_path}: not a workbench checkpoint (missing {', '.join(missing)}); import it instead"
        )
    name, task, classes = str(ckpt["model_name"]), str(ckpt["task"]), list(ckpt["classes"])
    # The run's config says what the run is; a checkpoint that disagrees was copied in from elsewhere.
    if config.get("task") not in (None, task):
        raise CheckpointError(
            f"{ckpt_path.name}: task mismatch: checkpoint is for task {task!r}, run {run.id} for {config['task']!r}"
        )
    if config.get("model") not in (None, name):
        raise CheckpointError(
            f"{ckpt_path.name}: architecture mismatch: checkpoint is {name!r}, run {run.id} is {config['model']!r}"
        )
    try:
        models.check_model_name(name)
    except ConfigError as err:
        raise CheckpointError(f"{ckpt_path.name}: unknown architecture {name!r} ({err})") from err
    model = models.build_model(name, len(classes), pretrained=False)
    models.load_state_dict_checked(model, ckpt["model"], name, len(classes))
    device = torch.device(device) if device is not None else default_device()
    model = model.to(device=device).eval()
    net = models.fuse_for_inference(model).to(memory_format=torch.channels_last)
    img_size = ckpt.get("img_size") or config.get("img_size") or (0, 0)
    try:
        eval_spec = TransformSpec.parse(ckpt["eval_spec"], f"{ckpt_path.name}: eval_spec")
    except SpecError as err:
        raise CheckpointError(f"{err}; re-import the checkpoint with a valid eval spec") from err
    return RunModel(
        run_id=run.id,
        root=run.root,
        model_name=name,
        task=task,
        classes=classes,
        img_size=(int(img_size[0]), int(img_size[1])),
        eval_spec=eval_spec,
        model=model,
        device=device,
        net=net,
        amp_dtype=amp_dtype("auto", device),
    )


def check_ensemble(members: Sequence[RunModel]) -> None:
    """Runs averaged together must predict the same task over the same classes in the same order."""
    if not members:
        raise ConfigError("no runs given: choose at least one run to predict with")
    first = members[0]
    for other in members[1:]:
        if other.task != first.task:
            raise ConfigError(
                f"cannot ensemble: run {first.run_id} predicts task {first.task!r}, {other.run_id} predicts {other.task!r}"
            )
        if other.classes != first.classes:
            raise ConfigError(
                f"cannot ensemble: runs {first.run_id} and {other.run_id} have different classes "
                f"({len(first.classes)} vs {len(other.classes)}, or in another order)"
            )


# ---- what to predict -----------------------------------------------------------------------------


@dataclass
class Items:
    """The images to predict: ``frame`` has id (ImageID or path relative to the root), path, label."""

    root: Path
    kind: str  # "eval" (info.csv + images/), "images" (a folder of images), "dataset" (scan())
    frame: pd.DataFrame
    info_csv: Path | None = None
    missing: list[str] = field(default_factory=list)


def collect_items(data: str | os.PathLike) -> Items:
    """Find the images under ``data``: an eval folder with info.csv, a plain folder of images, or a dataset."""
    from core.data import datasets, images

    root = Path(data)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found; give the eval folder (with info.csv) or a dataset folder")
    if (root / "info.csv").is_file() or (root / "eval" / "info.csv").is_file():  # an eval folder or its parent
        ev = datasets.scan_eval(root)
        frame = pd.DataFrame({"id": ev.frame["ImageID"].astype(str), "path": ev.frame["path"].astype(str), "label": -1})
        return Items(Path(ev.root), "eval", frame, info_csv=Path(ev.info_csv), missing=[str(m) for m in ev.missing])
    flat = sorted(p for p in root.iterdir() if p.is_file() and images.is_image_name(p.name))
    if flat and not any(p.is_dir() and not images.is_junk(p.name) for p in root.iterdir()):
        frame = pd.DataFrame({"id": [p.name for p in flat], "path": [str(p) for p in flat], "label": -1})
        return Items(root, "images", frame)
    index = datasets.scan(root)
    frame = pd.DataFrame(
        {
            "id": index.frame["rel"].astype(str),
            "path": index.frame["path"].astype(str),
            "label": index.frame["label"].astype(int),
        }
    )
    return Items(Path(index.root), "dataset", frame)


# ---- loading -----------------------------------------------------------------------------------------


def draft_size(spec: Sequence[Any]) -> tuple[int, int] | None:
    """The size a JPEG may be draft-decoded to: the training loader's own rule, so that inference
    sees the same pixels training did (only when the spec starts with a Resize)."""
    from core.specs.pipeline import draft_size as spec_draft_size

    return spec_draft_size(spec)


class InputPipeline:
    """How a run sees an image, in two halves so the costly half runs per image in threads:

    ``load_uint8(path)``: open_rgb (EXIF upright, modes handled, draft-decoded when safe) and the
    spec's leading deterministic geometry (resize, crops) -> uint8 CHW, small. ``finish(batch, device)``:
    the rest of the spec on a uint8 batch -> float BCHW, one op per step for the whole batch (on CUDA a
    Normalize-only rest runs on the GPU; random steps draw from the global RNG). ``pipeline(path)``: both.

    The steps are the training loader's own (``core.specs.pipeline.PrefixThenRest``): the same shortcuts
    (a Resize to the draft-decoded size skipped, Normalize fused), so the same numbers as training.
    """

    def __init__(self, eval_spec: TransformSpec | Sequence[dict]):
        from core.specs.pipeline import PrefixThenRest

        self.steps = PrefixThenRest(eval_spec)
        self._min_size = self.steps.draft_size
        self._normalize = DeviceNormalize.for_steps(self.steps) if self.steps.fast is not None else None  # on CUDA

    def load_uint8(self, path: str | os.PathLike) -> torch.Tensor:
        from core.data import images

        return self.steps.apply_prefix(images.open_rgb(path, min_size=self._min_size))

    def finish(self, batch: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        if device is not None and device.type == "cuda" and self._normalize is not None:  # on a pinned uint8 copy
            return self._normalize(batch.pin_memory().to(device, non_blocking=True))
        return self.steps.finish(batch)

    def __call__(self, path: str | os.PathLike) -> torch.Tensor:
        return self.finish(self.load_uint8(path).unsqueeze(0))[0]


def input_loader(eval_spec: TransformSpec | Sequence[dict]) -> InputPipeline:
    """path -> the float CHW tensor a run sees (what predict() feeds the model, image by image)."""
    return InputPipeline(eval_spec)


def _load_or_reason(load: Callable[[str], torch.Tensor], path: str) -> torch.Tensor | str:
    try:
        return load(path)
    except ImageError as err:
        return f"{Path(path).name}: {err.message}"
    except (OSError, ValueError) as err:
        return f"{Path(path).name}: unreadable ({err})"


def iter_batches(
    paths: Sequence[str], load: Callable[[str], torch.Tensor], batch_size: int, threads: int | None = None
) -> Iterator[tuple[int, list[torch.Tensor | str]]]:
    """(start index, loaded items or failure reasons) per batch, decoded two batches ahead in threads."""
    threads = threads or max(2, min(8, os.cpu_count() or 2))
    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(threads, thread_name_prefix="infer-load") as pool:
        pending: deque = deque()
        queue = iter(starts)

        def submit_next() -> None:
            start = next(queue, None)
            if start is not None:
                chunk = paths[start : start + batch_size]
                pending.append((start, [pool.submit(_load_or_reason, load, p) for p in chunk]))

        for _ in range(3):
            submit_next()
        while pending:
            start, futures = pending.popleft()
            submit_next()
            yield start, [f.result() for f in futures]


def predict_probabilities(
    member: RunModel,
    paths: Sequence[str],
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Softmax probabilities (N x K, float32) of one run over ``paths`` and the failures as 'name: reason'."""
    pipeline = InputPipeline(member.eval_spec)
    probs = np.zeros((len(paths), len(member.classes)), dtype=np.float32)
    failures: list[str] = []
    threads = CpuShare(member.device)
    with torch.inference_mode(), threads:
        for start, items in iter_batches(paths, threads.timed(pipeline.load_uint8), batch_size):
            failures.extend(item for item in items if isinstance(item, str))
            if not failures:  # once anything failed the result is discarded: skip the model work
                with threads.timing_model(len(items)):
                    for rows, batch in _same_size_groups(items):
                        probs[[start + i for i in rows]] = _forward(member, pipeline.finish(batch, member.device), tta)
            if progress:
                progress(len(items))
    return probs, failures


def _same_size_groups(items: list[torch.Tensor]) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Stack images of one size together (a spec without a fixed final size can give several)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(tuple(item.shape), []).append(i)
    for rows in groups.values():
        yield rows, torch.stack([items[i] for i in rows])


def _forward(member: RunModel, batch: torch.Tensor, tta: bool) -> np.ndarray:
    batch = batch.to(member.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with autocast(member.device, member.amp_dtype):
        p = torch.softmax(member.net(batch).float(), dim=1)
        if tta:  # horizontal flip: people and masks are left-right symmetric
            p = (p + torch.softmax(member.net(batch.flip(-1)).float(), dim=1)) / 2
    return p.cpu().numpy()


# ---- predictions ---------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """Averaged predictions: ``frame`` has id, path, label, pred, p0..p{K-1} in the items' order."""

    frame: pd.DataFrame
    classes: list[str]
    task: str
    members: list[dict]
    tta: bool
    items: Items
    seconds: float

    @property
    def counts(self) -> list[int]:
        counts = np.bincount(self.frame["pred"].to_numpy(), minlength=len(self.classes))
        return [int(c) for c in counts]


def predict(
    run_refs: Sequence[str | os.PathLike | RunModel],
    data: str | os.PathLike | Items,
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> Prediction:
    """Predict ``data`` with one run or an ensemble (probabilities averaged), each with its own eval spec.

    Missing or unreadable images stop the prediction with EvalImagesError listing them (checked
    before any model work for missing files, during the first run's pass for undecodable ones).
    """
    members = [r if isinstance(r, RunModel) else load_run(r, device) for r in run_refs]
    check_ensemble(members)
    items = data if isinstance(data, Items) else collect_items(data)
    if items.kind == "eval" and members[0].task != "class":
        raise SubmissionError(
            f"run {members[0].run_id} predicts task {members[0].task!r}; a submission needs the 18-class task 'class'"
        )
    paths = items.frame["path"].tolist()
    absent = sorted({*items.missing, *(Path(p).name for p in paths if not os.path.isfile(p))})
    if absent:
        raise EvalImagesError([f"{name}: missing (or not a plain file name inside images/)" for name in absent])
    if not paths:
        raise DatasetError(f"{items.root}: no images to predict")

    total, done = len(paths) * len(members), 0
    started = time.perf_counter()

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    summed = np.zeros((len(paths), len(members[0].classes)), dtype=np.float64)
    for member in members:
        probs, failures = predict_probabilities(member, paths, tta=tta, batch_size=batch_size, progress=step)
        if failures:
            raise EvalImagesError(failures)
        summed += probs
    mean = (summed / len(members)).astype(np.float32)
    frame = items.frame.loc[:, ["id", "path", "label"]].reset_index(drop=True)
    frame["pred"] = mean.argmax(axis=1).astype(int)
    frame = pd.concat([frame, pd.DataFrame(mean, columns=[f"p{k}" for k in range(mean.shape[1])])], axis=1)
    return Prediction(
        frame=frame,
        classes=list(members[0].classes),
        task=members[0].task,
        members=[m.describe() for m in members],
        tta=tta,
        items=items,
        seconds=time.perf_counter() - started,
    )


# ---- outputs ----------------------------------------------------------------------------------------------


def write_outputs(result: Prediction, out_csv: str | os.PathLike) -> dict[str, Any]:
    """Write the CSV (submission.csv for an eval set), the probabilities and summary.json; return the summary.

    For an eval set the written file is validated against info.csv; a failing check raises SubmissionError.
    """
    paths = output_paths(out_csv)
    if result.items.kind == "eval":
        predicted = dict(zip(result.frame["id"], result.frame["pred"], strict=True))
        submission.write_submission(submission.build_submission(result.items.info_csv, predicted), paths["csv"])
        problems = submission.validate_submission(paths["csv"], result.items.info_csv, num_classes=len(result.classes))
    else:
        from core.fsutil import atomic_write_text, spreadsheet_safe

        table = result.frame.loc[:, ["id", "label", "pred"]].copy()
        table["class_name"] = [spreadsheet_safe(result.classes[k]) for k in table["pred"]]
        table["id"] = table["id"].map(spreadsheet_safe)  # file names are user data; this CSV opens in spreadsheets
        atomic_write_text(paths["csv"], table.to_csv(index=False))
        problems = []
    runs.write_predictions(paths["probabilities"], result.frame)
    summary = {
        "kind": result.items.kind,
        "data": str(result.items.root),
        "info_csv": str(result.items.info_csv) if result.items.info_csv else None,
        "runs": result.members,
        "tta": result.tta,
        "task": result.task,
        "classes": result.classes,
        "images": len(result.frame),
        "counts": result.counts,
        "seconds": round(result.seconds, 3),
        "images_per_s": round(len(result.frame) * len(result.members) / max(result.seconds, 1e-9), 1),
        "files": {k: p.name for k, p in paths.items()},
        "validator": {"valid": not problems, "problems": problems},
        "created_at": time.time(),
    }
    atomic_write_json(paths["summary"], summary)
    if problems:
        raise SubmissionError(f"{paths['csv'].name} failed validation: " + "; ".join(problems))
    return summary


def predict_to_files(
    run_refs: Sequence[str | os.PathLike],
    data: str | os.PathLike,
    out_csv: str | os.PathLike,
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """predict() then write_outputs(): the CLI's and the background job's one call."""
    result = predict(run_refs, data, tta=tta, batch_size=batch_size, device=device, progress=progress)
    return write_outputs(result, out_csv)
