"""Grad-CAM: heat where the evidence is, every convolutional backbone, transformers refused, cache, overlay, CLI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import runs
from core.__main__ import main as cli_main
from core.errors import ConfigError
from core.evaluation import gradcam, infer

SIZE = 64  # training images: SIZE x SIZE; class "square" has a bright square in one (random) corner
SQUARE = 18
CLASSES = ["plain", "square"]


def eval_spec(size=(SIZE, SIZE)) -> list[dict]:
    from core.specs import transforms

    return transforms.preset("baseline", img_size=size)[1]


def noise_image(rng: np.random.Generator, corner: int | None) -> np.ndarray:
    """Dim noise, with a bright square in ``corner`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    img = rng.integers(0, 90, size=(SIZE, SIZE, 3), dtype=np.uint8)
    if corner is not None:
        top = int(rng.integers(0, 5)) if corner < 2 else SIZE - SQUARE - int(rng.integers(0, 5))
        left = int(rng.integers(0, 5)) if corner % 2 == 0 else SIZE - SQUARE - int(rng.integers(0, 5))
        img[top : top + SQUARE, left : left + SQUARE] = rng.integers(220, 256, (SQUARE, SQUARE, 3), dtype=np.uint8)
    return img


def save_run(parent: Path, name: str, net: torch.nn.Module, model: str, classes: list[str], spec: list[dict]) -> Path:
    """A completed run folder in the format the training loop writes (as tests/test_infer.py makes them)."""
    folder = runs.create_run_folder(parent, run_id=name)
    meta = {"model": model, "task": "class", "classes": classes, "img_size": [SIZE, SIZE], "eval_spec": spec}
    runs.write_config(folder, {"kind": "imported", **meta, "train_spec": spec, "source": "test"})
    runs.save_checkpoint(
        folder.best_checkpoint,
        {
            "model": net.state_dict(),
            "model_name": model,
            "task": "class",
            "classes": classes,
            "img_size": [SIZE, SIZE],
            "eval_spec": spec,
            "config": meta,
        },
    )
    runs.write_status(folder, state="completed")
    return folder.root


@pytest.fixture(scope="module")
def square_run(tmp_path_factory) -> tuple[Path, list[tuple[Path, int | None]]]:
    """small_cnn trained (a few hundred CPU steps, seconds) to tell photos with a bright square from plain ones.

    Returns the run and held-out photos with the corner of their square (None: plain).
    """
    from core.training import models

    root = tmp_path_factory.mktemp("gradcam")
    rng = np.random.default_rng(0)
    spec = eval_spec()
    load = infer.input_loader(spec)
    files: list[tuple[Path, int | None]] = []
    (root / "images").mkdir()
    for k in range(192):
        corner = None if k % 2 == 0 else (k // 2) % 4
        path = root / "images" / f"{k:03d}.png"
        Image.fromarray(noise_image(rng, corner)).save(path)
        files.append((path, corner))
    x = torch.stack([load(p) for p, _ in files])
    y = torch.tensor([0 if c is None else 1 for _, c in files])
    torch.manual_seed(0)
    net = models.build_model("small_cnn", 2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(200):
        idx = torch.randint(0, 160, (32,))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x[160:]).argmax(1) == y[160:]).float().mean().item()
    assert accuracy >= 0.9, f"the tiny model did not learn the squares (held-out accuracy {accuracy:.2f})"
    return save_run(root / "models", "squares", net, "small_cnn", CLASSES, spec), files[160:]


def quadrant_share(heat: np.ndarray, corner: int) -> float:
    h, w = heat.shape
    rows = slice(0, h // 2) if corner < 2 else slice(h // 2, h)
    cols = slice(0, w // 2) if corner % 2 == 0 else slice(w // 2, w)
    return float(heat[rows, cols].sum() / max(heat.sum(), 1e-9))


def test_heat_peaks_in_the_corner_that_holds_the_evidence(square_run):
    run, held_out = square_run
    member = infer.load_run(run, "cpu")
    shares = []
    for path, corner in [(p, c) for p, c in held_out if c is not None][:12]:
        heat = gradcam.gradcam(member, path, target_class=CLASSES.index("square"))
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
        assert 0.0 <= heat.min() and heat.max() <= 1.0
        shares.append(quadrant_share(heat, corner))
        row, col = np.unravel_index(np.argmax(heat), heat.shape)
        assert (row < SIZE // 2) == (corner < 2) and (col < SIZE // 2) == (corner % 2 == 0)  # the hottest spot too
    assert len(shares) >= 8
    assert np.median(shares) > 0.5, shares  # most of the heat in the square's quadrant (a quarter by chance)
    assert min(shares) > 0.3, shares


def test_default_class_is_the_prediction_and_the_cache_is_reused(square_run, monkeypatch):
    run, held_out = square_run
    member = infer.load_run(run, "cpu")
    path = next(p for p, c in held_out if c is not None)
    gradcam.clear_cache()
    calls = []
    real = gradcam.gradcam_tensor
    monkeypatch.setattr(gradcam, "gradcam_tensor", lambda *a: calls.append(a[-1]) or real(*a))
    first = gradcam.gradcam(member, path, 1)
    again = gradcam.gradcam(member, path, 1)
    assert again is first and len(calls) == 1  # paging back costs nothing
    gradcam.gradcam(member, path, 0)
    assert len(calls) == 2  # another class is another map
    assert gradcam.predicted_class(member, path) == 1
    assert np.array_equal(gradcam.gradcam(member, path), first)  # None: the predicted class, from the cache
    assert len(calls) == 2
    os.utime(path, ns=(1, 1))  # the photo changed (a new modification time): computed again
    gradcam.gradcam(member, path, 1)
    assert len(calls) == 3
    with pytest.raises(ConfigError, match="class 7"):
        gradcam.gradcam(member, path, 7)


def _run_model(net: torch.nn.Module, name: str, size=(64, 48)) -> infer.RunModel:
    return infer.RunModel(
        run_id="t",
        root=Path("/nonexistent/run"),
        model_name=name,
        task="class",
        classes=[str(k) for k in range(3)],
        img_size=size,
        eval_spec=eval_spec(size),
        model=net.eval(),
        device=torch.device("cpu"),
    )


def _timm_available() -> bool:
    from core.training import models

    try:
        models.build_model("timm:resnet10t", 3)
    except Exception:  # noqa: BLE001 - not installed, or models has no timm support yet
        return False
    return True


BACKBONES = [
    ("small_cnn", "features"),
    ("resnet18", "layer4"),
    ("efficientnet_b0", "features"),
    pytest.param(
        "timm:resnet10t",
        "layer4",
        marks=pytest.mark.skipif(not _timm_available(), reason="timm backbones not available"),
    ),
]


@pytest.mark.parametrize(("name", "layer"), BACKBONES)
def test_every_convolutional_backbone_gets_a_map_at_eval_size(name, layer, tmp_path):
    from core.training import models

    torch.manual_seed(0)
    net = models.build_model(name, 3)
    member = _run_model(net, name)
    found, _module = gradcam.find_target_layer(net, (64, 48))
    assert found == layer
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 60, 3), dtype=np.uint8)).save(photo)
    maps = [gradcam.gradcam(member, photo, k) for k in range(3)]
    for heat in maps:
        assert heat.shape == (64, 48) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    assert any(heat.max() == pytest.approx(1.0) for heat in maps)  # normalised: the hottest spot of some class is 1


def test_transformers_are_refused_with_a_clear_message(tmp_path):
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(
        image_size=32, patch_size=16, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8, num_classes=3
    )
    member = _run_model(vit, "vit_b_16", size=(32, 32))
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (120, 30, 30)).save(photo)
    with pytest.raises(gradcam.GradCamUnavailable, match="not available for this backbone"):
        gradcam.gradcam(member, photo, 0)


def test_overlay_is_at_the_photo_size_and_only_inside_the_model_view():
    photo = Image.new("RGB", (384, 512), (90, 90, 90))
    heat = np.zeros((128, 96), dtype=np.float32)
    heat[:16, :12] = 1.0  # the model view's top-left corner is hot
    center_crop = [{"op": "CenterCrop", "size": [320, 256]}, {"op": "Resize", "size": [128, 96]}]
    box = gradcam.heat_box(center_crop, (512, 384))
    assert box == pytest.approx((96.0, 64.0, 320.0, 256.0))
    out = np.asarray(gradcam.overlay(photo, heat, box=box), dtype=np.int16)
    assert out.shape == (512, 384, 3)
    assert (out[:90] == 90).all() and (out[:, :60] == 90).all()  # outside the crop: the photo untouched
    assert np.abs(out[100, 70] - 90).sum() > 60  # the crop's top-left corner is coloured
    assert (out[400, 300] == 90).all()  # cold inside the crop: untouched


def test_cli_writes_the_overlay_at_the_photo_size(square_run, tmp_path, capsys):
    run, held_out = square_run
    photo = tmp_path / "big.png"
    Image.open(held_out[0][0]).resize((200, 200)).save(photo)
    out = tmp_path / "out" / "heat.png"
    assert cli_main(["gradcam", "--run", str(run), "--image", str(photo), "--out", str(out), "--device", "cpu"]) == 0
    with Image.open(out) as written:
        assert written.size == (200, 200)
    assert "Grad-CAM of class" in capsys.readouterr().out
    assert cli_main(["gradcam", "--run", str(run), "--image", str(photo), "--out", str(out), "--class", "9"]) == 2
    assert "class 9" in capsys.readouterr().err
    assert cli_main(["gradcam", "--run", str(run), "--image", str(tmp_path / "nope.png"), "--out", str(out)]) == 2
