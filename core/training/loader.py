"""The training input pipeline: decode each image once, cache it as uint8, augment per epoch.

Two sources give the same batches (up to JPEG draft-decoding noise, which both share):

- ``CachedSource``: the deterministic prefix of a transform spec (the leading Resize/CenterCrop...,
  see ``core.specs.pipeline.PrefixThenRest``) is applied once per image and stored in a uint8
  memmap under ``<cache_dir>/decoded/``, keyed by the image list (paths, sizes, mtimes), the prefix
  and its output size. Batches are read in the main process (measured ~29,000 images/s; workers
  copying float batches back are slower) and the random remainder is applied per sample.
- ``DecodeSource``: open_rgb (draft-decoded to the first Resize) + the whole spec per sample, in
  ``workers`` DataLoader processes.

Every random transform of sample k in epoch e runs under its own seed (given by the caller), so an
epoch's batches depend only on (seed, epoch): a resumed run sees exactly the batches it would have seen.

Both sources take a spec validated once (a TransformSpec, e.g. ``TrainConfig.train_spec``; a raw list is
parsed once here) and split and build it with ``PrefixThenRest``, the one split inference uses too.

Feeding a GPU (``device_finish`` and ``pin_memory``, set by the training loop on CUDA): the cached source
hands out uint8 batches (a quarter of float's bytes to copy) with the Normalize left to do, which
``Batch.to`` runs on the device after a non-blocking copy from pinned memory (``DeviceNormalize``:
the same multiply-add as the CPU path); ``prefetched`` reads and pins the next batches in a thread
while the GPU works. Several processes (torchrun) each take their slice of every global batch
(``shard``), so the batch size stays the global one.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.errors import ImageError
from core.specs.pipeline import PrefixThenRest, apply_seeded, one_thread
from core.specs.spec import TransformSpec, as_spec

__all__ = [
    "Batch", "CachedSource", "DecodeSource", "DeviceNormalize", "SkippedImages", "apply_seeded", "cache_key",
    "make_source", "one_thread", "open_or_build_cache", "prefetched", "resolve_workers", "split_of", "to_uint8_hwc",
]  # fmt: skip

CACHE_VERSION = 1
ProgressFn = Callable[[int, int], None]


Shard = tuple[int, int]  # (this process's rank, processes): each takes a contiguous slice of every batch
ONE_PROCESS: Shard = (0, 1)


@dataclass
class Batch:
    images: torch.Tensor  # B x C x H x W on the CPU: float ready for the model, or uint8 when ``finish`` is set
    positions: np.ndarray  # int64 positions into the source's image list, one per row of `images`
    share: float = 1.0  # len(images) x processes / global batch size: weights this rank's loss (1: one process)
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None  # uint8 -> float, run where the batch goes

    def to(self, device: torch.device, channels_last: bool = False) -> torch.Tensor:
        """The images on ``device`` in the model's memory format, finished there when ``finish`` is set."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = self.images.to(device, non_blocking=True).contiguous(memory_format=fmt)
        return x if self.finish is None else self.finish(x).contiguous(memory_format=fmt)


def _local(n: int, shard: Shard) -> slice:
    rank, world = shard
    return slice(n * rank // world, n * (rank + 1) // world)


class DeviceNormalize:
    """uint8 -> float Normalize on whatever device the batch is on: ``raw.float() * scale + shift`` with
    scale = 1 / (255 std) and shift = -mean / std, the float32 constants and the one multiply-add of
    ``core.specs.pipeline.fused_normalize``, so on a CPU it gives the CPU path's numbers exactly."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        if raw.device not in self._on:
            self._on[raw.device] = (self.scale.to(raw.device), self.shift.to(raw.device))
        scale, shift = self._on[raw.device]
        return torch.addcmul(shift, raw.float(), scale)

    @classmethod
    def for_steps(cls, steps: PrefixThenRest) -> DeviceNormalize | None:
        """The remainder's final Normalize when everything before it runs on uint8 (nothing, or random
        uint8 steps such as a flip, which stay per sample on the CPU); None for any other remainder."""
        rest = steps.rest_spec
        if not rest:
            return cls([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
        if rest[-1].op == "Normalize" and (len(rest) == 1 or steps.random_head is not None):
            return cls(rest[-1]["mean"], rest[-1]["std"])
        return None


def resolve_workers(workers: int, device_type: str, processes: int = 1) -> int:
    """Decoding processes for ``workers`` (-1 = auto): on a CPU none (the model needs the cores, and the cache
    is read fastest in the main process); on CUDA this process's share of the cores, one kept for itself, up to 8."""
    if workers >= 0:
        return workers
    if device_type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // max(1, processes) - 1))


