"""JSON transform specs -> torchvision.transforms.v2 pipelines; presets; the train/eval pair check.

A spec is a list of steps, each ``{"op": NAME, **params}`` with NAME and params as in
``torchvision.transforms.v2`` (sizes are ``[height, width]``)::

    [{"op": "CenterCrop", "size": [320, 256]}, {"op": "Resize", "size": [128, 96]},
     {"op": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}]

The same spec drives the Augmentations page, the training loader and inference, so what is previewed
is what trains. Public API (the contract other modules code against):

    OPS: dict[str, OpInfo]      # registry: params (type, range, default), random: bool, stage
                                # ("geometry" | "colour" | "tensor")
    validate_spec(spec) -> list[dict]    # normalised copy with defaults filled; raises SpecError naming
                                         # the step (1-based), op and parameter
    build_pipeline(spec, dtype=torch.float32) -> v2.Compose
        # input: PIL image, uint8 HWC array or uint8 CHW tensor; output: a plain float32 CHW tensor
        # (normalised if the spec has Normalize). dtype=torch.uint8 ends in uint8 instead (only for
        # specs without float-only steps), which is what the loader's uint8 cache wants.
    build_stages(spec) -> dict[str, v2.Compose]   # "geometry", "colour", "tensor" in order; chained
                                                   # they equal build_pipeline(spec)
    split_deterministic_prefix(spec) -> (prefix, rest)
        # the leading steps that are deterministic geometry (Resize, CenterCrop, Pad, flips with p=1)
        # and can be applied once and cached as uint8 by the training loader; `rest` is applied per
        # sample, per epoch. build_pipeline(rest)(build_pipeline(prefix, dtype=torch.uint8)(img))
        # equals build_pipeline(spec)(img) exactly.
    output_size(spec, input_hw=(512, 384)) -> (h, w)   # final size the model receives
    PRESETS: dict[str, tuple[list, list]]   # name -> (train spec, eval spec): baseline, center-crop, light, strong
    preset(name, img_size=None) -> (train, eval)  # a preset, optionally with its final Resize set to img_size
    check_pair(train_spec, eval_spec, input_hw=(512, 384)) -> list[str]   # findings in words; [] if they match
    denormalize(tensor, spec) -> uint8 HWC numpy for display
    preview_samples(image, spec, n, seed) -> list[uint8 HWC numpy]   # reproducible by seed
    model_input_view(image, spec, seed) -> ModelInputView            # each stage as a picture + stats
    parse_spec_json(text, source) / load_spec_file(path) / spec_to_json(spec)
    parse_spec_document(text, source) / load_spec_document(path) -> (train, eval or None)  # a spec or a pair
    saved pairs (settings.specs_dir): save_named_pair(name, train, eval, folder=None) /
        list_named_pairs(folder=None) -> list[str] / load_named_pair(name, folder=None) -> (train, eval)
    resolve_pair(name, img_size=None, folder=None) -> (train, eval)   # a preset or a saved pair
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import AutoAugmentPolicy, InterpolationMode, v2

from core.errors import SpecError

STAGES = ("geometry", "colour", "tensor")
DEFAULT_INPUT_HW = (512, 384)  # the competition's photos: 384 wide x 512 high
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# ----------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------

_REQUIRED = object()  # marks a parameter without a torchvision default; the page offers ParamInfo.suggest


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of an op, as the validator and the page's widgets read it."""

    name: str  # the torchvision keyword
    kind: str  # "int" | "float" | "bool" | "choice" | "size" ([h, w]) | "pair" ([lo, hi]) | "triple" (3 floats)
    default: Any  # value used when the step omits it; _REQUIRED when the step must give it
    low: float | None = None  # inclusive bounds of every number in the value
    high: float | None = None
    choices: tuple = ()  # allowed values for kind "choice"
    optional: bool = False  # null is allowed and means "off" (torchvision's None)
    scalar: str = ""  # how a single number is read for "pair"/"size": "sym" d->[-d, d], "same" s->[s, s]
    suggest: Any = None  # what the page fills in for a required parameter
    parts: tuple[str, ...] = ()  # names of a pair's two numbers when they are not [low, high]
    help: str = ""  # one line shown beside the widget

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def initial(self) -> Any:
        """The value a newly added step gets."""
        return copy.deepcopy(self.suggest if self.required else self.default)


@dataclass(frozen=True)
class OpInfo:
    """One registry entry: everything the validator, the builder, the checks and the page need."""

    name: str  # torchvision.transforms.v2 class name
    stage: str  # "geometry" (moves pixels), "colour" (changes values), "tensor" (works on float tensors)
    random: bool  # draws random numbers each call
    params: tuple[ParamInfo, ...]
    help: str  # one line for the page
    needs_float: bool = False  # must see a float32 image in [0, 1] (a ToDtype is inserted before it)
    needs_contiguous: bool = False  # draws noise shaped like its input: must see the same memory layout
    p_only: bool = False  # its only randomness is "apply with probability p" (deterministic at p=0 or 1)
    effect: str = ""  # what it does to every image when applied always (for the pair check)
    build: Callable[[dict], Any] | None = None  # params -> transform; default getattr(v2, name)(**params)

    def param(self, name: str) -> ParamInfo:
        return next(p for p in self.params if p.name == name)


def _interp(default: str = "bilinear") -> ParamInfo:
    return ParamInfo(
        "interpolation", "choice", default, choices=("nearest", "bilinear", "bicubic"), help="resampling filter"
    )


