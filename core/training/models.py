"""Backbones: every torchvision classification model, every timm model, and small_cnn; heads sized to the task.

CONTRACT:

    MODEL_NAMES: list[str]            # the short default list the pages show first (today's ten); not the limit
    check_model_name(name) -> name    # small_cnn | any torchvision classification model | "timm:<name>[.tag]"
    model_source(name) -> "builtin" | "torchvision" | "timm"
    fixed_input_size(name, pretrained=False) -> (h, w) | None   # ViTs, MaxViT...: the only size they take
    check_model_config(name, pretrained, img_size=None)         # what a TrainConfig needs checked, ConfigError
    build_model(name, num_classes, pretrained=False, progress=None) -> nn.Module
        # pretrained: the library's own weights, from its cache or downloaded once (core.training.weights);
        # CheckpointError naming URL, file and folder when that cannot happen
    load_state_dict_checked(model, state_dict, name, num_classes) -> None
        # raises CheckpointError saying which: wrong architecture (unexpected/missing keys) or wrong class count

Names are checked without building anything: torchvision's ``list_models`` and timm's registry (imported
only when a ``timm:`` name is asked about).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from core.errors import CheckpointError, ConfigError
from core.training import weights

SMALL_CNN = "small_cnn"
TIMM_PREFIX = "timm:"
TORCHVISION_MODELS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg11",
    "vgg11_bn",
    "efficientnet_b0",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "convnext_tiny",
)
MODEL_NAMES: list[str] = [SMALL_CNN, *TORCHVISION_MODELS]
POOL_GRID = (4, 3)  # small_cnn's pooled feature grid: portrait photos, height x width
# torchvision families whose forward asserts one input size (measured over list_models at 128x96, 256x192
# and 64x48): ViT checks the patch grid, MaxViT its window partition. Swin pads its windows and takes any size.
FIXED_SIZE_FAMILIES = ("vit_", "maxvit_")
AUX_HEADS = ("AuxLogits", "aux1", "aux2")  # inception_v3 / googlenet training-only heads: never used here


class SmallCNN(nn.Module):
    """A four-block CNN that trains in seconds on a CPU at 128x96.

    At 128x96 a forward pass is ~12 M multiply-adds, about 35x less than resnet18. The head pools
    to a 4x3 grid rather than one vector: where things are matters here (a mask over the nose or below
    it), and on the demo data this learns the mask state several times faster than global pooling.
    """

    def __init__(self, num_classes: int, width: int = 16, dropout: float = 0.2):
        super().__init__()
        chans = [width, width * 2, width * 4, width * 8]
        # Downsample 4x before the first wide convolution (stride-2 stem, then a pool): the costly
        # full- and half-resolution layers never run, and on the demo data it learns the mask state
        # faster than the same blocks at twice the resolution (measured, 80 steps at 128x96).
        layers: list[nn.Module] = [_conv_bn_relu(3, chans[0], stride=2)]
        for cin, cout in zip(chans, chans[1:], strict=False):
            layers += [nn.MaxPool2d(2), _conv_bn_relu(cin, cout, stride=1)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(POOL_GRID)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(chans[-1] * POOL_GRID[0] * POOL_GRID[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


# ---- names -------------------------------------------------------------------------------------------


def model_source(name: str) -> str:
    """Where a (valid) backbone name comes from: "builtin", "timm" or "torchvision"."""
    if name == SMALL_CNN:
        return "builtin"
    return "timm" if name.startswith(TIMM_PREFIX) else "torchvision"


@functools.cache
def torchvision_model_names() -> tuple[str, ...]:
    """Every torchvision classification model (not detection, segmentation, video or quantized)."""
    from torchvision import models

    return tuple(models.list_models(module=models))


@functools.cache
def timm_model_names(pretrained: bool = False) -> tuple[str, ...]:
    """timm's architectures (``pretrained=False``) or its ``arch.tag`` names that have weights."""
    return tuple(_timm().list_models(pretrained=pretrained))


def _timm() -> Any:
    """timm, imported after WORKBENCH_OFFLINE had its say (huggingface_hub reads HF_HUB_OFFLINE on import)."""
    weights.is_offline()
    import timm

    return timm


