"""Specs -> torchvision.transforms.v2 pipelines, in stages, and the one prefix/remainder split.

``build_pipeline(spec)`` goes from a PIL image / uint8 HWC array / uint8 CHW tensor to a plain float32
CHW tensor (normalised if the spec has Normalize); ``dtype=torch.uint8`` ends in uint8 instead (only
for specs without float-only steps). ``build_stages`` gives the same pipeline as "geometry", "colour"
and "tensor" parts for the page.

``PrefixThenRest`` is the one place that splits a spec into its leading deterministic geometry (the
prefix: run once per image, cached as uint8 by the training loader) and the remainder (run per
sample, per epoch), and builds both with their shortcuts. The training loader's decode and cached
sources, inference and the page's preview all use it, so they compute the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from core.errors import SpecError
from core.specs.geometry import fixed_output_size
from core.specs.ops import OPS, STAGES, is_deterministic
from core.specs.spec import Step, TransformSpec, as_spec

# ---- building ------------------------------------------------------------------------------------


def _build_step(step: Step) -> Any:
    op = OPS[step.op]
    params = {k: v for k, v in step.to_dict().items() if k != "op"}
    if op.build is not None:
        return op.build(params)
    return getattr(v2, op.name)(**params)


class Contiguous(v2.Transform):
    """Make the image contiguous in memory. Pictures from PIL or numpy arrive as channels-last views
    (which torchvision resizes fastest), but an op that draws noise shaped like its input
    (GaussianNoise) would then draw different noise for a PIL image than for a tensor."""

    def forward(self, *inputs: Any) -> Any:
        image = inputs[0] if len(inputs) == 1 else inputs
        if not isinstance(image, torch.Tensor) or image.is_contiguous():
            return image
        if isinstance(image, tv_tensors.TVTensor):
            return tv_tensors.wrap(image.contiguous(), like=image)
        return image.contiguous()


def _to_float() -> Any:
    return v2.ToDtype(torch.float32, scale=True)


def _build_steps(spec: TransformSpec, dtype_in: torch.dtype) -> tuple[list[list[Any]], torch.dtype]:
    """Per step, its transforms (a ToDtype first where it needs float); and the dtype after the last.

    Images stay uint8 for as long as possible: uint8 resizing is several times faster than float on
    CPU, and it is what makes the uint8 prefix cache give bit-identical results.
    """
    dtype = dtype_in
    per_step: list[list[Any]] = []
    for step in spec:
        parts = []
        if OPS[step.op].needs_float and dtype != torch.float32:
            parts.append(_to_float())
            dtype = torch.float32
        if OPS[step.op].needs_contiguous:
            parts.append(Contiguous())
        parts.append(_build_step(step))
        per_step.append(parts)
    return per_step, dtype


def compose(spec: TransformSpec, dtype: torch.dtype = torch.float32) -> v2.Compose:
    """build_pipeline for a spec already validated (no checks of the steps again)."""
    per_step, out_dtype = _build_steps(spec, torch.uint8)
    transforms: list[Any] = [v2.ToImage()] + [t for parts in per_step for t in parts]
    if dtype == torch.uint8:
        if out_dtype != torch.uint8:
            first = next(s.op for s in spec if OPS[s.op].needs_float)
            raise SpecError(f"{first} works on float images, so this spec cannot end in uint8")
    elif dtype == torch.float32:
        if out_dtype != torch.float32:
            transforms.append(_to_float())
    else:
        raise SpecError(f"build_pipeline makes uint8 or float32 images, not {dtype}")
    transforms.append(v2.ToPureTensor())
    return v2.Compose(transforms)


def build_pipeline(spec: Any, dtype: torch.dtype = torch.float32) -> v2.Compose:
    """Spec -> v2.Compose from a PIL image / uint8 array / uint8 CHW tensor to a plain CHW tensor of ``dtype``."""
    return compose(as_spec(spec), dtype)


def _stage_names(spec: TransformSpec) -> list[str]:
    reached = 0
    stages = []
    for step in spec:
        reached = max(reached, STAGES.index(OPS[step.op].stage))
        stages.append(STAGES[reached])
    return stages


def stage_of_steps(spec: Any) -> list[str]:
    """The stage each step runs in. Steps keep their order: a step whose own stage comes earlier than
    the stage already reached runs in the later one, so chaining the stages equals the whole pipeline."""
    return _stage_names(as_spec(spec))


def build_stages(spec: Any) -> dict[str, v2.Compose]:
    """{"geometry", "colour", "tensor"} -> Compose, in order; chained they equal build_pipeline(spec)."""
    spec = as_spec(spec)
    per_step, out_dtype = _build_steps(spec, torch.uint8)
    groups: dict[str, list[Any]] = {name: [] for name in STAGES}
    groups["geometry"].append(v2.ToImage())
    for stage, parts in zip(_stage_names(spec), per_step, strict=True):
        groups[stage].extend(parts)
    if out_dtype != torch.float32:
        groups["tensor"].append(_to_float())
    groups["tensor"].append(v2.ToPureTensor())
    return {name: v2.Compose(groups[name] or [v2.Identity()]) for name in STAGES}


# ---- the prefix/remainder split ---------------------------------------------------------------------


def split_deterministic_prefix(spec: Any) -> tuple[TransformSpec, TransformSpec]:
    """(prefix, rest): the leading deterministic geometry steps (Resize, CenterCrop, Pad, flips with
    p=1), which can be applied once and cached as uint8, and the steps after them.
    ``build_pipeline(rest)(build_pipeline(prefix, dtype=torch.uint8)(img))`` equals the whole pipeline."""
    spec = as_spec(spec)
    cut = 0
    while cut < len(spec) and OPS[spec[cut].op].stage == "geometry" and is_deterministic(spec[cut]):
        cut += 1
    return spec[:cut], spec[cut:]


def draft_size(spec: Sequence[Any]) -> tuple[int, int] | None:
    """The (h, w) a JPEG may be draft-decoded to without changing what ``spec`` produces.

    Only when the spec starts with a Resize: a crop in pixels before any resize must see the full
    image. Reads raw or validated steps alike (it only looks at the first one).
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