def _fill() -> ParamInfo:
    return ParamInfo("fill", "int", 0, 0, 255, help="grey level (0-255) for pixels moved in from outside")


def _prob(default: float = 0.5) -> ParamInfo:
    return ParamInfo("p", "float", default, 0.0, 1.0, help="probability of applying it to an image")


def _size(suggest: list[int], scalar: str = "") -> ParamInfo:
    return ParamInfo("size", "size", _REQUIRED, 1, 8192, scalar=scalar, suggest=suggest, help="[height, width] in pixels")


def _with_interp(name: str) -> Callable[[dict], Any]:
    """Builder for ops whose `interpolation` is given as a string in the spec."""

    def build(params: dict) -> Any:
        kwargs = dict(params)
        kwargs["interpolation"] = InterpolationMode(kwargs["interpolation"])
        return getattr(v2, name)(**kwargs)

    return build


def _build_auto_augment(params: dict) -> Any:
    return v2.AutoAugment(
        policy=AutoAugmentPolicy(params["policy"]), interpolation=InterpolationMode(params["interpolation"])
    )


def _build_color_jitter(params: dict) -> Any:
    # torchvision reads 0 as "off" for brightness/contrast/saturation but rejects nothing; keep None explicit.
    return v2.ColorJitter(**{k: (v if v else None) for k, v in params.items()})


def _op(name: str, stage: str, random: bool, params: Sequence[ParamInfo], help: str, **kw: Any) -> OpInfo:
    return OpInfo(name=name, stage=stage, random=random, params=tuple(params), help=help, **kw)