def check_model_name(name: str) -> str:
    """``name`` if it is a backbone this workbench builds, else a ConfigError suggesting the nearest names."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model: expected a backbone name, got {name!r}")
    if name == SMALL_CNN or name in TORCHVISION_MODELS:
        return name
    if name.startswith(TIMM_PREFIX):
        if _is_timm_name(name[len(TIMM_PREFIX) :]):
            return name
        known = [TIMM_PREFIX + n for n in (*timm_model_names(), *timm_model_names(pretrained=True))]
    else:
        if name in torchvision_model_names():
            return name
        known = [SMALL_CNN, *torchvision_model_names()]
    near = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise ConfigError(
        f"model: unknown backbone {name!r}; {hint}choose small_cnn, a torchvision model (e.g. resnet50) "
        f"or timm:<name> (e.g. timm:resnet10t); `python -m core models` lists them"
    )


def _is_timm_name(name: str) -> bool:
    arch, _, tag = name.partition(".")
    if not arch or arch not in timm_model_names():
        return False
    return not tag or name in timm_model_names(pretrained=True)


def timm_pretrained_cfg(name: str) -> Any | None:
    """timm's pretrained config of ``timm:<arch>[.tag]`` (the default tag when none is given), or None."""
    try:
        return _timm().models.get_pretrained_cfg(name[len(TIMM_PREFIX) :])
    except RuntimeError:  # an unknown tag
        return None


def torchvision_default_weights(name: str) -> Any | None:
    """The DEFAULT entry of a torchvision model's weights enum, or None when it has none."""
    from torchvision import models

    try:
        return models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError):
        return None


def has_pretrained_weights(name: str) -> bool:
    source = model_source(name)
    if source == "builtin":
        return False
    if source == "timm":
        cfg = timm_pretrained_cfg(name)
        return bool(cfg and (cfg.hf_hub_id or cfg.url))
    return torchvision_default_weights(name) is not None


def fixed_input_size(name: str, pretrained: bool = False) -> tuple[int, int] | None:
    """The one (height, width) a backbone accepts, or None when it takes any size (most convnets)."""
    check_model_name(name)
    source = model_source(name)
    if source == "timm":
        cfg = timm_pretrained_cfg(name)
        return (int(cfg.input_size[1]), int(cfg.input_size[2])) if cfg and cfg.fixed_input_size else None
    if source == "torchvision" and name.startswith(FIXED_SIZE_FAMILIES):
        default = torchvision_default_weights(name)
        if pretrained and default is not None:  # vit_h_14's default weights are SWAG at 518
            h, w = default.meta["min_size"]
            return int(h), int(w)
        return 224, 224  # the builders' default image size
    return None


def check_input_size(name: str, img_size: Sequence[int], pretrained: bool = False) -> None:
    """A ConfigError naming ``img_size`` when ``name`` takes only one size and ``img_size`` is another."""
    fixed = fixed_input_size(name, pretrained)
    if fixed and tuple(int(v) for v in img_size) != fixed:
        h, w = fixed
        raise ConfigError(
            f"img_size: {name} takes {h}x{w} images only, got {img_size[0]}x{img_size[1]}; "
            f"set img_size to [{h}, {w}] (the specs' final Resize follows it)"
        )


def check_model_config(name: str, pretrained: bool, img_size: Sequence[int] | None = None) -> None:
    """Everything about the backbone a TrainConfig can get wrong, checked before launch."""
    check_model_name(name)
    if pretrained and not has_pretrained_weights(name):
        why = "small_cnn has no pretrained weights" if name == SMALL_CNN else f"{name} has no published weights"
        raise ConfigError(f"pretrained: {why}; untick pretrained or pick another backbone")
    if img_size is not None:
        check_input_size(name, img_size, pretrained)


# ---- building ------------------------------------------------------------------------------------------


def build_model(
    name: str, num_classes: int, pretrained: bool = False, progress: Callable[[str], None] | None = None
) -> nn.Module:
    """A backbone by name with its classifier head sized for ``num_classes``.

    ``pretrained``: ImageNet weights through the library's own mechanism and cache, downloaded once
    (progress lines go to ``progress``, by default stdout); see core.training.weights.
    """
    check_model_config(name, pretrained)
    if num_classes < 2:
        raise ConfigError(f"model: need at least 2 classes, got {num_classes}")
    if name == SMALL_CNN:
        return SmallCNN(num_classes)
    if model_source(name) == "timm":
        return _build_timm(name, num_classes, pretrained, progress)
    return _build_torchvision(name, num_classes, pretrained, progress)


def _build_torchvision(
    name: str, num_classes: int, pretrained: bool, progress: Callable[[str], None] | None
) -> nn.Module:
    from torchvision import models

    if not pretrained:
        extra = {"aux_logits": False, "init_weights": True} if name in ("inception_v3", "googlenet") else {}
        return models.get_model(name, weights=None, num_classes=num_classes, **extra)
    default = torchvision_default_weights(name)
    what = f"pretrained weights for {name}"
    path = weights.torchvision_weights_file(default, what, progress)
    weights.read_state_dict(path, what)  # weights_only first: torchvision's own load below unpickles freely
    try:
        # torchvision's builder loads the now-cached file itself, applying its per-family fixes (old densenet
        # key names, inception's input transform, vit_h_14's 518 px grid).
        model = models.get_model(name, weights=default)
    except RuntimeError as err:  # a hand-put file of another model
        raise CheckpointError(f"{path}: these are not {name}'s weights ({str(err)[:200]}); delete the file") from err
    _drop_aux_heads(model)
    return replace_head(model, num_classes)


