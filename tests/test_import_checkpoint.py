"""Importing weights trained elsewhere: accepted forms, refused mismatches, and pickles that would run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from core import runs
from core.errors import CheckpointError, ConfigError
from core.evaluation import checkpoints, infer
from tests.test_infer import make_eval


def state_dict(model: str = "small_cnn", classes: int = 18) -> dict[str, torch.Tensor]:
    from core.training import models

    torch.manual_seed(0)
    return models.build_model(model, classes, pretrained=False).state_dict()


@pytest.fixture
def settings_env(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("form", ["raw", "model", "state_dict", "module-prefix", "safetensors"])
def test_accepted_forms_become_a_predictable_run(settings_env, tmp_path, form):
    weights = state_dict()
    file = tmp_path / ("w.safetensors" if form == "safetensors" else "w.pt")
    if form == "safetensors":
        from safetensors.torch import save_file

        save_file(weights, str(file))
    else:
        payload = {
            "raw": weights,
            "model": {"model": weights, "epoch": 3},
            "state_dict": {"state_dict": weights, "optimizer": {}},
            "module-prefix": {f"module.{k}": v for k, v in weights.items()},
        }[form]
        torch.save(payload, file)

    run_dir = tmp_path / "models" / "imported"
    folder = checkpoints.import_checkpoint(file, "small_cnn", "class", run_dir, img_size=(32, 24))
    config = runs.read_config(folder)
    assert config["kind"] == "imported" and config["model"] == "small_cnn" and config["task"] == "class"
    assert len(config["classes"]) == 18 and config["img_size"] == [32, 24] and config["source"] == file.name
    assert runs.read_status(folder)["state"] == "completed"
    loaded = infer.load_run(folder.root, device="cpu")
    assert all(torch.equal(loaded.model.state_dict()[k].cpu(), v) for k, v in weights.items())
    data = make_eval(tmp_path / "eval", n=2)
    assert len(infer.predict([loaded], data).frame) == 2


def test_wrong_architecture_refused_and_no_run_left(settings_env, tmp_path):
    file = tmp_path / "resnet.pt"
    torch.save(state_dict("small_cnn"), file)
    run_dir = tmp_path / "models" / "x"
    with pytest.raises(CheckpointError, match="(?i)architecture"):
        checkpoints.import_checkpoint(file, "mobilenet_v3_small", "class", run_dir)
    assert not run_dir.exists()


def test_wrong_class_count_refused_and_no_run_left(settings_env, tmp_path):
    file = tmp_path / "mask.pth"
    torch.save(state_dict(classes=3), file)
    run_dir = tmp_path / "models" / "x"
    with pytest.raises(CheckpointError, match="(?i)class"):
        checkpoints.import_checkpoint(file, "small_cnn", "class", run_dir)
    assert not run_dir.exists()
    # the same weights are right for the 3-class mask task
    checkpoints.import_checkpoint(file, "small_cnn", "mask", run_dir)
    assert runs.read_config(runs.RunFolder(run_dir))["classes"] == ["Wear", "Incorrect", "Not wear"]


class _Exploit:
    """Unpickling this would create the marker file: the classic pickle payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_malicious_pickle_refused_without_running(settings_env, tmp_path, suffix):
    marker = tmp_path / "pwned"
    file = tmp_path / f"evil{suffix}"
    torch.save({"model": state_dict(), "extra": _Exploit(marker)}, file)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoints.import_checkpoint(file, "small_cnn", "class", tmp_path / "models" / "evil")
    assert not marker.exists()
    assert not (tmp_path / "models" / "evil").exists()

    raw = tmp_path / "evil.raw.pt"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))  # a bare pickle, not even a torch zip
    with pytest.raises(CheckpointError):
        checkpoints.import_checkpoint(raw, "small_cnn", "class", tmp_path / "models" / "evil")
    assert not marker.exists()

    # the file is armed: an unsafe load does run the payload, so the refusal above is what protected us
    torch.load(file, weights_only=False)  # noqa: S614 - deliberately unsafe, on our own test file
    assert marker.exists()


def test_malicious_checkpoint_in_a_run_is_refused_at_predict(settings_env, tmp_path):
    from tests.test_infer import make_run

    marker = tmp_path / "pwned"
    run = runs.RunFolder(make_run(tmp_path / "models", "r1"))
    ckpt = runs.load_checkpoint(run.best_checkpoint)
    torch.save({**ckpt, "extra": _Exploit(marker)}, run.best_checkpoint)
    with pytest.raises(CheckpointError, match="refused"):
        infer.load_run(run.root)
    assert not marker.exists()


def test_bad_inputs_named(settings_env, tmp_path):
    file = tmp_path / "w.pt"
    torch.save(state_dict(), file)
    with pytest.raises(ConfigError, match="unknown backbone .alexnet9000.; did you mean alexnet"):
        checkpoints.import_checkpoint(file, "alexnet9000", "class", tmp_path / "models" / "a")
    with pytest.raises(ConfigError, match="unknown task"):
        checkpoints.import_checkpoint(file, "small_cnn", "colour", tmp_path / "models" / "a")
    with pytest.raises(CheckpointError, match="unsupported file type"):
        checkpoints.import_checkpoint(tmp_path / "w.ckpt", "small_cnn", "class", tmp_path / "models" / "a")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="safetensors"):
        checkpoints.import_checkpoint(junk, "small_cnn", "class", tmp_path / "models" / "a")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pt")
    with pytest.raises(CheckpointError, match="no state_dict"):
        checkpoints.import_checkpoint(tmp_path / "nostate.pt", "small_cnn", "class", tmp_path / "models" / "a")
    checkpoints.import_checkpoint(file, "small_cnn", "class", tmp_path / "models" / "a")
    with pytest.raises(Exception, match="already exists"):
        checkpoints.import_checkpoint(file, "small_cnn", "class", tmp_path / "models" / "a")
    assert not any(p.name != "a" for p in (tmp_path / "models").iterdir())


def test_cli_import(settings_env, tmp_path):
    from core.__main__ import main

    file = tmp_path / "w.pt"
    torch.save(state_dict(classes=2), file)
    assert (
        main(
            [
                "import-checkpoint",
                str(file),
                "--model",
                "small_cnn",
                "--task",
                "gender",
                "--run",
                str(tmp_path / "models" / "g"),
            ]
        )
        == 0
    )
    assert runs.read_config(runs.RunFolder(tmp_path / "models" / "g"))["task"] == "gender"
    assert (
        main(
            [
                "import-checkpoint",
                str(file),
                "--model",
                "small_cnn",
                "--task",
                "class",
                "--run",
                str(tmp_path / "models" / "c"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "models" / "c").exists()