_OP_LIST: list[OpInfo] = [
    _op("Resize", "geometry", False, [_size([128, 96]), _interp(), ParamInfo("antialias", "bool", True)],
        "resize to exactly [height, width]", build=_with_interp("Resize")),
    _op("CenterCrop", "geometry", False, [_size([320, 256], "same")],
        "keep the central [height, width] region (pads with black if the image is smaller)"),
    _op("RandomCrop", "geometry", True, [
        _size([480, 360], "same"),
        ParamInfo("padding", "int", 0, 0, 512, help="pixels of border added on every side first"),
        ParamInfo("pad_if_needed", "bool", False, help="pad images smaller than size instead of failing"),
        _fill(),
        ParamInfo("padding_mode", "choice", "constant", choices=("constant", "edge", "reflect", "symmetric")),
    ], "a [height, width] region at a random place"),
    _op("RandomResizedCrop", "geometry", True, [
        _size([128, 96], "same"),
        ParamInfo("scale", "pair", [0.08, 1.0], 0.01, 1.0, help="range of the crop's share of the image area"),
        ParamInfo("ratio", "pair", [0.75, 4 / 3], 0.1, 10.0, help="range of the crop's width/height"),
        _interp(), ParamInfo("antialias", "bool", True),
    ], "a random region of random size and shape, resized to [height, width]", build=_with_interp("RandomResizedCrop")),
    _op("Pad", "geometry", False, [
        ParamInfo("padding", "int", _REQUIRED, 0, 512, suggest=16, help="pixels of border on every side"),
        _fill(),
        ParamInfo("padding_mode", "choice", "constant", choices=("constant", "edge", "reflect", "symmetric")),
    ], "add a border on every side"),
    _op("RandomHorizontalFlip", "geometry", True, [_prob()], "mirror left-right", p_only=True,
        effect="mirrors the image left-right"),
    _op("RandomVerticalFlip", "geometry", True, [_prob()], "mirror top-bottom", p_only=True,
        effect="flips the image upside down"),
    _op("RandomRotation", "geometry", True, [
        ParamInfo("degrees", "pair", _REQUIRED, -180, 180, scalar="sym", suggest=[-15.0, 15.0],
                  help="range of the rotation angle in degrees"),
        _interp("nearest"), _fill(),
    ], "rotate by a random angle", build=_with_interp("RandomRotation")),
    _op("RandomAffine", "geometry", True, [
        ParamInfo("degrees", "pair", _REQUIRED, -180, 180, scalar="sym", suggest=[-10.0, 10.0],
                  help="range of the rotation angle in degrees"),
        ParamInfo("translate", "pair", None, 0.0, 1.0, optional=True, parts=("horizontal", "vertical"),
                  suggest=[0.1, 0.1], help="largest shift as a share of [width, height]"),
        ParamInfo("scale", "pair", None, 0.05, 10.0, optional=True, suggest=[0.9, 1.1], help="range of the zoom factor"),
        ParamInfo("shear", "pair", None, -90, 90, optional=True, scalar="sym", suggest=[-10.0, 10.0],
                  help="range of the x shear in degrees"),
        _interp("nearest"), _fill(),
    ], "random rotation, shift, zoom and shear", build=_with_interp("RandomAffine")),
    _op("RandomPerspective", "geometry", True, [
        ParamInfo("distortion_scale", "float", 0.5, 0.0, 1.0, help="how strong the distortion is"),
        _prob(), _interp(), _fill(),
    ], "random perspective distortion", build=_with_interp("RandomPerspective")),
    _op("ColorJitter", "colour", True, [
        ParamInfo("brightness", "float", 0.0, 0.0, 5.0, help="0 = off; x = random factor in [1-x, 1+x]"),
        ParamInfo("contrast", "float", 0.0, 0.0, 5.0, help="0 = off; x = random factor in [1-x, 1+x]"),
        ParamInfo("saturation", "float", 0.0, 0.0, 5.0, help="0 = off; x = random factor in [1-x, 1+x]"),
        ParamInfo("hue", "float", 0.0, 0.0, 0.5, help="0 = off; x = random hue shift in [-x, x]"),
    ], "random brightness, contrast, saturation and hue", build=_build_color_jitter),
    _op("Grayscale", "colour", False, [
        ParamInfo("num_output_channels", "choice", 3, choices=(3,), help="kept at 3: the models take RGB"),
    ], "make the image grey (3 equal channels)", effect="turns the image grey"),
    _op("RandomGrayscale", "colour", True, [_prob(0.1)], "make some images grey", p_only=True,
        effect="turns the image grey"),
    _op("GaussianBlur", "colour", True, [
        ParamInfo("kernel_size", "int", _REQUIRED, 1, 101, suggest=5, help="odd size of the blur kernel"),
        ParamInfo("sigma", "pair", [0.1, 2.0], 0.01, 50.0, scalar="same", help="range of the blur strength"),
    ], "blur with a random strength"),
    _op("RandomEqualize", "colour", True, [_prob()], "equalize the histogram", p_only=True,
        effect="equalizes the histogram"),
    _op("RandomAutocontrast", "colour", True, [_prob()], "stretch the contrast to the full range", p_only=True,
        effect="stretches the contrast"),
    _op("RandomAdjustSharpness", "colour", True, [
        ParamInfo("sharpness_factor", "float", _REQUIRED, 0.0, 10.0, suggest=2.0, help="0 blurs, 1 keeps, 2 sharpens"),
        _prob(),
    ], "sharpen or soften", p_only=True, effect="changes the sharpness"),
    _op("RandAugment", "colour", True, [
        ParamInfo("num_ops", "int", 2, 0, 10, help="operations applied to each image"),
        ParamInfo("magnitude", "int", 9, 0, 99, help="strength, below num_magnitude_bins"),
        ParamInfo("num_magnitude_bins", "int", 31, 2, 100),
        _interp("nearest"),
    ], "RandAugment policy (random ops of fixed strength)", build=_with_interp("RandAugment")),
    _op("TrivialAugmentWide", "colour", True, [
        ParamInfo("num_magnitude_bins", "int", 31, 2, 100), _interp("nearest"),
    ], "TrivialAugment policy (one random op of random strength)", build=_with_interp("TrivialAugmentWide")),
    _op("AutoAugment", "colour", True, [
        ParamInfo("policy", "choice", "imagenet", choices=tuple(p.value for p in AutoAugmentPolicy)),
        _interp("nearest"),
    ], "AutoAugment learned policy", build=_build_auto_augment),
    _op("Normalize", "tensor", False, [
        ParamInfo("mean", "triple", _REQUIRED, -10.0, 10.0, suggest=list(IMAGENET_MEAN), help="per channel (R, G, B)"),
        ParamInfo("std", "triple", _REQUIRED, 1e-6, 100.0, suggest=list(IMAGENET_STD), help="per channel (R, G, B)"),
    ], "subtract mean and divide by std per channel", needs_float=True),
    _op("GaussianNoise", "tensor", True, [
        ParamInfo("mean", "float", 0.0, -1.0, 1.0),
        ParamInfo("sigma", "float", 0.1, 0.0, 1.0, help="noise strength (image values run 0-1)"),
        ParamInfo("clip", "bool", True, help="keep values within 0-1"),
    ], "add random Gaussian noise", needs_float=True, needs_contiguous=True),
    _op("RandomErasing", "tensor", True, [
        _prob(),
        ParamInfo("scale", "pair", [0.02, 0.33], 0.001, 1.0, help="range of the erased share of the area"),
        ParamInfo("ratio", "pair", [0.3, 3.3], 0.01, 100.0, help="range of the erased box's height/width"),
        ParamInfo("value", "float", 0.0, -10.0, 10.0, help="value written into the box"),
    ], "blank out a random box", needs_float=True),
]

OPS: dict[str, OpInfo] = {op.name: op for op in _OP_LIST}

# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _range_text(info: ParamInfo) -> str:
    return f"between {info.low:g} and {info.high:g}"


def _check_numbers(values: list, info: ParamInfo, where: str, integer: bool) -> list:
    for value in values:
        if integer and not (isinstance(value, int) and not isinstance(value, bool)):
            raise SpecError(f"{where}: {info.name} must be whole numbers, got {value!r}")
        if not _is_number(value):
            raise SpecError(f"{where}: {info.name} must be numbers, got {value!r}")
        if (info.low is not None and value < info.low) or (info.high is not None and value > info.high):
            raise SpecError(f"{where}: {info.name} must be {_range_text(info)}, got {value!r}")
    return values


