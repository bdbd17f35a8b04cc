"""The backbone registry: names across torchvision and timm, fixed sizes, heads replaced, cached weights, checked loading."""

from __future__ import annotations

import pickle

import huggingface_hub  # noqa: F401 - before any test turns offline mode on: it reads HF_HUB_OFFLINE once
import pytest
import torch
from torch import nn

from core.errors import CheckpointError, ConfigError
from core.training import models, weights

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
    """An empty torch hub cache, and WORKBENCH_OFFLINE=1: these tests never reach for the network."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # restored after is_offline() sets it
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
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
    with pytest.raises(ConfigError, match="model: unknown backbone 'resnet9000'; did you mean resnet"):
        models.build_model("resnet9000", 3)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        models.build_model("small_cnn", 1)
    with pytest.raises(ConfigError, match="pretrained"):
        models.build_model("small_cnn", 3, pretrained=True)


def test_missing_pretrained_weights_offline_fail_at_once_naming_file_and_folder(empty_hub):
    with pytest.raises(CheckpointError) as err:
        models.build_model("resnet18", 3, pretrained=True)
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(empty_hub) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "WORKBENCH_OFFLINE=1" in message


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


def test_the_whole_zoo_is_accepted_by_name_and_typos_get_suggestions():
    for name in (
        "regnet_y_400mf",
        "efficientnet_v2_s",
        "vit_b_16",
        "swin_t",
        "timm:resnet10t",
        "timm:efficientnet_b3.ra2_in1k",
        "timm:convnext_tiny.fb_in22k",
        *models.MODEL_NAMES,
    ):
        assert models.check_model_name(name) == name
    assert set(models.torchvision_model_names()) >= {"resnet18", "maxvit_t", "squeezenet1_0"}
    with pytest.raises(ConfigError, match="did you mean timm:resnet10t"):
        models.check_model_name("timm:resnet10tt")
    with pytest.raises(ConfigError, match="unknown backbone 'timm:resnet10t.no_such_tag'"):
        models.check_model_name("timm:resnet10t.no_such_tag")
    for not_a_classifier in ("fasterrcnn_resnet50_fpn", "timm:", "small_cnn ", 7):
        with pytest.raises(ConfigError, match="model:"):
            models.check_model_name(not_a_classifier)
    assert [models.model_source(n) for n in ("small_cnn", "resnet18", "timm:resnet10t")] == [
        "builtin",
        "torchvision",
        "timm",
    ]


def test_fixed_size_backbones_are_known_before_launch():
    assert models.fixed_input_size("vit_b_16") == (224, 224)
    assert models.fixed_input_size("vit_h_14", pretrained=True) == (518, 518)  # its default weights are SWAG at 518
    assert models.fixed_input_size("maxvit_t") == (224, 224)
    assert models.fixed_input_size("timm:test_vit") == (160, 160)
    for free in ("resnet18", "swin_t", "small_cnn", "timm:resnet10t"):
        assert models.fixed_input_size(free) is None
    models.check_model_config("vit_b_16", False, [224, 224])
    with pytest.raises(
        ConfigError, match=r"img_size: vit_b_16 takes 224x224 images only, got 128x96; set img_size to \[224, 224\]"
    ):
        models.check_model_config("vit_b_16", False, [128, 96])
    models.check_model_config("resnet18", True, [128, 96])
    with pytest.raises(ConfigError, match="pretrained: small_cnn has no pretrained weights"):
        models.check_model_config("small_cnn", True)


def test_timm_heads_are_found_and_checked_like_torchvision_ones():
    net = models.build_model("timm:test_vit", 4)
    assert models.head_weight_key(net) == "head.weight"
    models.load_state_dict_checked(models.build_model("timm:test_vit", 4), net.state_dict(), "timm:test_vit", 4)
    with pytest.raises(CheckpointError, match="it predicts 6 classes, the task has 4"):
        models.load_state_dict_checked(net, models.build_model("timm:test_vit", 6).state_dict(), "timm:test_vit", 4)


def test_inception_and_googlenet_train_without_auxiliary_outputs():
    for name in ("googlenet", "inception_v3"):
        net = models.build_model(name, 3).train()
        out = net(torch.rand(2, 3, 96, 96))
        assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