def _drop_aux_heads(model: nn.Module) -> None:
    """inception_v3 keeps its auxiliary head when built with weights; in training it would return a tuple."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for attr in AUX_HEADS:
            if hasattr(model, attr):
                setattr(model, attr, None)


def _build_timm(name: str, num_classes: int, pretrained: bool, progress: Callable[[str], None] | None) -> nn.Module:
    timm = _timm()
    arch = name[len(TIMM_PREFIX) :]
    if not pretrained:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes)
    path = weights.timm_weights_file(timm_pretrained_cfg(name), f"pretrained weights for {name}", progress)
    try:
        # timm reads the file (weights_only), adapts the head to num_classes and applies the model's checkpoint
        # filter (e.g. a ViT's position embeddings); a "file" source means no network at all.
        return timm.create_model(
            arch, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": str(path)}
        )
    except Exception as err:  # noqa: BLE001 - unpickling, safetensors and shape errors alike: the same advice
        raise CheckpointError(
            f"{path}: cannot load pretrained weights for {name} ({str(err)[:200]}); delete the file and download it again"
        ) from err


def classifier_name(model: nn.Module) -> str:
    """Module name of the layer that outputs the class scores."""
    get_classifier = getattr(model, "get_classifier", None)  # timm models name their head
    if callable(get_classifier):
        head = get_classifier()
        head = head[0] if isinstance(head, (tuple, list)) else head
        layers = [
            n for n, m in head.named_modules(prefix=_module_name(model, head)) if isinstance(m, (nn.Linear, nn.Conv2d))
        ]
        if layers:
            return layers[-1]
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linear:
        return linear[-1]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]  # squeezenet: a 1x1 conv head
    if not convs:
        raise ConfigError(f"model: {type(model).__name__} has no classifier layer to replace")
    return convs[-1]


def _module_name(model: nn.Module, target: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is target)


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the classifier layer (a Linear, or squeezenet's 1x1 convolution) for one with ``num_classes`` outputs."""
    parent_name, _, child = classifier_name(model).rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding)
    setattr(parent, child, new)
    return model


def head_weight_key(model: nn.Module) -> str:
    """State-dict key of the classifier weight (its first dimension is the class count)."""
    return f"{classifier_name(model)}.weight"


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, Any], name: str, num_classes: int) -> None:
    """Load weights, or say plainly why they do not fit: wrong architecture or wrong class count."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"checkpoint for {name}: weights are not a state_dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit {name}: wrong architecture ({len(missing)} missing keys e.g. "
            f"{missing[:3]}, {len(unexpected)} unexpected keys e.g. {unexpected[:3]}); pick the backbone it was trained with"
        )
    head_key = head_weight_key(model)
    got = state_dict[head_key]
    if not isinstance(got, torch.Tensor) or got.shape != expected[head_key].shape:
        got_classes = got.shape[0] if isinstance(got, torch.Tensor) and got.dim() else "?"
        raise CheckpointError(
            f"checkpoint for {name}: wrong class count: it predicts {got_classes} classes, the task has {num_classes}"
        )
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor) or v.shape != expected[k].shape]
    if bad:
        raise CheckpointError(f"checkpoint does not fit {name}: wrong architecture (tensor shapes differ at {bad[:3]})")
    model.load_state_dict(state_dict)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with each Conv2d -> BatchNorm2d pair folded into one convolution.

    The same predictions to float rounding, and a batch of small_cnn at 128x96 runs 1.6x faster on a
    CPU (measured, channels_last). A model torch.fx cannot trace (many timm models) is returned unfused,
    in eval mode.
    """
    from torch.fx.experimental import optimization

    model = model.eval()
    try:
        return optimization.fuse(model)  # works on a deep copy; the loaded weights stay as they were
    except Exception:  # noqa: BLE001 - any tracing failure: the unfused model is correct, just slower
        return model


def prefers_channels_last(name: str) -> bool:
    """Whether channels_last memory format speeds this backbone up on CPU.

    Measured: 1.25-1.7x for the torchvision backbones, but ~2x slower for small_cnn (its tiny
    convolutions are faster in oneDNN's default layout), so small_cnn keeps contiguous tensors.
    """
    return name != SMALL_CNN