def prefetched(batches: Iterable[Batch], depth: int = 3, pin: bool = True) -> Iterator[Batch]:
    """``batches`` made ``depth`` ahead in a thread, in pinned memory (``pin``; needs CUDA): reading the
    cache, the per-sample steps and pinning overlap the GPU's work (numpy's copies and torch's ops
    release the GIL). Stopping early (a cancel, the step budget) stops the thread.

    For the CUDA path only: seeded random steps borrow torch's global CPU generator (apply_seeded), so
    the consuming thread must draw no CPU random numbers meanwhile (on a GPU, dropout uses the GPU's)."""
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if pin and not batch.images.is_pinned():
                    batch.images = batch.images.pin_memory()
                if not put(batch):
                    return
            put(done)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            put(err)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class SkippedImages:
    """Images that could not be decoded: left out of training and reported once."""

    reasons: dict[int, str] = field(default_factory=dict)  # position -> "file: why"


# ---- spec helpers -------------------------------------------------------------------------------


def split_of(spec: TransformSpec | PrefixThenRest | Sequence[dict]) -> PrefixThenRest:
    """The spec split into prefix and remainder (a raw list is validated here, once)."""
    return spec if isinstance(spec, PrefixThenRest) else PrefixThenRest(spec)


def to_uint8_hwc(out: Image.Image | torch.Tensor | np.ndarray) -> np.ndarray:
    """A prefix's output (PIL image, uint8 or [0, 1] float CHW tensor) as uint8 H x W x 3."""
    if isinstance(out, Image.Image):
        return np.asarray(out.convert("RGB"), dtype=np.uint8)
    if isinstance(out, np.ndarray):
        return out.astype(np.uint8, copy=False)
    t = out.detach()
    if t.dtype != torch.uint8:
        t = (t.float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return t.permute(1, 2, 0).contiguous().numpy()


# ---- decoding ---------------------------------------------------------------------------------------


class _DecodeDataset(torch.utils.data.Dataset):
    """Item (position, seed) -> (tensor or None, position, reason). Seeds make augmentations replayable."""

    def __init__(self, paths: Sequence[str], pipeline: Callable, min_size: tuple[int, int] | None, to_uint8: bool):
        self.paths = list(paths)
        self.pipeline = pipeline
        self.min_size = min_size
        self.to_uint8 = to_uint8

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]):
        from core.data import images

        pos, seed = item
        try:
            img = images.open_rgb(self.paths[pos], min_size=self.min_size)
        except ImageError as err:
            return None, pos, f"{Path(self.paths[pos]).name}: {err.message}"
        except OSError as err:
            return None, pos, f"{Path(self.paths[pos]).name}: unreadable ({err})"
        with one_thread():
            out = apply_seeded(self.pipeline, img, seed)
        return (torch.from_numpy(to_uint8_hwc(out)) if self.to_uint8 else out), pos, ""


def _collate(items: list) -> tuple[torch.Tensor | None, np.ndarray, dict[int, str]]:
    good = [(x, pos) for x, pos, _ in items if x is not None]
    bad = {pos: why for x, pos, why in items if x is None}
    images = torch.stack([x for x, _ in good]) if good else None
    return images, np.array([pos for _, pos in good], dtype=np.int64), bad


def _chunks(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


class DecodeSource:
    """Decode + full spec per sample (in ``workers`` processes); no cache."""

    def __init__(
        self,
        paths: Sequence[str],
        spec: TransformSpec | PrefixThenRest | Sequence[dict],
        workers: int = 0,
        pin_memory: bool = False,
    ):
        self.paths = list(paths)
        self.steps = split_of(spec)
        self.dataset = _DecodeDataset(self.paths, self.steps, self.steps.draft_size, False)
        self.workers = workers
        self.pin_memory = pin_memory
        self.skipped = SkippedImages()

    def batches(
        self, positions: np.ndarray, seeds: np.ndarray, batch_size: int, shard: Shard = ONE_PROCESS
    ) -> Iterator[Batch]:
        items = list(zip(positions.tolist(), seeds.tolist(), strict=True))
        parts = [(items[s], s.stop - s.start) for s in _chunks(len(items), batch_size)]
        parts = [(chunk[_local(n, shard)], n) for chunk, n in parts]
        parts = [(chunk, n) for chunk, n in parts if chunk]
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=[chunk for chunk, _ in parts],
            num_workers=self.workers,
            collate_fn=_collate,
            pin_memory=self.pin_memory,
            generator=torch.Generator(),  # the base seed must not consume the global RNG
        )
        for (images, pos, bad), (_, n) in zip(loader, parts, strict=True):
            self.skipped.reasons.update(bad)
            if images is not None:
                yield Batch(images, pos, share=len(pos) * shard[1] / n)