def _check_param(info: ParamInfo, value: Any, where: str) -> Any:
    """The normalised value of one parameter, or SpecError naming step and parameter."""
    if value is None:
        if info.optional:
            return None
        raise SpecError(f"{where}: {info.name} cannot be null")
    kind = info.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise SpecError(f"{where}: {info.name} must be true or false, got {value!r}")
        return value
    if kind == "choice":
        if value not in info.choices or isinstance(value, bool):
            options = ", ".join(json.dumps(c) for c in info.choices)
            raise SpecError(f"{where}: {info.name} must be one of {options}, got {value!r}")
        return value
    if kind in ("int", "float"):
        if not _is_number(value) or (kind == "int" and not isinstance(value, int)):
            noun = "a whole number" if kind == "int" else "a number"
            raise SpecError(f"{where}: {info.name} must be {noun}, got {value!r}")
        if (info.low is not None and value < info.low) or (info.high is not None and value > info.high):
            raise SpecError(f"{where}: {info.name} must be {_range_text(info)}, got {value!r}")
        return float(value) if kind == "float" else int(value)
    if kind in ("size", "pair"):
        if _is_number(value) and info.scalar:
            value = [-value, value] if info.scalar == "sym" else [value, value]
        shape = "[height, width]" if kind == "size" else f"[{', '.join(info.parts or ('low', 'high'))}]"
        if not isinstance(value, list) or len(value) != 2:
            raise SpecError(f"{where}: {info.name} must be {shape}, got {value!r}")
        values = _check_numbers(list(value), info, where, integer=kind == "size")
        if kind == "pair":
            if values[0] > values[1] and not info.parts:
                raise SpecError(f"{where}: {info.name} must be [low, high] with low <= high, got {value!r}")
            return [float(v) for v in values]
        return [int(v) for v in values]
    if kind == "triple":
        if not isinstance(value, list) or len(value) != 3:
            raise SpecError(f"{where}: {info.name} must be three numbers (R, G, B), got {value!r}")
        return [float(v) for v in _check_numbers(list(value), info, where, integer=False)]
    raise AssertionError(f"unknown parameter kind {kind}")


def _check_step_rules(op: OpInfo, params: dict, where: str) -> None:
    """Rules that tie parameters of one op together (torchvision would fail later, less clearly)."""
    if op.name == "GaussianBlur" and params["kernel_size"] % 2 == 0:
        raise SpecError(f"{where}: kernel_size must be odd, got {params['kernel_size']}")
    if op.name == "RandAugment" and params["magnitude"] >= params["num_magnitude_bins"]:
        raise SpecError(
            f"{where}: magnitude must be below num_magnitude_bins ({params['num_magnitude_bins']}),"
            f" got {params['magnitude']}"
        )


def _step_where(index: int, op_name: str | None = None) -> str:
    return f"step {index + 1} ({op_name})" if op_name else f"step {index + 1}"


