"""What a spec's geometry does to an input of a given size, simulated without pixels (no torch).

``output_size`` is the size the model receives; the pair check compares the region of the input
each spec shows (``simulate``), with random crops at their average.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.specs.ops import DEFAULT_INPUT_HW
from core.specs.spec import TransformSpec, as_spec


@dataclass
class Geometry:
    """What a spec's geometry does to an input of a given size, with random crops at their average."""

    input_hw: tuple[int, int]
    box: list[float]  # [top, left, height, width] of the input region the output shows (may exceed it)
    hw: tuple[int, int]  # current image size
    crops: list[str] = field(default_factory=list)  # plain-words phrases, one per crop step
    resizes: list[tuple[int, int]] = field(default_factory=list)
    random_crop: dict | None = None  # RandomResizedCrop: {"scale", "ratio", "box" (the region it crops from)}

    @property
    def cropped(self) -> bool:
        return bool(self.crops)


def hw_text(hw: Sequence[float]) -> str:
    return f"{int(round(hw[0]))}×{int(round(hw[1]))}"


def _crop_box(geo: Geometry, crop_hw: Sequence[float]) -> None:
    """Take the central crop_hw of the current image (padding when larger), in input coordinates."""
    top, left, bh, bw = geo.box
    sy, sx = bh / geo.hw[0], bw / geo.hw[1]
    ch, cw = crop_hw
    geo.box = [top + (geo.hw[0] - ch) / 2 * sy, left + (geo.hw[1] - cw) / 2 * sx, ch * sy, cw * sx]
    geo.hw = (int(ch), int(cw))


def simulate(spec: TransformSpec, input_hw: tuple[int, int]) -> Geometry:
    """Follow the geometry steps of a validated spec over an input of ``input_hw``."""
    h, w = int(input_hw[0]), int(input_hw[1])
    geo = Geometry(input_hw=(h, w), box=[0.0, 0.0, float(h), float(w)], hw=(h, w))
    for index, step in enumerate(spec):
        name = step["op"]
        later_resize = any(s["op"] in ("Resize", "RandomResizedCrop") for s in spec[index + 1 :])
        if name == "Resize":
            geo.hw = (step["size"][0], step["size"][1])
            geo.resizes.append(geo.hw)
        elif name in ("CenterCrop", "RandomCrop"):
            ch, cw = step["size"]
            pad = step.get("padding", 0)
            if name == "RandomCrop" and pad == 0 and not step["pad_if_needed"] and (ch, cw) == geo.hw:
                continue  # a random crop of the whole image is no crop at all
            if name == "RandomCrop" and pad:
                _crop_box(geo, (geo.hw[0] + 2 * pad, geo.hw[1] + 2 * pad))
            what = f"crops to {ch}×{cw}" if name == "CenterCrop" else f"takes a random {ch}×{cw} crop"
            _crop_box(geo, (ch, cw))
            geo.crops.append(what + (" before resizing" if later_resize else ""))
        elif name == "RandomResizedCrop":
            lo, hi = step["scale"]
            geo.random_crop = {"scale": step["scale"], "ratio": step["ratio"], "box": list(geo.box), "hw": geo.hw}
            geo.crops.append(f"takes random crops of {lo:.0%}–{hi:.0%} of the picture (RandomResizedCrop)")
            geo.hw = (step["size"][0], step["size"][1])
            geo.resizes.append(geo.hw)
        elif name == "Pad":
            p = step["padding"]
            _crop_box(geo, (geo.hw[0] + 2 * p, geo.hw[1] + 2 * p))
            geo.crops.append(f"adds a {p}-pixel border")
    return geo


def output_size(spec: Any, input_hw: tuple[int, int] = DEFAULT_INPUT_HW) -> tuple[int, int]:
    """(height, width) of the image the model receives from an input of ``input_hw``."""
    return simulate(as_spec(spec), input_hw).hw


def fixed_output_size(spec: Any, sizes_hw: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The one (h, w) ``spec`` gives every input size in ``sizes_hw``, or None when it depends on the
    input (or the spec is empty: nothing fixes the size)."""
    spec = as_spec(spec)
    if not spec:
        return None
    outs = {simulate(spec, (int(h), int(w))).hw for h, w in set(sizes_hw)}
    return outs.pop() if len(outs) == 1 else None