class CachedSource:
    """uint8 memmap of the spec's deterministic prefix; the random remainder per sample per epoch."""

    def __init__(
        self,
        cache: np.ndarray,
        spec: TransformSpec | PrefixThenRest | Sequence[dict],
        skipped: SkippedImages,
        device_finish: bool = False,
    ):
        self.cache = cache
        self.steps = split_of(spec)  # the cache holds its prefix's outputs; finish() runs the rest
        self.rest_random = self.steps.rest_is_random
        self.fast = self.steps.fast
        self.random_head = self.steps.random_head
        self.skipped = skipped
        # device_finish: batches leave as uint8 and are normalised where they are sent (the GPU)
        self.normalize = DeviceNormalize.for_steps(self.steps) if device_finish else None

    def batches(
        self, positions: np.ndarray, seeds: np.ndarray, batch_size: int, shard: Shard = ONE_PROCESS
    ) -> Iterator[Batch]:
        _mark_used(self.cache)  # once an epoch: a cache a running job reads stays the newest, never evicted first
        keep = np.array([p not in self.skipped.reasons for p in positions.tolist()], dtype=bool)
        positions, seeds = positions[keep], seeds[keep]
        for part in _chunks(len(positions), batch_size):
            n = part.stop - part.start
            mine = _local(n, shard)
            pos, part_seeds = positions[part][mine], seeds[part][mine]
            if not len(pos):
                continue  # a last batch smaller than the process count (evaluation only: training batches are full)
            nhwc = torch.from_numpy(np.ascontiguousarray(self.cache[pos]))
            share = len(pos) * shard[1] / n
            if self.normalize is not None and self.random_head is None:
                # N x H x W x 3 memory is N x 3 x H x W in channels_last: no copy here; the device makes the
                # layout the model wants, and the pinned copy and the transfer keep these strides.
                yield Batch(nhwc.permute(0, 3, 1, 2), pos, share, finish=self.normalize)
                continue
            # Made contiguous N x 3 x H x W (a cheap uint8 copy): elementwise transforms on the strided
            # NHWC view were measured 2-3x slower.
            raw = nhwc.permute(0, 3, 1, 2).contiguous()
            if self.normalize is not None:
                yield Batch(self._uint8_rest(raw, part_seeds), pos, share, finish=self.normalize)
                continue
            images = self.steps.finish(raw, part_seeds.tolist() if self.rest_random else None)
            yield Batch(torch.as_tensor(images), pos, share)

    def _uint8_rest(self, raw: torch.Tensor, seeds: np.ndarray) -> torch.Tensor:
        """The remainder's per-sample uint8 steps (a flip...), leaving its Normalize to the device."""
        if self.random_head is None:
            return raw
        head, _ = self.random_head
        with one_thread():
            return torch.stack([apply_seeded(head, img, s) for img, s in zip(raw, seeds.tolist(), strict=True)])


# ---- the memmap cache ---------------------------------------------------------------------------------