def validate_step(step: Any, index: int = 0) -> dict:
    """One step normalised (defaults filled, scalars expanded), or SpecError naming it."""
    if not isinstance(step, dict):
        raise SpecError(f"{_step_where(index)}: a step must be an object like {{\"op\": \"Resize\", ...}}, got {step!r}")
    name = step.get("op")
    if not isinstance(name, str):
        raise SpecError(f"{_step_where(index)}: missing \"op\" (the name of a torchvision.transforms.v2 class)")
    op = OPS.get(name)
    if op is None:
        close = difflib.get_close_matches(name, OPS, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known ops: {', '.join(OPS)}"
        raise SpecError(f"{_step_where(index)}: unknown op {name!r}{hint}")
    where = _step_where(index, name)
    known = {p.name for p in op.params}
    for key in step:
        if key != "op" and key not in known:
            takes = ", ".join(p.name for p in op.params)
            raise SpecError(f"{where}: unknown parameter {key!r}; {name} takes {takes}")
    out: dict[str, Any] = {"op": name}
    for info in op.params:
        if info.name in step:
            out[info.name] = _check_param(info, step[info.name], where)
        elif info.required:
            raise SpecError(f"{where}: {info.name} is required ({info.help or info.kind})")
        else:
            out[info.name] = copy.deepcopy(info.default)
    _check_step_rules(op, out, where)
    return out


def validate_spec(spec: Any) -> list[dict]:
    """A normalised copy of ``spec``; SpecError names the step (counted from 1), op and parameter."""
    if isinstance(spec, dict) and set(spec) == {"steps"}:
        spec = spec["steps"]
    if not isinstance(spec, list):
        raise SpecError(
            'a transform spec must be a list of steps like [{"op": "Resize", "size": [128, 96]}], '
            f"got {type(spec).__name__}"
        )
    steps = [validate_step(step, i) for i, step in enumerate(spec)]
    normalized = False
    for i, step in enumerate(steps):
        if step["op"] == "Normalize":
            normalized = True
        elif normalized and OPS[step["op"]].stage == "colour":
            raise SpecError(
                f"{_step_where(i, step['op'])}: colour changes must come before Normalize "
                "(they expect pixel values between 0 and 1)"
            )
    return steps


def is_deterministic(step: dict) -> bool:
    """True when the step does the same thing to every image (p=0 or p=1 for p-only ops)."""
    op = OPS[step["op"]]
    return not op.random or (op.p_only and step["p"] in (0.0, 1.0))


def _always_applied(step: dict) -> bool:
    op = OPS[step["op"]]
    return not op.random or (op.p_only and step["p"] >= 1.0)


def _is_noop(step: dict) -> bool:
    return OPS[step["op"]].p_only and step["p"] <= 0.0


# ----------------------------------------------------------------------------------------------
# Building pipelines
# ----------------------------------------------------------------------------------------------


def _build_step(step: dict) -> Any:
    op = OPS[step["op"]]
    params = {k: v for k, v in step.items() if k != "op"}
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


def _build_steps(spec: list[dict], dtype_in: torch.dtype) -> tuple[list[list[Any]], torch.dtype]:
    """Per step, its transforms (a ToDtype first where it needs float); and the dtype after the last.

    Images stay uint8 for as long as possible: uint8 resizing is several times faster than float on
    CPU, and it is what makes the uint8 prefix cache give bit-identical results.
    """
    dtype = dtype_in
    per_step: list[list[Any]] = []
    for step in spec:
        parts = []
        if OPS[step["op"]].needs_float and dtype != torch.float32:
            parts.append(_to_float())
            dtype = torch.float32
        if OPS[step["op"]].needs_contiguous:
            parts.append(Contiguous())
        parts.append(_build_step(step))
        per_step.append(parts)
    return per_step, dtype


def build_pipeline(spec: Any, dtype: torch.dtype = torch.float32) -> v2.Compose:
    """Spec -> v2.Compose from a PIL image / uint8 array / uint8 CHW tensor to a plain CHW tensor of ``dtype``."""
    spec = validate_spec(spec)
    per_step, out_dtype = _build_steps(spec, torch.uint8)
    transforms: list[Any] = [v2.ToImage()] + [t for parts in per_step for t in parts]
    if dtype == torch.uint8:
        if out_dtype != torch.uint8:
            first = next(s["op"] for s in spec if OPS[s["op"]].needs_float)
            raise SpecError(f"{first} works on float images, so this spec cannot end in uint8")
    elif dtype == torch.float32:
        if out_dtype != torch.float32:
            transforms.append(_to_float())
    else:
        raise SpecError(f"build_pipeline makes uint8 or float32 images, not {dtype}")
    transforms.append(v2.ToPureTensor())
    return v2.Compose(transforms)


def stage_of_steps(spec: list[dict]) -> list[str]:
    """The stage each step runs in. Steps keep their order: a step whose own stage comes earlier than
    the stage already reached runs in the later one, so chaining the stages equals the whole pipeline."""
    reached = 0
    stages = []
    for step in spec:
        reached = max(reached, STAGES.index(OPS[step["op"]].stage))
        stages.append(STAGES[reached])
    return stages


def build_stages(spec: Any) -> dict[str, v2.Compose]:
    """{"geometry", "colour", "tensor"} -> Compose, in order; chained they equal build_pipeline(spec)."""
    spec = validate_spec(spec)
    per_step, out_dtype = _build_steps(spec, torch.uint8)
    groups: dict[str, list[Any]] = {name: [] for name in STAGES}
    groups["geometry"].append(v2.ToImage())
    for stage, parts in zip(stage_of_steps(spec), per_step, strict=True):
        groups[stage].extend(parts)
    if out_dtype != torch.float32:
        groups["tensor"].append(_to_float())
    groups["tensor"].append(v2.ToPureTensor())
    return {name: v2.Compose(groups[name] or [v2.Identity()]) for name in STAGES}


def split_deterministic_prefix(spec: Any) -> tuple[list[dict], list[dict]]:
    """(prefix, rest): the leading deterministic geometry steps, which can be applied once and cached."""
    spec = validate_spec(spec)
    cut = 0
    while cut < len(spec) and OPS[spec[cut]["op"]].stage == "geometry" and is_deterministic(spec[cut]):
        cut += 1
    return spec[:cut], spec[cut:]


# ----------------------------------------------------------------------------------------------
# Geometry simulation: output size and the view of the input each spec shows the model
# ----------------------------------------------------------------------------------------------


@dataclass
class _Geometry:
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


def _crop_box(geo: _Geometry, crop_hw: Sequence[float]) -> None:
    """Take the central crop_hw of the current image (padding when larger), in input coordinates."""
    top, left, bh, bw = geo.box
    sy, sx = bh / geo.hw[0], bw / geo.hw[1]
    ch, cw = crop_hw
    geo.box = [top + (geo.hw[0] - ch) / 2 * sy, left + (geo.hw[1] - cw) / 2 * sx, ch * sy, cw * sx]
    geo.hw = (int(ch), int(cw))


def _simulate(spec: list[dict], input_hw: tuple[int, int]) -> _Geometry:
    h, w = int(input_hw[0]), int(input_hw[1])
    geo = _Geometry(input_hw=(h, w), box=[0.0, 0.0, float(h), float(w)], hw=(h, w))
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
    return _simulate(validate_spec(spec), input_hw).hw


# ----------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------

_NORMALIZE = {"op": "Normalize", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
_RESIZE = {"op": "Resize", "size": [128, 96]}

PRESETS: dict[str, tuple[list, list]] = {
    # The competition's official baseline: resize the whole photo to 128×96.
    "baseline": ([_RESIZE, _NORMALIZE], [_RESIZE, _NORMALIZE]),
    # Faces sit in the middle of the photos: crop the centre, then resize — the same at eval time.
    "center-crop": (
        [{"op": "CenterCrop", "size": [320, 256]}, _RESIZE, _NORMALIZE],
        [{"op": "CenterCrop", "size": [320, 256]}, _RESIZE, _NORMALIZE],
    ),
    # Mild augmentation after resizing (cheap: it works on the small image).
    "light": (
        [
            _RESIZE,
            {"op": "RandomHorizontalFlip", "p": 0.5},
            {"op": "RandomAffine", "degrees": [-10.0, 10.0], "translate": [0.05, 0.05], "scale": [0.95, 1.05]},
            {"op": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2},
            _NORMALIZE,
        ],
        [_RESIZE, _NORMALIZE],
    ),
    # Random crops of at least half the photo (its aspect kept near 3:4), a random policy, erasing.
    "strong": (
        [
            {"op": "RandomResizedCrop", "size": [128, 96], "scale": [0.5, 1.0], "ratio": [0.6, 0.9]},
            {"op": "RandomHorizontalFlip", "p": 0.5},
            {"op": "TrivialAugmentWide"},
            _NORMALIZE,
            {"op": "RandomErasing", "p": 0.25},
        ],
        [_RESIZE, _NORMALIZE],
    ),
}


def preset(name: str, img_size: Sequence[int] | None = None) -> tuple[list[dict], list[dict]]:
    """(train, eval) of a preset, validated; ``img_size`` = [h, w] replaces the final resize's size."""
    if name not in PRESETS:
        raise SpecError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    train, eval_ = (validate_spec(copy.deepcopy(s)) for s in PRESETS[name])
    if img_size is not None:
        size = _check_param(ParamInfo("img_size", "size", _REQUIRED, 1, 8192), list(img_size), f"preset {name}")
        for spec in (train, eval_):
            last = max(i for i, s in enumerate(spec) if s["op"] in ("Resize", "RandomResizedCrop"))
            spec[last]["size"] = list(size)
    return train, eval_


# ----------------------------------------------------------------------------------------------
# The train/eval pair check
# ----------------------------------------------------------------------------------------------

_BOX_TOLERANCE = 0.01  # share of the input side below which two views count as the same


def _hw(hw: Sequence[float]) -> str:
    return f"{int(round(hw[0]))}×{int(round(hw[1]))}"


def _describe_box(geo: _Geometry) -> str:
    top, left, bh, bw = geo.box
    h, w = geo.input_hw
    if not _boxes_differ(geo.box, [0.0, 0.0, float(h), float(w)], geo.input_hw):
        return "the whole picture"
    centred = abs(top + bh / 2 - h / 2) <= max(1.5, _BOX_TOLERANCE * h) and abs(left + bw / 2 - w / 2) <= max(
        1.5, _BOX_TOLERANCE * w
    )
    if centred and bh <= h and bw <= w:
        return f"the central {_hw((bh, bw))} region"
    if centred:
        return f"a {_hw((bh, bw))} region centred on the picture (with a border)"
    return f"rows {top:.0f}–{top + bh:.0f} and columns {left:.0f}–{left + bw:.0f}"


def _boxes_differ(a: Sequence[float], b: Sequence[float], input_hw: tuple[int, int]) -> bool:
    h, w = input_hw
    tol_y, tol_x = max(1.5, _BOX_TOLERANCE * h), max(1.5, _BOX_TOLERANCE * w)
    a_edges = (a[0], a[0] + a[2], a[1], a[1] + a[3])
    b_edges = (b[0], b[0] + b[2], b[1], b[1] + b[3])
    tols = (tol_y, tol_y, tol_x, tol_x)
    return any(abs(x - y) > t for x, y, t in zip(a_edges, b_edges, tols, strict=True))


def _random_crop_findings(train: _Geometry, eval_: _Geometry) -> list[str]:
    """Train takes RandomResizedCrops: eval's view should be one of the crops it could have taken."""
    rc = train.random_crop
    assert rc is not None
    top, left, bh, bw = rc["box"]
    et, el, eh, ew = eval_.box
    area = (eh * ew) / (bh * bw)
    lo, hi = rc["scale"]
    findings = []
    outside = et < top - 1.5 or el < left - 1.5 or et + eh > top + bh + 1.5 or el + ew > left + bw + 1.5
    if outside or not (lo * 0.98 <= area <= hi * 1.02):
        findings.append(
            f"training shows the model random crops covering {lo:.0%}–{hi:.0%} of the picture "
            f"(RandomResizedCrop); evaluation shows {_describe_box(eval_)}, which no training crop looks like"
        )
    # RandomResizedCrop's ratio is width/height in the pixels of the image it crops.
    ratio = (ew / (bw / rc["hw"][1])) / (eh / (bh / rc["hw"][0]))
    rlo, rhi = rc["ratio"]
    if not (rlo * 0.98 <= ratio <= rhi * 1.02):
        findings.append(
            f"training crops regions with width/height between {rlo:.2f} and {rhi:.2f} (RandomResizedCrop); "
            f"evaluation's view has width/height {ratio:.2f}, so shapes are stretched differently"
        )
    return findings


def _geometry_findings(train: _Geometry, eval_: _Geometry) -> list[str]:
    findings = []
    if train.hw != eval_.hw:
        findings.append(f"training feeds the model {_hw(train.hw)} images; evaluation feeds {_hw(eval_.hw)}")
    if bool(train.resizes) != bool(eval_.resizes):
        who, other = ("training", "evaluation") if train.resizes else ("evaluation", "training")
        size = (train.resizes or eval_.resizes)[-1]
        findings.append(f"{who} resizes to {_hw(size)}; {other} does not resize")
    if train.random_crop is not None:
        return findings + _random_crop_findings(train, eval_)
    if not _boxes_differ(train.box, eval_.box, train.input_hw):
        return findings
    if train.cropped and not eval_.cropped:
        findings.append(f"training {'; '.join(train.crops)}; evaluation does not crop")
    elif eval_.cropped and not train.cropped:
        findings.append(f"evaluation {'; '.join(eval_.crops)}; training does not crop")
    else:
        findings.append(
            f"training sees {_describe_box(train)} of the {_hw(train.input_hw)} input; "
            f"evaluation sees {_describe_box(eval_)}"
        )
    return findings


def _normalize_text(steps: list[dict]) -> str:
    return " then ".join(f"mean {s['mean']} and std {s['std']}" for s in steps)


def _normalize_findings(train: list[dict], eval_: list[dict]) -> list[str]:
    tn = [s for s in train if s["op"] == "Normalize"]
    en = [s for s in eval_ if s["op"] == "Normalize"]
    same = len(tn) == len(en) and all(
        np.allclose(a["mean"], b["mean"], atol=1e-6) and np.allclose(a["std"], b["std"], atol=1e-6)
        for a, b in zip(tn, en, strict=True)
    )
    if same:
        return []
    if not en:
        return [f"training normalises with {_normalize_text(tn)}; evaluation does not normalise"]
    if not tn:
        return [f"evaluation normalises with {_normalize_text(en)}; training does not normalise"]
    return [f"training normalises with {_normalize_text(tn)}; evaluation with {_normalize_text(en)}"]


def _always_effects(spec: list[dict]) -> list[tuple[str, str]]:
    """(effect, op) of the steps that change every image in the same way, other than size/crop/normalize."""
    return [
        (OPS[s["op"]].effect, s["op"]) for s in spec if OPS[s["op"]].effect and _always_applied(s) and not _is_noop(s)
    ]


def _effect_findings(train: list[dict], eval_: list[dict]) -> list[str]:
    findings = []
    t_effects, e_effects = _always_effects(train), _always_effects(eval_)
    e_names = [e for e, _ in e_effects]
    t_names = [e for e, _ in t_effects]
    for effect, op in t_effects:
        if effect not in e_names:
            findings.append(f"training always {effect} ({op}); evaluation does not")
    for effect, op in e_effects:
        if effect not in t_names:
            findings.append(f"evaluation always {effect} ({op}); training does not")
    return findings


def _random_eval_findings(eval_: list[dict]) -> list[str]:
    return [
        f"evaluation step {i + 1} ({s['op']}) is random, so predictions change from run to run; "
        "keep evaluation deterministic"
        for i, s in enumerate(eval_)
        if not is_deterministic(s)
    ]


def check_pair(train_spec: Any, eval_spec: Any, input_hw: tuple[int, int] = DEFAULT_INPUT_HW) -> list[str]:
    """Every way evaluation images would differ from what the model saw in training, in plain words.

    Random augmentations that training applies only sometimes (p < 1, random crops around the same
    view) are the point of augmenting and are not reported.
    """
    train, eval_ = validate_spec(train_spec), validate_spec(eval_spec)
    findings = _geometry_findings(_simulate(train, input_hw), _simulate(eval_, input_hw))
    findings += _normalize_findings(train, eval_)
    findings += _effect_findings(train, eval_)
    findings += _random_eval_findings(eval_)
    return findings


# ----------------------------------------------------------------------------------------------
# Images for display
# ----------------------------------------------------------------------------------------------


def _unnormalize(tensor: torch.Tensor, normalize_steps: list[dict]) -> torch.Tensor:
    for step in reversed(normalize_steps):
        mean = torch.tensor(step["mean"], dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.tensor(step["std"], dtype=tensor.dtype).view(-1, 1, 1)
        tensor = tensor * std + mean
    return tensor


def _to_display(tensor: torch.Tensor, normalize_steps: list[dict]) -> np.ndarray:
    """A CHW uint8 or float tensor (normalised by ``normalize_steps``) as a uint8 HWC array."""
    tensor = torch.as_tensor(tensor).detach().cpu()
    if tensor.dtype == torch.uint8:
        return tensor.permute(1, 2, 0).contiguous().numpy()
    tensor = _unnormalize(tensor.float(), normalize_steps)
    return (tensor.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def denormalize(tensor: torch.Tensor, spec: Any) -> np.ndarray:
    """A pipeline output (CHW) as uint8 HWC for display, undoing the spec's Normalize steps."""
    steps = [s for s in validate_spec(spec) if s["op"] == "Normalize"]
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


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: on images this small, threads cost more in hand-offs than they save
    (3-10x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def preview_samples(image: Any, spec: Any, n: int, seed: int) -> list[np.ndarray]:
    """``n`` augmented versions of ``image`` as uint8 HWC arrays; the same seed gives the same samples.

    The deterministic prefix (e.g. a resize) runs once; only the random rest runs per sample. The
    global RNG is left as it was.
    """
    spec = validate_spec(spec)
    prefix, rest = split_deterministic_prefix(spec)
    base = _as_uint8_chw(image)
    if prefix:
        base = _run(build_pipeline(prefix, dtype=torch.uint8), base)
    pipeline = build_pipeline(rest)
    normalize_steps = [s for s in spec if s["op"] == "Normalize"]
    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return [_to_display(_run(pipeline, base), normalize_steps) for _ in range(int(n))]


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
    spec = validate_spec(spec)
    stages = build_stages(spec)
    stage_names = stage_of_steps(spec)
    current = _as_uint8_chw(image)
    pictures = [StagePicture("input", _to_display(current, []), f"input {_hw(current.shape[-2:])}")]
    normalize_done: list[dict] = []
    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for name in STAGES:
            current = _run(stages[name], current)
            steps = [s for s, st in zip(spec, stage_names, strict=True) if st == name]
            normalize_done += [s for s in steps if s["op"] == "Normalize"]
            if steps:
                ops = ", ".join(s["op"] for s in steps)
                pictures.append(
                    StagePicture(name, _to_display(current, normalize_done), f"after {name} ({ops}): {_hw(current.shape[-2:])}")
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


# ----------------------------------------------------------------------------------------------
# JSON files and saved pairs
# ----------------------------------------------------------------------------------------------


def spec_to_json(spec: Any) -> str:
    """A spec as pretty JSON text (one step per line is easiest to read and diff)."""
    steps = validate_spec(spec)
    return "[\n" + ",\n".join("  " + json.dumps(s) for s in steps) + "\n]\n"


def pair_to_json(train: Any, eval_: Any, name: str = "") -> str:
    doc = {"name": name, "train": validate_spec(train), "eval": validate_spec(eval_)}
    return json.dumps(doc, indent=2) + "\n"


def _parse_json(text: str | bytes, source: str) -> Any:
    try:
        return json.loads(text)
    except UnicodeDecodeError as err:
        raise SpecError(f"{source}: not a text file ({err.reason})") from err
    except json.JSONDecodeError as err:
        raise SpecError(f"{source}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err


def _prefixed(source: str, func: Callable[[], Any]) -> Any:
    try:
        return func()
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from err


def parse_spec_json(text: str | bytes, source: str = "spec") -> list[dict]:
    """JSON text of a spec (a list of steps) -> validated spec; errors start with ``source``."""
    doc = _parse_json(text, source)
    return _prefixed(source, lambda: validate_spec(doc))


def parse_spec_document(text: str | bytes, source: str = "spec") -> tuple[list[dict], list[dict] | None]:
    """A spec (list) or a pair ({"train": [...], "eval": [...]}) -> (train, eval or None), validated."""
    doc = _parse_json(text, source)
    if isinstance(doc, dict) and "train" in doc:
        unknown = set(doc) - {"name", "train", "eval"}
        if unknown:
            raise SpecError(f"{source}: unknown keys {sorted(unknown)}; a pair has name, train and eval")
        train = _prefixed(f"{source} (train)", lambda: validate_spec(doc["train"]))
        eval_ = _prefixed(f"{source} (eval)", lambda: validate_spec(doc["eval"])) if "eval" in doc else None
        return train, eval_
    return _prefixed(source, lambda: validate_spec(doc)), None


def _read_spec_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise SpecError(f"{path}: cannot read the file ({err.strerror or err})") from err


def load_spec_file(path: str | os.PathLike) -> list[dict]:
    """A spec JSON file -> validated spec; SpecError names the file."""
    return parse_spec_json(_read_spec_bytes(Path(path)), str(path))


def load_spec_document(path: str | os.PathLike) -> tuple[list[dict], list[dict] | None]:
    """A spec or pair JSON file -> (train, eval or None), validated; SpecError names the file."""
    return parse_spec_document(_read_spec_bytes(Path(path)), str(path))


_PAIR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_pair_name(name: str) -> str:
    """The name if it is usable as a file name; SpecError otherwise."""
    if not isinstance(name, str) or not _PAIR_NAME.match(name) or name.endswith(".json") or ".." in name:
        raise SpecError(
            f"{name!r} is not a usable name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _specs_dir(folder: str | os.PathLike | None) -> Path:
    if folder is not None:
        return Path(folder)
    from core import settings

    return settings.load().specs_dir


def _pair_path(name: str, folder: str | os.PathLike | None) -> Path:
    from core.fsutil import resolve_inside

    base = _specs_dir(folder)
    return resolve_inside(base, f"{check_pair_name(name)}.json")


def save_named_pair(name: str, train: Any, eval_: Any, folder: str | os.PathLike | None = None) -> Path:
    """Save a validated (train, eval) pair as <specs_dir>/<name>.json (atomically); returns the path."""
    from core.fsutil import atomic_write_text

    text = pair_to_json(train, eval_, name=check_pair_name(name))
    path = _pair_path(name, folder)
    atomic_write_text(path, text)
    return path


def list_named_pairs(folder: str | os.PathLike | None = None) -> list[str]:
    """Names of the saved pairs, sorted."""
    base = _specs_dir(folder)
    if not base.is_dir():
        return []
    return sorted(p.stem for p in base.glob("*.json") if p.is_file() and _PAIR_NAME.match(p.stem))


def load_named_pair(name: str, folder: str | os.PathLike | None = None) -> tuple[list[dict], list[dict]]:
    """(train, eval) of a saved pair, validated; SpecError when missing or invalid."""
    path = _pair_path(name, folder)
    if not path.is_file():
        raise SpecError(f"no saved spec pair named {name!r} in {path.parent}")
    train, eval_ = parse_spec_document(path.read_bytes(), str(path))
    if eval_ is None:
        raise SpecError(f"{path}: a saved pair needs both \"train\" and \"eval\"")
    return train, eval_


def resolve_pair(
    name: str, img_size: Sequence[int] | None = None, folder: str | os.PathLike | None = None
) -> tuple[list[dict], list[dict]]:
    """A preset by name, else a saved pair by name (img_size retargets presets only)."""
    if name in PRESETS:
        return preset(name, img_size)
    return load_named_pair(name, folder)
