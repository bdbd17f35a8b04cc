"""The training input pipeline: decode each image once, cache it as uint8, augment per epoch.

Two sources give the same batches (up to JPEG draft-decoding noise, which both share):

- ``CachedSource``: the deterministic prefix of a transform spec (the leading Resize/CenterCrop...,
  see ``core.specs.transforms.split_deterministic_prefix``) is applied once per image and stored in a uint8
  memmap under ``<cache_dir>/decoded/``, keyed by the image list (paths, sizes, mtimes), the prefix
  and its output size. Batches are read in the main process (measured ~29,000 images/s; workers
  copying float batches back are slower) and the random remainder is applied per sample.
- ``DecodeSource``: open_rgb (draft-decoded to the first Resize) + the whole spec per sample, in
  ``workers`` DataLoader processes.

Every random transform of sample k in epoch e runs under its own seed (given by the caller), so an
epoch's batches depend only on (seed, epoch): a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.errors import ImageError

CACHE_VERSION = 1
ProgressFn = Callable[[int, int], None]


@dataclass
class Batch:
    images: torch.Tensor  # float B x C x H x W, ready for the model (still on the CPU)
    positions: np.ndarray  # int64 positions into the source's image list, one per row of `images`


@dataclass
class SkippedImages:
    """Images that could not be decoded: left out of training and reported once."""

    reasons: dict[int, str] = field(default_factory=dict)  # position -> "file: why"


# ---- spec helpers -------------------------------------------------------------------------------


def draft_size(spec: Sequence[dict]) -> tuple[int, int] | None:
    """The (h, w) a JPEG may be draft-decoded to without changing what ``spec`` produces.

    Only when the spec starts with a Resize: a crop in pixels before any resize must see the full image.
    """
    if not spec or spec[0].get("op") != "Resize":
        return None
    size = spec[0].get("size")
    if isinstance(size, int):
        return (size, size)  # the shorter side goes to `size`, so both sides stay >= size
    if isinstance(size, (list, tuple)) and len(size) == 1:
        return (int(size[0]), int(size[0]))
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    return None


def spec_is_random(spec: Sequence[dict]) -> bool:
    from core.specs import transforms

    return not all(transforms.is_deterministic(step) for step in transforms.validate_spec(list(spec)))


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


def prefix_output_size(prefix: Sequence[dict], sizes_hw: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The one (h, w) the prefix gives every image, or None when it depends on the input size."""
    from core.specs import transforms

    if not prefix:
        return None
    outs = {tuple(transforms.output_size(list(prefix), (int(h), int(w)))) for h, w in set(sizes_hw)}
    return outs.pop() if len(outs) == 1 else None


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


def apply_seeded(pipeline: Callable, x, seed: int):
    """``pipeline(x)`` with torch's CPU RNG seeded by ``seed``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        return pipeline(x)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run per-image tensor ops on one thread.

    A single 3x128x96 image is too small to split across threads: with two threads, OpenMP's hand-off
    costs more than the work, and on a busy machine the spinning threads made a flip+normalise take
    45-65 ms instead of 2 ms (measured). The model still gets every thread between batches.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _collate(items: list) -> tuple[torch.Tensor | None, np.ndarray, dict[int, str]]:
    good = [(x, pos) for x, pos, _ in items if x is not None]
    bad = {pos: why for x, pos, why in items if x is None}
    images = torch.stack([x for x, _ in good]) if good else None
    return images, np.array([pos for _, pos in good], dtype=np.int64), bad


def _chunks(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


class PrefixThenRest:
    """A spec as its uint8 deterministic prefix then the remainder: what the cached path computes, so
    both sources agree; a Normalize-only remainder takes the fused fast path (see fused_normalize).

    ``apply_prefix`` skips a prefix that is one Resize to the size the image already has (a JPEG
    draft-decoded straight to it): torchvision returns a same-size image unchanged, and the v2
    dispatch it saves was ~0.3 ms of a ~2 ms image at 128x96 (measured in prediction).
    """

    def __init__(self, spec: Sequence[dict]):
        from core.specs import transforms

        prefix, rest = transforms.split_deterministic_prefix(list(spec))
        self.prefix = transforms.build_pipeline(prefix, dtype=torch.uint8)
        self.rest = transforms.build_pipeline(rest)
        self.fast = fused_normalize(rest)
        self.rest_is_random = not all(transforms.is_deterministic(step) for step in rest)
        self.resize_only_to = _resize_only_size(prefix)

    def apply_prefix(self, img: Image.Image) -> torch.Tensor:
        """The prefix's uint8 CHW output."""
        if self.resize_only_to is not None and img.size[::-1] == self.resize_only_to:
            return torch.from_numpy(np.array(img)).permute(2, 0, 1)  # what ToImage gives
        return self.prefix(img)

    def __call__(self, img) -> torch.Tensor:
        x = self.apply_prefix(img)
        return self.fast(x[None])[0] if self.fast is not None else self.rest(x)