def fused_normalize(rest: TransformSpec) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For a remainder that is just Normalize (the baseline's) or nothing: uint8 -> float in one
    multiply-add, the same numbers as ToDtype(scale=True) + Normalize (to float rounding) at about
    half the cost, measured on 64 x 3 x 128 x 96 batches. None for any other remainder."""
    if not rest:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    elif len(rest) == 1 and rest[0].op == "Normalize":
        mean, std = rest[0]["mean"], rest[0]["std"]
    else:
        return None
    std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    scale = 1.0 / (255.0 * std_t)
    shift = -torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t
    return lambda raw: torch.addcmul(shift, raw.float(), scale)


def uint8_head(rest: TransformSpec) -> tuple[Callable, Callable] | None:
    """(per-sample uint8 pipeline, batch Normalize) when ``rest`` is uint8-capable steps then one
    Normalize (e.g. flip + Normalize): the float conversion then runs once per batch, not per image."""
    if len(rest) < 2 or rest[-1].op != "Normalize" or any(OPS[s.op].needs_float for s in rest[:-1]):
        return None
    return compose(rest[:-1], dtype=torch.uint8), fused_normalize(rest[-1:])


def _resize_only_size(prefix: TransformSpec) -> tuple[int, int] | None:
    """(h, w) when the prefix is exactly one Resize to a fixed (h, w), else None."""
    if len(prefix) != 1 or prefix[0].op != "Resize":
        return None
    size = prefix[0]["size"]
    return (int(size[0]), int(size[1]))


@contextlib.contextmanager
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


def apply_seeded(pipeline: Callable, x: Any, seed: int) -> Any:
    """``pipeline(x)`` with torch's CPU RNG seeded by ``seed``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        return pipeline(x)


class PrefixThenRest:
    """A spec as its uint8 deterministic prefix then the remainder, each built once.

    - ``apply_prefix(img)``: the prefix's uint8 CHW output (what the training cache stores). A prefix
      that is one Resize to the size the image already has (a JPEG draft-decoded straight to it) is
      skipped: torchvision returns a same-size image unchanged, and the v2 dispatch it saves was
      ~0.3 ms of a ~2 ms image at 128x96 (measured in prediction).
    - ``finish(batch, seeds)``: the remainder on a uint8 batch -> float batch. A Normalize-only
      remainder runs fused (``fused_normalize``); random uint8 steps then Normalize run per sample
      on uint8 with one batch Normalize (``uint8_head``); random steps draw per sample, from
      ``seeds`` when given (replayable) or else the global RNG.
    - ``__call__(img)``: prefix then remainder for one image (the decode path).
    """

    def __init__(self, spec: Any):
        spec = as_spec(spec)
        self.spec = spec
        self.prefix_spec, self.rest_spec = split_deterministic_prefix(spec)
        self.prefix = compose(self.prefix_spec, dtype=torch.uint8)
        self.rest = compose(self.rest_spec)
        self.fast = fused_normalize(self.rest_spec)
        self.rest_is_random = self.rest_spec.random
        self.random_head = uint8_head(self.rest_spec) if self.rest_is_random else None
        self.resize_only_to = _resize_only_size(self.prefix_spec)
        self.draft_size = draft_size(spec)  # the smallest decode that gives the same pixels

    def prefix_output_size(self, sizes_hw: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
        """The one (h, w) the prefix gives every input size, or None (no prefix, or it depends on the input)."""
        return fixed_output_size(self.prefix_spec, sizes_hw)

    def apply_prefix(self, img: Any) -> torch.Tensor:
        """The prefix's uint8 CHW output."""
        if self.resize_only_to is not None and hasattr(img, "getbands") and img.size[::-1] == self.resize_only_to:
            return torch.from_numpy(np.array(img)).permute(2, 0, 1)  # what ToImage gives
        return self.prefix(img)

    def finish(self, batch: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """The remainder on a contiguous uint8 N x 3 x H x W batch (the prefix's outputs)."""
        if self.rest_is_random:
            draws = seeds if seeds is not None else [None] * len(batch)
            with one_thread():
                if self.random_head is not None:
                    head, normalize = self.random_head
                    return normalize(torch.stack([_draw(head, img, s) for img, s in zip(batch, draws, strict=True)]))
                return torch.stack([_draw(self.rest, img, s) for img, s in zip(batch, draws, strict=True)])
        if self.fast is not None:
            return self.fast(batch)
        with one_thread():  # cheap elementwise work: threads only add hand-off costs
            return self.rest(batch)  # deterministic: one call on the whole batch

    def __call__(self, img: Any) -> torch.Tensor:
        x = self.apply_prefix(img)
        return self.fast(x[None])[0] if self.fast is not None else self.rest(x)


def _draw(pipeline: Callable, img: torch.Tensor, seed: int | None) -> torch.Tensor:
    return pipeline(img) if seed is None else apply_seeded(pipeline, img, seed)
