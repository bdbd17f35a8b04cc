"""The op registry: one table drives validation, building, the pair check and the page's widgets.

Each entry names a ``torchvision.transforms.v2`` class, its parameters (type, range, default), whether
it is random, and the stage it belongs to ("geometry" moves pixels, "colour" changes values, "tensor"
works on float tensors). Importing this module does not import torch: a builder imports torchvision
when it first runs, so the page's widgets and TrainConfig can read the registry without it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STAGES = ("geometry", "colour", "tensor")
DEFAULT_INPUT_HW = (512, 384)  # the competition's photos: 384 wide x 512 high
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# torchvision's AutoAugmentPolicy values, spelled out so the registry needs no torch (a test compares them)
AUTO_AUGMENT_POLICIES = ("imagenet", "cifar10", "svhn")

# The largest image a spec may make (core.specs.spec checks every step): a side, and height x width (a
# 4000x3000 photo). A size parameter's range stops at the side limit so the page's widgets show it.
MAX_OUTPUT_SIDE = 4096
MAX_OUTPUT_PIXELS = 12_000_000

REQUIRED = object()  # marks a parameter without a torchvision default; the page offers ParamInfo.suggest


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of an op, as the validator and the page's widgets read it."""

    name: str  # the torchvision keyword
    kind: str  # "int" | "float" | "bool" | "choice" | "size" ([h, w]) | "pair" ([lo, hi]) | "triple" (3 floats)
    default: Any  # value used when the step omits it; REQUIRED when the step must give it
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
        return self.default is REQUIRED

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
    return ParamInfo(
        "size", "size", REQUIRED, 1, MAX_OUTPUT_SIDE, scalar=scalar, suggest=suggest, help="[height, width] in pixels"
    )


def _with_interp(name: str) -> Callable[[dict], Any]:
    """Builder for ops whose `interpolation` is given as a string in the spec."""

    def build(params: dict) -> Any:
        from torchvision.transforms import InterpolationMode, v2

        kwargs = dict(params)
        kwargs["interpolation"] = InterpolationMode(kwargs["interpolation"])
        return getattr(v2, name)(**kwargs)

    return build


def _build_auto_augment(params: dict) -> Any:
    from torchvision.transforms import AutoAugmentPolicy, InterpolationMode, v2

    return v2.AutoAugment(
        policy=AutoAugmentPolicy(params["policy"]), interpolation=InterpolationMode(params["interpolation"])
    )


def _build_color_jitter(params: dict) -> Any:
    from torchvision.transforms import v2

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
        ParamInfo("padding", "int", REQUIRED, 0, 512, suggest=16, help="pixels of border on every side"),
        _fill(),
        ParamInfo("padding_mode", "choice", "constant", choices=("constant", "edge", "reflect", "symmetric")),
    ], "add a border on every side"),
    _op("RandomHorizontalFlip", "geometry", True, [_prob()], "mirror left-right", p_only=True,
        effect="mirrors the image left-right"),
    _op("RandomVerticalFlip", "geometry", True, [_prob()], "mirror top-bottom", p_only=True,
        effect="flips the image upside down"),
    _op("RandomRotation", "geometry", True, [
        ParamInfo("degrees", "pair", REQUIRED, -180, 180, scalar="sym", suggest=[-15.0, 15.0],
                  help="range of the rotation angle in degrees"),
        _interp("nearest"), _fill(),
    ], "rotate by a random angle", build=_with_interp("RandomRotation")),
    _op("RandomAffine", "geometry", True, [
        ParamInfo("degrees", "pair", REQUIRED, -180, 180, scalar="sym", suggest=[-10.0, 10.0],
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
        ParamInfo("kernel_size", "int", REQUIRED, 1, 101, suggest=5, help="odd size of the blur kernel"),
        ParamInfo("sigma", "pair", [0.1, 2.0], 0.01, 50.0, scalar="same", help="range of the blur strength"),
    ], "blur with a random strength"),
    _op("RandomEqualize", "colour", True, [_prob()], "equalize the histogram", p_only=True,
        effect="equalizes the histogram"),
    _op("RandomAutocontrast", "colour", True, [_prob()], "stretch the contrast to the full range", p_only=True,
        effect="stretches the contrast"),
    _op("RandomAdjustSharpness", "colour", True, [
        ParamInfo("sharpness_factor", "float", REQUIRED, 0.0, 10.0, suggest=2.0, help="0 blurs, 1 keeps, 2 sharpens"),
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
        ParamInfo("policy", "choice", "imagenet", choices=AUTO_AUGMENT_POLICIES),
        _interp("nearest"),
    ], "AutoAugment learned policy", build=_build_auto_augment),
    _op("Normalize", "tensor", False, [
        ParamInfo("mean", "triple", REQUIRED, -10.0, 10.0, suggest=list(IMAGENET_MEAN), help="per channel (R, G, B)"),
        ParamInfo("std", "triple", REQUIRED, 1e-6, 100.0, suggest=list(IMAGENET_STD), help="per channel (R, G, B)"),
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
]  # fmt: skip

OPS: dict[str, OpInfo] = {op.name: op for op in _OP_LIST}


# ---- what a (validated) step does -----------------------------------------------------------------


def is_deterministic(step: Mapping[str, Any]) -> bool:
    """True when the step does the same thing to every image (p=0 or p=1 for p-only ops)."""
    op = OPS[step["op"]]
    return not op.random or (op.p_only and step["p"] in (0.0, 1.0))


def always_applied(step: Mapping[str, Any]) -> bool:
    """True when the step runs on every image (a p-only op at p=1 counts)."""
    op = OPS[step["op"]]
    return not op.random or (op.p_only and step["p"] >= 1.0)


def is_noop(step: Mapping[str, Any]) -> bool:
    """True for a p-only op that never runs (p=0)."""
    return OPS[step["op"]].p_only and step["p"] <= 0.0