def _resize_only_size(prefix: list[dict]) -> tuple[int, int] | None:
    """(h, w) when the prefix is exactly one Resize to a fixed (h, w), else None."""
    if len(prefix) != 1 or prefix[0]["op"] != "Resize":
        return None
    size = prefix[0].get("size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    return None


class DecodeSource:
    """Decode + full spec per sample (in ``workers`` processes); no cache."""

    def __init__(self, paths: Sequence[str], spec: Sequence[dict], workers: int = 0):
        self.paths = list(paths)
        self.dataset = _DecodeDataset(self.paths, PrefixThenRest(spec), draft_size(spec), False)
        self.workers = workers
        self.skipped = SkippedImages()

    def batches(self, positions: np.ndarray, seeds: np.ndarray, batch_size: int) -> Iterator[Batch]:
        items = list(zip(positions.tolist(), seeds.tolist(), strict=True))
        batch_items = [items[s] for s in _chunks(len(items), batch_size)]
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=batch_items, num_workers=self.workers, collate_fn=_collate,
            generator=torch.Generator(),  # the loader's base seed must not consume the global RNG
        )  # fmt: skip
        for images, pos, bad in loader:
            self.skipped.reasons.update(bad)
            if images is not None:
                yield Batch(images, pos)


class CachedSource:
    """uint8 memmap of the spec's deterministic prefix; the random remainder per sample per epoch."""

    def __init__(self, cache: np.ndarray, rest: Sequence[dict], skipped: SkippedImages):
        from core.specs import transforms

        self.cache = cache
        rest = transforms.validate_spec(list(rest))
        self.rest = transforms.build_pipeline(rest)
        self.rest_random = spec_is_random(rest)
        self.fast = fused_normalize(rest)
        self.random_head = uint8_head(rest) if self.rest_random else None
        self.skipped = skipped

    def batches(self, positions: np.ndarray, seeds: np.ndarray, batch_size: int) -> Iterator[Batch]:
        keep = np.array([p not in self.skipped.reasons for p in positions.tolist()], dtype=bool)
        positions, seeds = positions[keep], seeds[keep]
        for part in _chunks(len(positions), batch_size):
            pos = positions[part]
            # Made contiguous N x 3 x H x W (a cheap uint8 copy): elementwise transforms on the strided
            # NHWC view were measured 2-3x slower.
            raw = torch.from_numpy(np.ascontiguousarray(self.cache[pos])).permute(0, 3, 1, 2).contiguous()
            if self.random_head is not None:  # random uint8 steps per sample, then one fused Normalize
                head, normalize = self.random_head
                with one_thread():
                    images = normalize(torch.stack([apply_seeded(head, img, s) for img, s in zip(raw, seeds[part].tolist(), strict=True)]))
            elif self.rest_random:
                with one_thread():
                    images = torch.stack([apply_seeded(self.rest, img, s) for img, s in zip(raw, seeds[part].tolist(), strict=True)])
            elif self.fast is not None:
                images = self.fast(raw)
            else:
                with one_thread():  # cheap elementwise work: threads only add hand-off costs
                    images = self.rest(raw)  # deterministic: one call on the whole batch
            yield Batch(torch.as_tensor(images), pos)


