"""TrainConfig: everything one training run needs, as a typed dataclass with JSON in/out.

``from_dict`` rejects unknown keys and invalid values with a ConfigError naming the field, so a
hand-edited config.json or a bad CLI flag fails before any data is read. Re-exported by core.training.loop.

``train_spec`` and ``eval_spec`` are kept as validated TransformSpecs (parsed once here, from a raw
list or taken as they are), so the loader and the loop never check them again; ``to_dict`` writes
them back as plain lists, so config.json keeps its format.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any

from core.data.tasks import TASK_NAMES
from core.errors import ConfigError, SpecError
from core.specs.geometry import output_size
from core.specs.presets import preset_pair
from core.specs.spec import TransformSpec

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine")
LOSSES = ("ce", "label_smoothing", "focal", "weighted_ce")
DEVICES = ("auto", "cpu", "cuda")
CACHES = ("none", "memmap")
AMP_MODES = ("auto", "bf16", "fp16", "off")
AUTO = -1  # freeze_epochs, backbone_lr_mult, workers: chosen for the run (core.training.finetune, .loader)
DEFAULT_IMG_SIZE = (128, 96)  # the competition baseline's height x width


@functools.cache  # TransformSpecs are immutable: every default config can share one pair
def _default_specs() -> tuple[TransformSpec, TransformSpec]:
    return preset_pair("baseline", DEFAULT_IMG_SIZE)


@dataclass
class TrainConfig:
    data: str = "data/demo"  # dataset root (mask-status layout, class folders or a CSV manifest)
    task: str = "class"  # what to predict: "class" (18 classes) or one attribute: mask | gender | age
    model: str = "small_cnn"  # backbone: small_cnn, a torchvision model or timm:<name> (core.training.models)
    pretrained: bool = False  # start from the library's ImageNet weights (downloaded once into its cache)
    train_spec: TransformSpec = field(default_factory=lambda: _default_specs()[0])  # transform steps for training
    eval_spec: TransformSpec = field(default_factory=lambda: _default_specs()[1])  # for validation/inference
    img_size: list = field(
        default_factory=lambda: list(DEFAULT_IMG_SIZE)
    )  # [h, w] the model sees; = both specs' output
    batch_size: int = 64  # images per optimizer step
    epochs: int = 3  # passes over the training split (ignored when max_steps > 0)
    max_steps: int = 0  # optimizer steps to run instead of epochs (0 = run `epochs` epochs)
    optimizer: str = "adamw"  # sgd | adam | adamw
    lr: float = 3e-3  # peak learning rate (after warm-up)
    momentum: float = 0.9  # SGD momentum (Adam's beta1 is left at its default)
    weight_decay: float = 1e-4  # L2 penalty (decoupled for adamw)
    scheduler: str = "cosine"  # learning-rate schedule after warm-up: none | step | cosine
    warmup_steps: int = 10  # steps of linear warm-up from lr/100 to lr (0 = none)
    step_size: int = 1  # "step" scheduler: epochs between decays
    gamma: float = 0.5  # "step" scheduler: decay factor
    loss: str = "ce"  # ce | label_smoothing | focal | weighted_ce (inverse class frequency)
    label_smoothing: float = 0.1  # smoothing for loss="label_smoothing"
    focal_gamma: float = 2.0  # focusing exponent for loss="focal"
    balanced_sampling: bool = False  # draw training images with probability 1/class size (with replacement)
    val_fraction: float = 0.2  # share of people (groups) held out for validation when n_folds = 0
    seed: int = 42  # seeds the split, the shuffle order, augmentations and initial weights
    n_folds: int = 0  # >0: validate on fold `fold` of StratifiedGroupKFold(n_folds) instead of val_fraction
    fold: int = 0  # which fold is validation when n_folds > 0 (0-based)
    device: str = "auto"  # auto (CUDA with mixed precision when present, else CPU) | cpu | cuda
    workers: int = AUTO  # processes decoding images (-1 = auto: 0 on a CPU, the cores per GPU (<= 8) on CUDA)
    log_every: int = 10  # log train loss/accuracy/lr/images-per-s every this many steps
    cache: str = "memmap"  # memmap: decode each image once into a uint8 cache on disk; none: decode every epoch
    channels_last: bool = True  # channels_last memory format for backbones that run faster with it
    # Fine-tuning. A random head's first large gradients wreck pretrained features (and the features need
    # smaller steps than the head), so a pretrained run left on auto trains the head alone for one epoch,
    # then everything with the backbone at a tenth of the head's learning rate; other runs are unchanged.
    freeze_epochs: int = AUTO  # epochs that train only the classifier head (-1 = auto: 1 when pretrained, else 0)
    backbone_lr_mult: float = AUTO  # backbone lr = lr x this; the head gets lr (-1 = auto: 0.1 pretrained, else 1)
    ema_decay: float = 0.0  # evaluate and keep best.pt with an EMA of the weights (0 = off; ~0.999 for long runs)
    # GPUs and processes (what they change is speed and rounding, not what is learnt: resume accepts changes).
    amp: str = "auto"  # mixed precision: auto (CUDA: bf16 where supported, else fp16; CPU: off) | bf16 | fp16 | off
    compile: bool = False  # torch.compile the model; if compiling fails the run goes on uncompiled (logged why)
    nproc: int = 1  # training processes, DistributedDataParallel via torchrun (0 = one per visible GPU)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), _TYPES[f.name]))
        self.validate()

    # ---- JSON in/out ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values in field order (specs as lists): what config.json holds."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Build and validate. A run folder's config.json may also carry "kind": "train" and the
        "classes" the training job found (recorded for readers of the run folder, not a setting)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"config must be a JSON object, got {type(raw).__name__}")
        raw = dict(raw)
        raw.pop("classes", None)
        kind = raw.pop("kind", "train")
        if kind != "train":
            raise ConfigError(f"kind: this is a {kind!r} config, not a training config")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown config field (known: {', '.join(sorted(names))})")
        return cls(**raw)

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied (None values are ignored: unset CLI flags)."""
        merged = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # specs stay validated
        merged.update({k: v for k, v in changes.items() if v is not None})
        return TrainConfig.from_dict(merged)

    # ---- validation -------------------------------------------------------------------------------

    def validate(self) -> None:
        _choice("task", self.task, TASK_NAMES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("loss", self.loss, LOSSES)
        _choice("device", self.device, DEVICES)
        _choice("cache", self.cache, CACHES)
        _choice("amp", self.amp, AMP_MODES)
        from core.training.models import check_model_config

        check_model_config(self.model, self.pretrained, self.img_size if _is_size(self.img_size) else None)
        if not str(self.data).strip():
            raise ConfigError("data: give the dataset folder")
        _at_least("batch_size", self.batch_size, 1)
        _at_least("epochs", self.epochs, 1)
        _at_least("max_steps", self.max_steps, 0)
        _at_least("warmup_steps", self.warmup_steps, 0)
        _at_least("step_size", self.step_size, 1)
        _at_least("workers", self.workers, AUTO)
        _at_least("freeze_epochs", self.freeze_epochs, AUTO)
        _at_least("nproc", self.nproc, 0)
        if self.backbone_lr_mult != AUTO:
            _in_range("backbone_lr_mult", self.backbone_lr_mult, 0.0, 10.0)
        _in_range("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        _at_least("log_every", self.log_every, 1)
        _at_least("n_folds", self.n_folds, 0)
        if self.n_folds == 1:
            raise ConfigError("n_folds: 1 fold leaves nothing to train on; use 0 (val_fraction) or at least 2")
        if self.n_folds and not 0 <= self.fold < self.n_folds:
            raise ConfigError(f"fold: must be between 0 and n_folds-1 = {self.n_folds - 1}, got {self.fold}")
        if not self.n_folds and self.fold != 0:
            raise ConfigError("fold: only used with n_folds > 0; leave it at 0")
        _in_range("lr", self.lr, 0.0, 10.0, low_open=True)
        _in_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _in_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _in_range("gamma", self.gamma, 0.0, 1.0, low_open=True)
        _in_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _in_range("focal_gamma", self.focal_gamma, 0.0, 10.0)
        _in_range("val_fraction", self.val_fraction, 0.0, 0.9, low_open=True)
        self._validate_size_and_specs()

    def _validate_size_and_specs(self) -> None:
        size = self.img_size
        if not _is_size(size):
            raise ConfigError(f"img_size: expected [height, width] as two integers, got {size!r}")
        if not all(8 <= v <= 4096 for v in size):
            raise ConfigError(f"img_size: each side must be between 8 and 4096 pixels, got {size}")
        for name in ("train_spec", "eval_spec"):
            out = output_size(getattr(self, name))  # validated when set: no second check here
            if list(out) != list(size):
                raise ConfigError(
                    f"{name}: produces {out[0]}x{out[1]} images but img_size is {size[0]}x{size[1]}; "
                    "end the spec with a Resize to img_size (or change img_size)"
                )

    # ---- derived -----------------------------------------------------------------------------------

    @property
    def img_hw(self) -> tuple[int, int]:
        return int(self.img_size[0]), int(self.img_size[1])


_TYPES: dict[str, type] = {
    "data": str, "task": str, "model": str, "pretrained": bool,
    "train_spec": TransformSpec, "eval_spec": TransformSpec,  # parsed once by _coerce, from a list
    "img_size": list, "batch_size": int, "epochs": int, "max_steps": int, "optimizer": str, "lr": float,
    "momentum": float, "weight_decay": float, "scheduler": str, "warmup_steps": int, "step_size": int,
    "gamma": float, "loss": str, "label_smoothing": float, "focal_gamma": float, "balanced_sampling": bool,
    "val_fraction": float, "seed": int, "n_folds": int, "fold": int, "device": str, "workers": int,
    "log_every": int, "cache": str, "channels_last": bool, "freeze_epochs": int, "backbone_lr_mult": float,
    "ema_decay": float, "amp": str, "compile": bool, "nproc": int,
}  # fmt: skip


def _is_size(size: Any) -> bool:
    return isinstance(size, list) and len(size) == 2 and all(type(v) is int for v in size)


def _coerce(name: str, value: Any, kind: type) -> Any:
    """Accept exactly the JSON type (ints for floats too); never parse strings or truthy values."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{name}: must be a finite number, got {value!r}")
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    elif kind is TransformSpec:
        if isinstance(value, (TransformSpec, list, tuple)):
            return _spec(name, value)
        kind = list  # what a JSON config gives
    raise ConfigError(f"{name}: expected {kind.__name__}, got {type(value).__name__} {value!r}")


def _spec(name: str, value: Any) -> TransformSpec:
    """A TransformSpec as it is; a raw list validated, the one time, with errors naming the field."""
    try:
        return TransformSpec.parse(value)
    except SpecError as err:
        raise ConfigError(f"{name}: {err}") from err


def _plain(value: Any) -> Any:
    return value.to_list() if isinstance(value, TransformSpec) else copy.deepcopy(value)


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(options)}")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{name}: must be at least {low}, got {value}")


def _in_range(
    name: str, value: float, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> None:
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ConfigError(f"{name}: must be in {lo}{low}, {high}{hi}, got {value}")
