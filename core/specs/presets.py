"""Named (train, eval) spec pairs to start from: baseline, center-crop, light, strong, and a backbone's
own preprocessing ("backbone default") as an ordinary pair (no torch)."""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import SpecError
from core.specs.ops import IMAGENET_MEAN, IMAGENET_STD, MAX_OUTPUT_SIDE, REQUIRED, ParamInfo
from core.specs.spec import Step, TransformSpec, check_param

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


def _with_final_size(spec: TransformSpec, size: tuple[int, ...]) -> TransformSpec:
    """``spec`` with its last Resize/RandomResizedCrop resized to ``size`` (an already checked [h, w])."""
    last = max(i for i, s in enumerate(spec) if s["op"] in ("Resize", "RandomResizedCrop"))
    step = spec[last]
    resized = Step(step.op, tuple((k, size if k == "size" else v) for k, v in step.params))
    return TransformSpec((*spec.steps[:last], resized, *spec.steps[last + 1 :]))


def preset_pair(name: str, img_size: Sequence[int] | None = None) -> tuple[TransformSpec, TransformSpec]:
    """(train, eval) of a preset as TransformSpecs; ``img_size`` = [h, w] replaces the final resize's size."""
    if name not in PRESETS:
        raise SpecError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    train, eval_ = (TransformSpec.parse(s) for s in PRESETS[name])
    if img_size is None:
        return train, eval_
    size = check_param(ParamInfo("img_size", "size", REQUIRED, 1, MAX_OUTPUT_SIDE), list(img_size), f"preset {name}")
    return _with_final_size(train, tuple(size)), _with_final_size(eval_, tuple(size))


def preset(name: str, img_size: Sequence[int] | None = None) -> tuple[list[dict], list[dict]]:
    """(train, eval) of a preset as plain validated lists (fresh copies: the page edits them)."""
    train, eval_ = preset_pair(name, img_size)
    return train.to_list(), eval_.to_list()


BACKBONE_DEFAULT = "backbone default"  # the pair made from a backbone's pretrained weights (backbone_pair)
_FINE_TUNE_SCALE = (0.35, 1.0)  # faces fill these photos: timm's 8% crops would often lose the mask


def backbone_pair(prep: dict) -> tuple[TransformSpec, TransformSpec]:
    """(train, eval) TransformSpecs reproducing what a backbone's pretrained weights expect.

    ``prep`` is ``core.training.zoo.preprocessing(name)``: input size, resize, crop, mean, std,
    interpolation. Eval: resize to the crop's size divided by the weights' crop fraction, centre crop,
    normalise (torchvision's and timm's eval transform, except that Resize here takes an exact
    [height, width]: the photo's aspect is not kept, the same way in training and evaluation).
    Train: a random resized crop at the input size and a horizontal flip, then the same normalisation.
    """
    crop = [int(v) for v in (prep.get("crop") or prep["input_size"])]
    interpolation = str(prep.get("interpolation") or "bilinear")
    if interpolation not in ("nearest", "bilinear", "bicubic"):
        interpolation = "bilinear"
    normalize = {"op": "Normalize", "mean": [float(v) for v in prep["mean"]], "std": [float(v) for v in prep["std"]]}
    resize = prep.get("resize")
    if resize and prep.get("crop"):
        scale = float(resize) / min(crop)  # e.g. 256 / 224: the weights saw a centre crop of this share
        size = [round(crop[0] * scale), round(crop[1] * scale)]
        eval_steps = [
            {"op": "Resize", "size": size, "interpolation": interpolation},
            {"op": "CenterCrop", "size": crop},
        ]
    else:
        eval_steps = [{"op": "Resize", "size": crop, "interpolation": interpolation}]
    train_steps = [
        {"op": "RandomResizedCrop", "size": crop, "scale": list(_FINE_TUNE_SCALE), "ratio": [0.75, 4 / 3],
         "interpolation": interpolation},
        {"op": "RandomHorizontalFlip", "p": 0.5},
    ]  # fmt: skip
    return (
        TransformSpec.parse([*train_steps, normalize], source=BACKBONE_DEFAULT),
        TransformSpec.parse([*eval_steps, normalize], source=BACKBONE_DEFAULT),
    )
