"""What the page shows: augmented samples, what the model receives stage by stage, a test pattern.

``preview_samples(image, spec, n, seed)`` gives ``n`` augmented versions as uint8 HWC arrays,
reproducibly by seed; ``model_input_view(image, spec, seed)`` runs the spec stage by stage and
describes each result; ``denormalize`` turns a pipeline output back into a picture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from core.errors import SpecError
from core.specs.geometry import hw_text
from core.specs.ops import STAGES
from core.specs.pipeline import PrefixThenRest, build_stages, one_thread, stage_of_steps
from core.specs.spec import Step, as_spec


def _unnormalize(tensor: torch.Tensor, normalize_steps: list[Step]) -> torch.Tensor:
    for step in reversed(normalize_steps):
        mean = torch.tensor(step["mean"], dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.tensor(step["std"], dtype=tensor.dtype).view(-1, 1, 1)
        tensor = tensor * std + mean
    return tensor


def _to_display(tensor: torch.Tensor, normalize_steps: list[Step]) -> np.ndarray:
    """A CHW uint8 or float tensor (normalised by ``normalize_steps``) as a uint8 HWC array."""
    tensor = torch.as_tensor(tensor).detach().cpu()
    if tensor.dtype == torch.uint8:
        return tensor.permute(1, 2, 0).contiguous().numpy()
    tensor = _unnormalize(tensor.float(), normalize_steps)
    return (tensor.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def denormalize(tensor: torch.Tensor, spec: Any) -> np.ndarray:
    """A pipeline output (CHW) as uint8 HWC for display, undoing the spec's Normalize steps."""
    steps = [s for s in as_spec(spec) if s.op == "Normalize"]
    return _to_display(tensor, steps)


def _as_uint8_chw(image: Any) -> torch.Tensor:
    """PIL image, uint8 HWC array or uint8 CHW tensor -> uint8 CHW tensor."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise SpecError(f"expected a uint8 CHW image tensor, got {image.dtype} {tuple(image.shape)}")
        return image
    if hasattr(image, "getbands"):  # PIL
        return v2.functional.pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise SpecError(f"expected a uint8 HxWx3 image array, got {array.dtype} {array.shape}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if not array.flags.writeable:  # np.asarray(PIL image) is read-only; torch wants writable memory
        array = array.copy()
    return torch.from_numpy(array).permute(2, 0, 1)  # a channels-last view: the fastest layout to resize


def _run(pipeline: Callable, image: torch.Tensor) -> torch.Tensor:
    """Apply a pipeline, turning torchvision's complaints about this image into a SpecError."""
    try:
        return pipeline(image)
    except (ValueError, RuntimeError, TypeError) as err:
        h, w = image.shape[-2:]
        raise SpecError(f"the pipeline cannot process this {h}×{w} image: {err}") from err


def preview_samples(image: Any, spec: Any, n: int, seed: int) -> list[np.ndarray]:
    """``n`` augmented versions of ``image`` as uint8 HWC arrays; the same seed gives the same samples.

    The deterministic prefix (e.g. a resize) runs once; only the random rest runs per sample. The
    global RNG is left as it was.
    """
    split = PrefixThenRest(spec)
    base = _as_uint8_chw(image)
    if split.prefix_spec:
        base = _run(split.prefix, base)
    normalize_steps = [s for s in split.spec if s.op == "Normalize"]
    with one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return [_to_display(_run(split.rest, base), normalize_steps) for _ in range(int(n))]


@dataclass
class StagePicture:
    stage: str  # "input", "geometry", "colour", "tensor"
    image: np.ndarray  # uint8 HWC, at the stage's real resolution (de-normalised)
    caption: str


@dataclass
class ModelInputView:
    """What the model receives from one image, stage by stage, plus the final tensor's statistics."""

    stages: list[StagePicture]
    shape: tuple[int, ...]  # of the final tensor: (3, h, w)
    dtype: str
    minimum: float
    maximum: float
    channel_mean: list[float]


def model_input_view(image: Any, spec: Any, seed: int = 0) -> ModelInputView:
    """Run the spec stage by stage on ``image`` under ``seed`` and describe what comes out of each."""
    spec = as_spec(spec)
    stages = build_stages(spec)
    stage_names = stage_of_steps(spec)
    current = _as_uint8_chw(image)
    pictures = [StagePicture("input", _to_display(current, []), f"input {hw_text(current.shape[-2:])}")]
    normalize_done: list[Step] = []
    with one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for name in STAGES:
            current = _run(stages[name], current)
            steps = [s for s, st in zip(spec, stage_names, strict=True) if st == name]
            normalize_done += [s for s in steps if s["op"] == "Normalize"]
            if steps:
                ops = ", ".join(s["op"] for s in steps)
                pictures.append(
                    StagePicture(
                        name,
                        _to_display(current, normalize_done),
                        f"after {name} ({ops}): {hw_text(current.shape[-2:])}",
                    )
                )
    final = current.float()
    return ModelInputView(
        stages=pictures,
        shape=tuple(final.shape),
        dtype=str(current.dtype).replace("torch.", ""),
        minimum=float(final.min()),
        maximum=float(final.max()),
        channel_mean=[float(v) for v in final.mean(dim=(1, 2))],
    )


def test_pattern(height: int = 512, width: int = 384) -> Any:
    """A synthetic photo-sized picture (grid, circle, colour bars) that makes crops and flips obvious."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (235, 235, 230))
    draw = ImageDraw.Draw(img)
    for x in range(0, width, 32):
        draw.line([(x, 0), (x, height)], fill=(180, 180, 200), width=1)
    for y in range(0, height, 32):
        draw.line([(0, y), (width, y)], fill=(180, 180, 200), width=1)
    bars = [(220, 40, 40), (40, 170, 60), (40, 80, 220), (240, 200, 40), (30, 30, 30), (250, 250, 250)]
    bar_w = width // len(bars)
    for i, colour in enumerate(bars):
        draw.rectangle([i * bar_w, height - 48, (i + 1) * bar_w, height], fill=colour)
    cx, cy, r = width // 2, height * 2 // 5, min(width, height) // 4
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(225, 190, 160), outline=(90, 60, 40), width=3)
    draw.rectangle([cx - r // 2, cy + r // 6, cx + r // 2, cy + r * 2 // 3], fill=(120, 170, 230))  # a "mask"
    draw.polygon([(8, 8), (72, 8), (8, 72)], fill=(200, 30, 120))  # top-left marker shows flips
    draw.rectangle([0, 0, width - 1, height - 1], outline=(20, 20, 20), width=4)
    return img