def cache_key(paths: Sequence[str], prefix: TransformSpec | Sequence[dict], out_hw: tuple[int, int]) -> str:
    """Changes when any image changes (path, size, mtime), or the prefix, or the output size."""
    h = hashlib.sha256()
    steps = as_spec(prefix).to_list()
    h.update(json.dumps({"v": CACHE_VERSION, "prefix": steps, "hw": list(out_hw)}, sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:32]


def open_or_build_cache(
    paths: Sequence[str],
    prefix: TransformSpec | Sequence[dict],
    out_hw: tuple[int, int],
    cache_dir: str | os.PathLike,
    workers: int = 0,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, SkippedImages, bool]:
    """(read-only memmap N x H x W x 3, unreadable images, whether it was built now).

    Built into a temp file and renamed, so a crash or a concurrent build never leaves a half cache.
    ``prefix`` is the deterministic prefix of a spec (``PrefixThenRest(spec).prefix_spec``).
    """
    prefix = as_spec(prefix)
    folder = Path(cache_dir) / "decoded"
    key = cache_key(paths, prefix, out_hw)
    data_path, meta_path = folder / f"{key}.u8", folder / f"{key}.json"
    shape = (len(paths), int(out_hw[0]), int(out_hw[1]), 3)
    meta = _read_meta(meta_path)
    if meta is not None and data_path.is_file() and data_path.stat().st_size == int(np.prod(shape)):
        skipped = SkippedImages({int(k): v for k, v in meta.get("skipped", {}).items()})
        _keep_within_budget(folder, data_path, meta_path)
        return np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape), skipped, False

    from core.fsutil import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    skipped = SkippedImages()
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        steps = PrefixThenRest(prefix)  # all prefix: apply_prefix is the whole spec, with its shortcut
        dataset = _DecodeDataset(paths, steps.apply_prefix, steps.draft_size, True)
        batches = [[(i, 0) for i in range(s.start, s.stop)] for s in _chunks(len(paths), 64)]
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate, generator=torch.Generator()
        )
        done = 0
        for images, pos, bad in loader:
            skipped.reasons.update(bad)
            if images is not None:
                if tuple(images.shape[1:3]) != shape[1:3]:
                    raise ValueError(f"prefix produced {tuple(images.shape[1:3])}, expected {shape[1:3]}")
                out[pos] = images.numpy()
            done += len(pos) + len(bad)
            if progress:
                progress(done, len(paths))
        out.flush()
        del out
        os.replace(tmp, data_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_json(
        meta_path,
        {
            "n": len(paths),
            "hw": list(out_hw),
            "prefix": prefix.to_list(),
            "skipped": {str(k): v for k, v in skipped.reasons.items()},
        },
    )
    _keep_within_budget(folder, data_path, meta_path)
    return np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape), skipped, True


def _keep_within_budget(folder: Path, data_path: Path, meta_path: Path) -> None:
    """Evict the least recently used decoded caches past ``decoded_cache_mb``. Never this one, nor a
    build in progress (younger than ten minutes); a job still reading an evicted file keeps its
    mapping (Linux), and the next run of it rebuilds the cache."""
    from core import cachebudget, settings

    cachebudget.touch_used(data_path)
    budget = settings.load().decoded_cache_mb << 20
    cachebudget.enforce_budget(
        folder, budget, protected=[data_path, meta_path], group=cachebudget.by_stem, min_age_s=600
    )


def _mark_used(cache: np.ndarray) -> None:
    filename = getattr(cache, "filename", None)
    if filename:
        from core import cachebudget

        cachebudget.touch_used(filename)


def _read_meta(path: Path) -> dict | None:
    from core.fsutil import read_json

    meta = read_json(path, default=None)
    return meta if isinstance(meta, dict) else None


# ---- choosing a source ------------------------------------------------------------------------------------


def make_source(
    paths: Sequence[str],
    sizes_hw: Sequence[tuple[int, int]],
    spec: TransformSpec | Sequence[dict],
    cache: str,
    cache_dir: str | os.PathLike,
    workers: int = 0,
    progress: ProgressFn | None = None,
    log: Callable[[str], None] = print,
    device_finish: bool = False,
) -> CachedSource | DecodeSource:
    """The fastest source ``spec`` allows: cached when asked and the prefix fixes one output size.

    ``device_finish`` (the CUDA path): cached batches leave as uint8 and are normalised on the device;
    decoded ones are collated into pinned memory."""
    steps = split_of(spec)
    if cache == "memmap":
        out_hw = steps.prefix_output_size(sizes_hw)
        if out_hw is not None:
            arr, skipped, built = open_or_build_cache(paths, steps.prefix_spec, out_hw, cache_dir, workers, progress)
            log(f"cache: {'built' if built else 'reusing'} {len(paths)} images at {out_hw[0]}x{out_hw[1]}")
            return CachedSource(arr, steps, skipped, device_finish=device_finish)
        why = (
            "its deterministic steps keep the input size" if steps.prefix_spec else "the spec starts with a random step"
        )
        log(f"cache: not used ({why}); decoding every epoch")
    return DecodeSource(paths, steps, workers, pin_memory=device_finish)
