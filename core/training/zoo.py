"""Facts for choosing a backbone: the listing, what one costs, what input it expects, how fast it runs here.

CONTRACT:

    list_backbones(filter_text="", sources=SOURCES) -> list[dict]
        # cheap (no model built): name, source, input_size [h, w], fixed_size [h, w] | None,
        # imagenet_top1 (torchvision's weights metadata; None for timm), pretrained (weights exist),
        # cached (weights already on this machine), weights_url
    model_facts(name, img_size=(224, 224), num_classes=1000) -> dict
        # builds the model (on the meta device when it can): params, gflops at img_size (torch's FlopCounterMode,
        # which counts a multiply-add as 2 FLOPs), plus the listing row
    preprocessing(name) -> dict
        # the pretrained weights' own input: input_size, resize, crop, mean, std, interpolation (plain data)
    backbone_default_pair(name) -> (TransformSpec, TransformSpec)
        # that preprocessing as an ordinary (train, eval) spec pair: the "backbone default" preset
    measure_speed(name, img_size, batch_size=16, steps=3, channels_last=None, device="cpu", use_cache=True) -> dict
        # train_images_per_s, infer_images_per_s measured on this machine; cached under settings.cache_dir
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.training import models, weights

SOURCES = ("builtin", "torchvision", "timm")
SPEED_CACHE_FILE = "backbone-speed.json"
SMALL_CNN_INPUT = (128, 96)  # the competition baseline's size, which small_cnn was designed for
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# ---- the listing -----------------------------------------------------------------------------------------


def list_backbones(filter_text: str = "", sources: Sequence[str] = SOURCES) -> list[dict[str, Any]]:
    """Every backbone whose name contains ``filter_text`` (case-insensitive), cheapest facts only."""
    needle = filter_text.strip().lower()
    rows: list[dict[str, Any]] = []
    if "builtin" in sources and needle in models.SMALL_CNN:
        rows.append(_row(models.SMALL_CNN, "builtin", list(SMALL_CNN_INPUT)))
    if "torchvision" in sources:
        rows += [_torchvision_row(n) for n in models.torchvision_model_names() if needle in n.lower()]
    if "timm" in sources:
        rows += [_timm_row(n) for n in _timm_listing() if needle in n.lower()]
    return rows


def backbone_row(name: str) -> dict[str, Any]:
    """The listing row of one backbone."""
    models.check_model_name(name)
    source = models.model_source(name)
    if source == "builtin":
        return _row(name, source, list(SMALL_CNN_INPUT))
    return _torchvision_row(name) if source == "torchvision" else _timm_row(name)


def _row(name: str, source: str, input_size: list[int] | None, **facts: Any) -> dict[str, Any]:
    base = {"name": name, "source": source, "input_size": input_size, "fixed_size": None, "imagenet_top1": None,
            "pretrained": False, "cached": False, "weights_url": None}  # fmt: skip
    return {**base, **facts}


def _torchvision_row(name: str) -> dict[str, Any]:
    default = models.torchvision_default_weights(name)
    if default is None:
        return _row(name, "torchvision", [224, 224], fixed_size=_listed(models.fixed_input_size(name)))
    crop = default.transforms.keywords.get("crop_size", 224)  # a functools.partial: no module built
    top1 = default.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    return _row(
        name,
        "torchvision",
        [int(crop), int(crop)],
        fixed_size=_listed(models.fixed_input_size(name)),
        imagenet_top1=top1,
        pretrained=True,
        cached=weights.url_file(default.url).is_file(),
        weights_url=default.url,
    )


def _timm_listing() -> list[str]:
    """timm names with weights (``arch.tag``), then the architectures that have none (random init only)."""
    tagged = models.timm_model_names(pretrained=True)
    with_weights = {n.partition(".")[0] for n in tagged}
    return [models.TIMM_PREFIX + n for n in tagged] + [
        models.TIMM_PREFIX + n for n in models.timm_model_names() if n not in with_weights
    ]


def _timm_row(name: str) -> dict[str, Any]:
    cfg = models.timm_pretrained_cfg(name)
    if cfg is None:
        return _row(name, "timm", None)
    fixed = [int(cfg.input_size[1]), int(cfg.input_size[2])] if cfg.fixed_input_size else None
    has_weights = bool(cfg.hf_hub_id or cfg.url)
    url = f"{weights.hf_endpoint()}/{cfg.hf_hub_id}" if cfg.hf_hub_id else (cfg.url or None)
    return _row(
        name,
        "timm",
        [int(cfg.input_size[1]), int(cfg.input_size[2])],
        fixed_size=fixed,
        pretrained=has_weights,
        cached=bool(has_weights and weights.timm_cached_file(cfg)),
        weights_url=url,
    )


def _listed(size: tuple[int, int] | None) -> list[int] | None:
    return list(size) if size else None


# ---- costs -----------------------------------------------------------------------------------------------


def model_facts(name: str, img_size: Sequence[int] = (224, 224), num_classes: int = 1000) -> dict[str, Any]:
    """Parameters and GFLOPs of one forward pass of one image at ``img_size``, with the listing row.

    Built on the meta device (no memory, no weight init) when the model allows it, else on the CPU.
    """
    row = backbone_row(name)
    h, w = (int(v) for v in img_size)
    note = None
    fixed = models.fixed_input_size(name)
    if fixed and fixed != (h, w):
        (h, w), note = fixed, f"{name} takes {fixed[0]}x{fixed[1]} only: counted at that size"
    try:
        params, flops = _count(name, num_classes, (h, w), "meta")
    except Exception:  # noqa: BLE001 - an op the meta device cannot run (regnet's widths use .tolist()): use the CPU
        params, flops = _count(name, num_classes, (h, w), "cpu")
    return {
        **row,
        "img_size": [h, w],
        "num_classes": num_classes,
        "params": params,
        "gflops": round(flops / 1e9, 3),
        "note": note,
    }


def _count(name: str, num_classes: int, size: tuple[int, int], device: str) -> tuple[int, int]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device(device):
        net = models.build_model(name, num_classes).eval()
        x = torch.zeros(1, 3, *size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return int(sum(p.numel() for p in net.parameters())), int(counter.get_total_flops())


# ---- the weights' own preprocessing ---------------------------------------------------------------------


def preprocessing(name: str) -> dict[str, Any]:
    """What the backbone's pretrained weights expect as input, as plain data.

    ``input_size`` is what the network sees; ``resize`` the shorter side the image is resized to before a
    centre ``crop`` (None for small_cnn, which takes the whole photo resized to 128x96).
    """
    models.check_model_name(name)
    source = models.model_source(name)
    if source == "torchvision":
        return _torchvision_preprocessing(name)
    if source == "timm":
        return _timm_preprocessing(name)
    return {
        "input_size": SMALL_CNN_INPUT,
        "resize": None,
        "crop": None,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "interpolation": "bilinear",
    }


def backbone_default_pair(name: str) -> tuple[Any, Any]:
    """The "backbone default" preset: ``preprocessing(name)`` as an ordinary (train, eval) spec pair,
    so the pair check, the preview and training treat it like any other pair."""
    from core.specs.presets import backbone_pair

    return backbone_pair(preprocessing(name))


def _torchvision_preprocessing(name: str) -> dict[str, Any]:
    default = models.torchvision_default_weights(name)
    if default is None:
        return {**preprocessing(models.SMALL_CNN), "input_size": (224, 224), "resize": 256, "crop": (224, 224)}
    t = default.transforms()  # torchvision's ImageClassification preset for these weights
    crop = int(t.crop_size[0])
    return {
        "input_size": (crop, crop),
        "resize": int(t.resize_size[0]),
        "crop": (crop, crop),
        "mean": list(t.mean),
        "std": list(t.std),
        "interpolation": t.interpolation.value,
    }


def _timm_preprocessing(name: str) -> dict[str, Any]:
    from timm.data import resolve_data_config

    cfg = models.timm_pretrained_cfg(name)
    if cfg is None:
        return {**preprocessing(models.SMALL_CNN), "input_size": (224, 224), "resize": 256, "crop": (224, 224)}
    data = resolve_data_config(pretrained_cfg=cfg.to_dict())
    h, w = int(data["input_size"][1]), int(data["input_size"][2])
    # timm's eval transform: resize the shorter side to size / crop_pct, then centre-crop the input size
    resize = math.floor(min(h, w) / data["crop_pct"]) if data.get("crop_mode", "center") == "center" else min(h, w)
    return {
        "input_size": (h, w),
        "resize": int(resize),
        "crop": (h, w),
        "mean": list(data["mean"]),
        "std": list(data["std"]),
        "interpolation": str(data["interpolation"]),
    }


# ---- speed on this machine -------------------------------------------------------------------------------


def measure_speed(
    name: str,
    img_size: Sequence[int],
    batch_size: int = 16,
    steps: int = 3,
    channels_last: bool | None = None,
    device: str = "cpu",
    use_cache: bool = True,
    num_classes: int = 18,
) -> dict[str, Any]:
    """Training and inference images/s of ``name`` at ``img_size`` here (random weights and images).

    One warm-up step each, then ``steps`` timed steps. Cached per (name, size, batch, layout, device,
    threads) in ``<settings.cache_dir>/backbone-speed.json``: a measurement costs seconds to minutes.
    """
    import torch

    h, w = (int(v) for v in img_size)
    layout = models.prefers_channels_last(name) if channels_last is None else bool(channels_last)
    key = f"{name}|{h}x{w}|b{batch_size}|{'cl' if layout else 'contig'}|{device}|t{torch.get_num_threads()}"
    cache = _speed_cache_path()
    if use_cache:
        from core.fsutil import read_json

        known = read_json(cache, default={}) or {}
        if key in known:
            return {**known[key], "cached": True}
    result = _time_model(name, (h, w), batch_size, steps, layout, torch.device(device), num_classes)
    result.update(name=name, img_size=[h, w], batch_size=batch_size, channels_last=layout, device=device)
    if use_cache:
        _remember_speed(cache, key, result)
    return {**result, "cached": False}


def _time_model(name, size, batch_size, steps, channels_last, device, num_classes) -> dict[str, float]:
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = models.build_model(name, num_classes).to(device=device, memory_format=fmt)
    x = torch.randn(batch_size, 3, *size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    def infer_step() -> None:
        with torch.inference_mode():
            net(x)

    net.train()
    train_s = _timed(train_step, steps, device)
    net.eval()
    infer_s = _timed(infer_step, steps, device)
    return {
        "train_images_per_s": round(batch_size * steps / train_s, 1),
        "infer_images_per_s": round(batch_size * steps / infer_s, 1),
    }


def _timed(step, steps: int, device) -> float:
    import torch

    step()  # warm-up: allocator, oneDNN primitive caches, cuDNN autotuning
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return max(time.perf_counter() - start, 1e-9)


def _speed_cache_path() -> Path:
    from core import settings

    return settings.load().cache_dir / SPEED_CACHE_FILE


def _remember_speed(path: Path, key: str, result: dict[str, Any]) -> None:
    from core.fsutil import atomic_write_json, read_json

    known = read_json(path, default={}) or {}
    known[key] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, known)
