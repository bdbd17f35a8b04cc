"""Grad-CAM: where in a photo a run's evidence for a class lies, as a heat map over the photo.

Typical use::

    member = infer.load_run("models/run-1")
    heat = gradcam(member, "data/x/mask1.jpg", target_class=4)   # H x W float in [0, 1], eval size
    overlay_for(member, "data/x/mask1.jpg", 4).save("heat.png")  # the photo with the heat on top

The method is captum's ``LayerGradCam`` (a maintained implementation): the gradients of the class
score with respect to a convolutional layer's output, averaged over space, weight that layer's
channels; the weighted sum (ReLU'd, so only evidence *for* the class shows) is the heat map.

The layer is found automatically: the last module holding an ``nn.Conv2d`` whose output is still a
B x C x H x W feature map, i.e. the last convolutional stage before global pooling (resnet
``layer4``, efficientnet/mobilenet/vgg/convnext ``features``, small_cnn ``features``, timm resnets
``layer4``). Transformers (torchvision ViT and Swin, timm ViTs) have no such stage: their last
feature map is the patch embedding before any attention, so the heat map would say nothing; they
raise GradCamUnavailable instead of drawing a misleading picture.

The heat map is computed at the run's eval size (the model's own input, the eval spec applied) and
placed back over the region of the photo that input shows (a CenterCrop in the eval spec is
honoured). Heat maps are cached in memory (at most CACHE_ENTRIES, keyed by run folder, checkpoint
time, photo path, its modification time and class), so paging back and forth costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core.errors import WorkbenchError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from core.evaluation.infer import RunModel

CACHE_ENTRIES = 512  # ~48 KB each at 128x96: a few pages of cards, both classes, stay cached
OVERLAY_ALPHA = 0.55  # how strongly the hottest spot covers the photo

_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()
# captum hooks the model while it works: two threads on one model would see each other's hooks.
_compute_lock = threading.Lock()


class GradCamUnavailable(WorkbenchError):
    """Grad-CAM cannot be computed for this backbone (no convolutional stage to explain)."""


# ---- the target layer -----------------------------------------------------------------------------


def is_transformer(model: nn.Module) -> bool:
    """Whether the backbone is attention-based (torchvision ViT/Swin, timm ViTs and relatives)."""
    from torch import nn

    return any(isinstance(m, nn.MultiheadAttention) or "attention" in type(m).__name__.lower() for m in model.modules())


def find_target_layer(model: nn.Module, input_hw: tuple[int, int] = (128, 96)) -> tuple[str, nn.Module]:
    """(name, module) of the last convolutional stage: the last module, in the order modules finish
    their forward pass, that contains an nn.Conv2d and outputs a 4-D feature map larger than 1x1.

    One forward pass of a blank image with hooks on every module finds it; hooks, not names, so it
    works for any backbone (torchvision, timm, small_cnn) without a table to keep up to date.
    """
    import torch
    from torch import nn

    if is_transformer(model):
        raise GradCamUnavailable(
            f"Grad-CAM is not available for this backbone ({type(model).__name__}): it is a transformer, "
            "with no convolutional stage whose heat map would mean anything; use a convolutional backbone"
        )
    has_conv = {name for name, m in model.named_modules() if any(isinstance(c, nn.Conv2d) for c in m.modules())}
    finished: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if name in has_conv and name:

            def record(_m, _inp, out, name=name) -> None:
                if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
                    finished.append(name)

            hooks.append(module.register_forward_hook(record))
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_hw, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    if not finished:
        raise GradCamUnavailable(
            f"Grad-CAM is not available for this backbone ({type(model).__name__}): no convolutional feature map "
            f"larger than 1x1 at input size {input_hw[0]}x{input_hw[1]}"
        )
    return finished[-1], model.get_submodule(finished[-1])


# ---- heat maps ------------------------------------------------------------------------------------------


def gradcam_tensor(model: nn.Module, layer: nn.Module, image: torch.Tensor, target_class: int) -> np.ndarray:
    """Grad-CAM of one input (C x H x W float, already through the eval spec) -> H x W float32 in [0, 1].

    Zero everywhere when nothing in the image speaks for the class (every weighted channel negative).
    """
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    from core.specs.pipeline import one_thread

    height, width = image.shape[-2:]
    device = next(model.parameters()).device
    # contiguous: the eval pipeline hands over a channels-last view, slower through a model not converted to it
    x = image.unsqueeze(0).contiguous().to(device)
    # One image is too small to share between threads: on a busy 2-core machine two threads made a
    # small_cnn card take 100-300 ms instead of ~5 (each op waits for the thread the scheduler took away).
    threads = one_thread() if device.type == "cpu" else contextlib.nullcontext()
    with _compute_lock, threads, torch.inference_mode(False), torch.enable_grad():
        was_training = model.training
        model.eval()
        try:
            attr = LayerGradCam(model, layer).attribute(x.clone(), target=int(target_class), relu_attributions=True)
        finally:
            model.train(was_training)
        heat = LayerAttribution.interpolate(attr.detach(), (height, width), interpolate_mode="bilinear")
    heat = heat[0, 0].float().clamp_(min=0).cpu().numpy()
    top = float(heat.max())
    return (heat / top if top > 0 else heat).astype(np.float32)


def gradcam(run_model: RunModel, image_path: str | os.PathLike, target_class: int | None = None) -> np.ndarray:
    """Heat map (H x W float32 in [0, 1] at the run's eval size) of ``target_class`` for one photo.

    ``target_class`` None means the class the run predicts for this photo. Cached (see the module
    docstring); raises GradCamUnavailable for transformer backbones and ImageError for a bad photo.
    """
    path = Path(image_path)
    if target_class is None:
        target_class = predicted_class(run_model, path)
    target_class = int(target_class)
    if not 0 <= target_class < len(run_model.classes):
        from core.errors import ConfigError

        raise ConfigError(f"class {target_class}: the run has classes 0..{len(run_model.classes) - 1}")
    key = (*_run_key(run_model), *_file_key(path), target_class)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    image = _pipeline(run_model.eval_spec)(path)
    name, layer = _target_layer(run_model, tuple(image.shape[-2:]))
    heat = gradcam_tensor(run_model.model, layer, image, target_class)
    heat.setflags(write=False)  # shared by every caller of the cache
    with _cache_lock:
        _cache[key] = heat
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return heat


def predicted_class(run_model: RunModel, image_path: str | os.PathLike) -> int:
    """The class the run predicts for one photo (its eval pipeline, no TTA)."""
    import torch

    x = _pipeline(run_model.eval_spec)(image_path).unsqueeze(0).to(run_model.device)
    with torch.inference_mode():
        return int(run_model.net(x).argmax(dim=1)[0])


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _run_key(run_model: RunModel) -> tuple:
    from core import runs
    from core.evaluation.infer import checkpoint_path

    try:  # a retrained or re-imported run has a newer checkpoint: its old maps must not be reused
        ckpt_time = checkpoint_path(runs.RunFolder(run_model.root)).stat().st_mtime_ns
    except (WorkbenchError, OSError):
        ckpt_time = id(run_model.model)
    return str(run_model.root), run_model.model_name, ckpt_time


def _file_key(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return str(path), 0, 0
    return str(path.resolve()), st.st_mtime_ns, st.st_size


_pipelines: dict[object, object] = {}


def _pipeline(eval_spec):
    """The run's eval input pipeline, built once per spec (building one costs more than using it)."""
    from core.evaluation.infer import input_loader
    from core.specs.spec import TransformSpec

    key = TransformSpec.parse(eval_spec)  # hashed by content
    if key not in _pipelines:
        _pipelines[key] = input_loader(eval_spec)
    return _pipelines[key]


_layers: dict[tuple[int, tuple[int, int]], tuple[str, nn.Module]] = {}


def _target_layer(run_model: RunModel, input_hw: tuple[int, int]) -> tuple[str, nn.Module]:
    key = (id(run_model.model), input_hw)
    found = _layers.get(key)
    if found is None or found[1] not in list(run_model.model.modules()):
        found = find_target_layer(run_model.model, input_hw)
        _layers[key] = found
    return found


# ---- overlays -------------------------------------------------------------------------------------------

# A perceptual "turbo"-like ramp (dark blue -> cyan -> green -> yellow -> red) as a few anchors,
# interpolated: no plotting library needed for one colour map.
_RAMP_AT = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
_RAMP_RGB = np.array(
    [[48, 18, 59], [40, 130, 245], [30, 210, 150], [170, 240, 50], [250, 160, 30], [200, 20, 10]], dtype=np.float32
)
_RAMP_TABLE = np.stack(
    [np.interp(np.linspace(0, 1, 256), _RAMP_AT, _RAMP_RGB[:, c]) for c in range(3)], axis=-1
).astype(np.uint8)


def colourize(heat: np.ndarray) -> np.ndarray:
    """H x W in [0, 1] -> H x W x 3 uint8 through the heat ramp (a 256-entry table: a photo-sized map in ~1 ms)."""
    levels = (np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return _RAMP_TABLE[levels]


def overlay(
    image: Image.Image | str | os.PathLike,
    heat: np.ndarray,
    box: tuple[float, float, float, float] | None = None,
    alpha: float = OVERLAY_ALPHA,
) -> Image.Image:
    """The photo (RGB, its own size) with ``heat`` blended on top.

    ``box`` = (top, left, height, width) of the photo region the heat map covers (what the eval
    spec showed the model); None means the whole photo. Cold areas stay nearly clear so the photo
    reads through; the hottest spot is covered by ``alpha``.
    """
    if not isinstance(image, Image.Image):
        from core.data import images

        image = images.open_rgb(image)
    photo = image.convert("RGB")
    width, height = photo.size
    top, left, bh, bw = box if box is not None else (0.0, 0.0, float(height), float(width))
    # the heat map stretched over its box, on a canvas of the photo's size (zero outside the box)
    canvas = np.zeros((height, width), dtype=np.float32)
    x0, y0 = int(round(left)), int(round(top))
    x1, y1 = int(round(left + bw)), int(round(top + bh))
    scaled = Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F").resize(
        (max(1, x1 - x0), max(1, y1 - y0)), Image.Resampling.BILINEAR
    )
    patch = np.asarray(scaled, dtype=np.float32)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = patch[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    weight = (alpha * (0.15 + 0.85 * np.clip(canvas, 0, 1)))[..., None]
    weight[canvas <= 0] = 0.0  # outside the box or no evidence at all: the photo as it is
    blended = np.asarray(photo, dtype=np.float32)
    shift = colourize(canvas).astype(np.float32)
    shift -= blended  # photo + weight * (colour - photo), in place: a photo-sized blend in a few ms
    shift *= weight
    blended += shift
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), "RGB")


def heat_box(eval_spec: list[dict], photo_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """(top, left, height, width) of the photo region the eval spec shows the model (a crop honoured)."""
    from core.specs.geometry import simulate
    from core.specs.spec import as_spec

    top, left, bh, bw = simulate(as_spec(eval_spec), (int(photo_hw[0]), int(photo_hw[1]))).box
    return float(top), float(left), float(bh), float(bw)


def overlay_for(run_model: RunModel, image_path: str | os.PathLike, target_class: int | None = None) -> Image.Image:
    """The photo at its own size with the run's Grad-CAM of ``target_class`` (None: predicted) on top."""
    from core.data import images

    heat = gradcam(run_model, image_path, target_class)
    photo = images.open_rgb(image_path)
    return overlay(photo, heat, box=heat_box(run_model.eval_spec, (photo.height, photo.width)))