def fused_normalize(rest: list[dict]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For a remainder that is just Normalize (the baseline's) or nothing: uint8 -> float in one
    multiply-add, the same numbers as ToDtype(scale=True) + Normalize (to float rounding) at about
    half the cost, measured on 64 x 3 x 128 x 96 batches. None for any other remainder."""
    if not rest:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    elif len(rest) == 1 and rest[0]["op"] == "Normalize":
        mean, std = rest[0]["mean"], rest[0]["std"]
    else:
        return None
    std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    scale = 1.0 / (255.0 * std_t)
    shift = -torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t
    return lambda raw: torch.addcmul(shift, raw.float(), scale)


def uint8_head(rest: list[dict]) -> tuple[Callable, Callable] | None:
    """(per-sample uint8 pipeline, batch Normalize) when ``rest`` is uint8-capable steps then one
    Normalize (e.g. flip + Normalize): the float conversion then runs once per batch, not per image."""
    from core.errors import SpecError
    from core.specs import transforms

    if len(rest) < 2 or rest[-1]["op"] != "Normalize":
        return None
    try:
        head = transforms.build_pipeline(rest[:-1], dtype=torch.uint8)
    except SpecError:  # a colour step that needs float images: keep the plain path
        return None
    return head, fused_normalize(rest[-1:])


# ---- the memmap cache ---------------------------------------------------------------------------------


def cache_key(paths: Sequence[str], prefix: Sequence[dict], out_hw: tuple[int, int]) -> str:
    """Changes when any image changes (path, size, mtime), or the prefix, or the output size."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "prefix": list(prefix), "hw": list(out_hw)}, sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:32]


def open_or_build_cache(
    paths: Sequence[str],
    prefix: Sequence[dict],
    out_hw: tuple[int, int],
    cache_dir: str | os.PathLike,
    workers: int = 0,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, SkippedImages, bool]:
    """(read-only memmap N x H x W x 3, unreadable images, whether it was built now).

    Built into a temp file and renamed, so a crash or a concurrent build never leaves a half cache.
    """
    folder = Path(cache_dir) / "decoded"
    key = cache_key(paths, prefix, out_hw)
    data_path, meta_path = folder / f"{key}.u8", folder / f"{key}.json"
    shape = (len(paths), int(out_hw[0]), int(out_hw[1]), 3)
    meta = _read_meta(meta_path)
    if meta is not None and data_path.is_file() and data_path.stat().st_size == int(np.prod(shape)):
        skipped = SkippedImages({int(k): v for k, v in meta.get("skipped", {}).items()})
        return np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape), skipped, False

    from core.fsutil import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    skipped = SkippedImages()
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        dataset = _DecodeDataset(paths, PrefixThenRest(prefix).apply_prefix, draft_size(prefix), True)
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
    atomic_write_json(meta_path, {"n": len(paths), "hw": list(out_hw), "prefix": list(prefix),
                                  "skipped": {str(k): v for k, v in skipped.reasons.items()}})  # fmt: skip
    return np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape), skipped, True


def _read_meta(path: Path) -> dict | None:
    from core.fsutil import read_json

    meta = read_json(path, default=None)
    return meta if isinstance(meta, dict) else None


# ---- choosing a source ------------------------------------------------------------------------------------


def make_source(
    paths: Sequence[str],
    sizes_hw: Sequence[tuple[int, int]],
    spec: Sequence[dict],
    cache: str,
    cache_dir: str | os.PathLike,
    workers: int = 0,
    progress: ProgressFn | None = None,
    log: Callable[[str], None] = print,
) -> CachedSource | DecodeSource:
    """The fastest source ``spec`` allows: cached when asked and the prefix fixes one output size."""
    from core.specs import transforms

    if cache == "memmap":
        prefix, rest = transforms.split_deterministic_prefix(list(spec))
        out_hw = prefix_output_size(prefix, sizes_hw)
        if out_hw is not None:
            arr, skipped, built = open_or_build_cache(paths, prefix, out_hw, cache_dir, workers, progress)
            log(f"cache: {'built' if built else 'reusing'} {len(paths)} images at {out_hw[0]}x{out_hw[1]}")
            return CachedSource(arr, rest, skipped)
        why = "the spec starts with a random step" if not prefix else "its deterministic steps keep the input size"
        log(f"cache: not used ({why}); decoding every epoch")
    return DecodeSource(paths, spec, workers)
