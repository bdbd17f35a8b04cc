"""The backbone registry: heads replaced, pretrained weights only from the local cache, checked loading."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from core.errors import CheckpointError, ConfigError
from core.training import models

LIGHT = ["small_cnn", "resnet18", "mobilenet_v3_small", "efficientnet_b0"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tests share two cores with other work: one thread avoids OpenMP spinning against it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, and any download attempt turned into a test failure."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("build_model tried to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(before)


def test_registry_lists_the_required_backbones():
    required = {"small_cnn", "resnet18", "resnet34", "resnet50", "vgg11", "vgg11_bn", "efficientnet_b0",
                "mobilenet_v3_small", "mobilenet_v3_large", "convnext_tiny"}  # fmt: skip
    assert required <= set(models.MODEL_NAMES)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_every_backbone_gets_a_head_for_the_class_count(name):
    model = models.build_model(name, 7)
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert last_linear.out_features == 7
    assert model.state_dict()[models.head_weight_key(model)].shape[0] == 7


@pytest.mark.parametrize("name", LIGHT)
def test_light_backbones_run_at_the_baseline_aspect(name):
    model = models.build_model(name, 3).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 48))
    assert out.shape == (2, 3)


def test_unknown_backbone_and_too_few_classes_are_refused():
    with pytest.raises(ConfigError, match="model: unknown backbone 'resnet9000'"):
        models.build_model("resnet9000", 3)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        models.build_model("small_cnn", 1)
    with pytest.raises(ConfigError, match="pretrained"):
        models.build_model("small_cnn", 3, pretrained=True)


def test_missing_pretrained_weights_fail_at_once_naming_file_and_folder(empty_hub):
    with pytest.raises(CheckpointError) as err:
        models.build_model("resnet18", 3, pretrained=True)
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(empty_hub) in message
    assert "never downloaded" in message


def test_pretrained_weights_load_from_the_local_cache(empty_hub):
    source = models.build_model("resnet18", 1000)  # the 1000-class ImageNet layout of the weights file
    torch.nn.init.constant_(source.conv1.weight, 0.125)
    empty_hub.mkdir(parents=True)
    torch.save(source.state_dict(), empty_hub / "resnet18-f37072fd.pth")
    model = models.build_model("resnet18", 5, pretrained=True)
    assert torch.all(model.conv1.weight == 0.125)
    assert model.fc.out_features == 5


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_weights_file_carrying_code_is_refused(empty_hub):
    empty_hub.mkdir(parents=True)
    with open(empty_hub / "resnet18-f37072fd.pth", "wb") as fh:
        pickle.dump({"conv1.weight": _Evil()}, fh, protocol=2)
    with pytest.raises(CheckpointError, match="cannot read pretrained weights"):
        models.build_model("resnet18", 3, pretrained=True)


def test_checked_loading_names_the_mismatch():
    small = models.build_model("small_cnn", 3)
    models.load_state_dict_checked(models.build_model("small_cnn", 3), small.state_dict(), "small_cnn", 3)
    with pytest.raises(CheckpointError, match="wrong class count: it predicts 18 classes, the task has 3"):
        models.load_state_dict_checked(small, models.build_model("small_cnn", 18).state_dict(), "small_cnn", 3)
    with pytest.raises(CheckpointError, match="wrong architecture"):
        models.load_state_dict_checked(small, models.build_model("resnet18", 3).state_dict(), "small_cnn", 3)
    with pytest.raises(CheckpointError, match="not a state_dict"):
        models.load_state_dict_checked(small, [1, 2], "small_cnn", 3)


def test_channels_last_preference():
    assert not models.prefers_channels_last("small_cnn")
    assert models.prefers_channels_last("resnet18")


def test_fusing_folds_batchnorm_and_keeps_the_outputs():
    torch.manual_seed(0)
    net = models.build_model("small_cnn", 5).eval()
    for m in net.modules():  # running statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    fused = models.fuse_for_inference(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(3, 3, 64, 48)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-4, atol=1e-5)


def test_a_model_fx_cannot_trace_is_used_unfused():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # control flow on values: torch.fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    net = DataDependent().train()
    assert models.fuse_for_inference(net) is net and not net.training


def test_freed_memory_is_kept_on_linux():
    import sys

    from core import settings

    assert settings.keep_freed_memory() is sys.platform.startswith("linux")
