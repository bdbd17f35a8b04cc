"""A sample of backbone families: each builds, trains one step and predicts on tiny images (no pretrained weights).

Heavy builds (vgg11's 130 M parameters, convnext_tiny, a ViT at its fixed 224) are marked slow.
"""

from __future__ import annotations

import json

import pytest
import torch

from core.training import models

QUICK = [
    ("resnet18", (64, 48)),
    ("efficientnet_b0", (64, 48)),
    ("mobilenet_v3_small", (64, 48)),
    ("regnet_y_400mf", (64, 48)),
    ("timm:resnet10t", (64, 48)),
    ("timm:mobilenetv3_small_050", (64, 48)),
    ("timm:test_vit", (160, 160)),  # a timm ViT at its fixed size
]
HEAVY = [
    ("vgg11", (64, 48)),
    ("convnext_tiny", (64, 48)),
    ("vit_b_16", (224, 224)),  # torchvision's ViT takes 224x224 only
]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_step_then_predict(name: str, size: tuple[int, int], classes: int = 3) -> None:
    torch.manual_seed(0)
    assert models.fixed_input_size(name) in (None, size)
    net = models.build_model(name, classes).train()
    x, y = torch.rand(2, 3, *size), torch.tensor([0, 2])
    head = models.head_weight_key(net)
    before = net.state_dict()[head].clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(net.state_dict()[head], before)  # the step reached the new head

    with torch.inference_mode():
        scores = net.eval()(x)
        fused = models.fuse_for_inference(net)(x)  # folded where torch.fx can trace, else the same model
    assert scores.shape == (2, classes)
    torch.testing.assert_close(fused, scores, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("name", "size"), QUICK, ids=[n for n, _ in QUICK])
def test_a_backbone_trains_a_step_and_predicts(name, size):
    train_step_then_predict(name, size)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), HEAVY, ids=[n for n, _ in HEAVY])
def test_a_heavy_backbone_trains_a_step_and_predicts(name, size):
    train_step_then_predict(name, size)


def test_the_models_command_lists_both_sources_as_json(capsys):
    from core.__main__ import main

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert {r["source"] for r in rows} == {"builtin", "torchvision", "timm"}
    assert by_name["resnet18"]["imagenet_top1"] == pytest.approx(69.758)
    assert by_name["vit_b_16"]["fixed_size"] == [224, 224]
    assert by_name["timm:resnet10t.c3_in1k"]["input_size"] == [176, 176]
    assert by_name["small_cnn"]["pretrained"] is False
    assert all(isinstance(r["cached"], bool) for r in rows)


def facts(main, capsys, *size: str) -> dict:
    assert (
        main(["models", "--json", "--filter", "resnet18", "--source", "torchvision", "--facts", "--size", *size]) == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    return row


def test_facts_count_parameters_and_flops_at_the_asked_size(capsys):
    from core.__main__ import main

    full, small = facts(main, capsys, "224", "224"), facts(main, capsys, "112", "112")
    assert full["params"] == small["params"] == 11_689_512  # torchvision's published count (1000 classes)
    assert full["gflops"] == pytest.approx(2 * 1.814, rel=0.01)  # torchvision's 1.814 G multiply-adds, 2 FLOPs each
    assert 0.2 < small["gflops"] / full["gflops"] < 0.3  # a quarter of the pixels (plus padding at the edges)
    assert main(["models", "--facts", "--filter", "resnet"]) == 2  # too many to build: narrow the filter
    assert "narrow it" in capsys.readouterr().err


def test_the_backbones_own_preprocessing_as_plain_data():
    from core.training import zoo

    tv = zoo.preprocessing("efficientnet_b1")
    assert tv == {
        "input_size": (240, 240),
        "resize": 255,
        "crop": (240, 240),
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "interpolation": "bilinear",
    }
    tm = zoo.preprocessing("timm:resnet10t")
    assert tm["input_size"] == (176, 176) and tm["resize"] == 201 and tm["interpolation"] == "bicubic"
    assert zoo.preprocessing("small_cnn")["input_size"] == (128, 96)


def test_measured_speed_is_cached(tmp_path, monkeypatch):
    from core.training import zoo

    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    first = zoo.measure_speed("small_cnn", (64, 48), batch_size=2, steps=1)
    assert first["cached"] is False and first["train_images_per_s"] > 0 and first["infer_images_per_s"] > 0
    again = zoo.measure_speed("small_cnn", (64, 48), batch_size=2, steps=1)
    assert again["cached"] is True and again["train_images_per_s"] == first["train_images_per_s"]
    assert (tmp_path / "cache" / zoo.SPEED_CACHE_FILE).is_file()
