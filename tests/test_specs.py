"""The validated spec type: checked once at the boundary, immutable, kept by TrainConfig, split in one place."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from core import runs
from core.errors import CheckpointError, ConfigError, SpecError
from core.evaluation import infer
from core.specs import spec as spec_module
from core.specs.geometry import output_size
from core.specs.paircheck import check_pair
from core.specs.pipeline import PrefixThenRest, build_pipeline, build_stages, split_deterministic_prefix
from core.specs.presets import preset, preset_pair
from core.specs.preview import denormalize, model_input_view, preview_samples
from core.specs.saved import load_spec_pair, pair_to_json, save_named_pair, spec_to_json
from core.specs.spec import Step, TransformSpec, as_spec, validate_spec
from core.training.config import TrainConfig
from core.training.loader import CachedSource, DecodeSource, make_source
from tests.conftest import REPO_ROOT

NORMALIZE = {"op": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CROP_SPEC = [{"op": "CenterCrop", "size": [40, 30]}, {"op": "Resize", "size": [16, 12]}, NORMALIZE]
FLIP_SPEC = [{"op": "Resize", "size": [16, 12]}, {"op": "RandomHorizontalFlip"}, NORMALIZE]


@pytest.fixture
def step_checks(monkeypatch) -> list[int]:
    """Counts the calls of the one step validator (every validation of a raw spec goes through it)."""
    calls: list[int] = []
    real = spec_module.validate_step

    def counting(step, index=0):
        calls.append(index)
        return real(step, index)

    monkeypatch.setattr(spec_module, "validate_step", counting)
    return calls


def write_images(folder, n: int = 4, size=(48, 36), fmt: str = "PNG") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.{fmt.lower()}"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path, fmt)
        paths.append(str(path))
    return paths


# ---- validated once --------------------------------------------------------------------------------


def test_parsing_checks_each_step_once_and_nothing_after_checks_again(step_checks, tmp_path):
    spec = TransformSpec.parse(FLIP_SPEC)
    assert step_checks == [0, 1, 2]
    step_checks.clear()

    image = torch.randint(0, 256, (3, 48, 36), dtype=torch.uint8)
    build_pipeline(spec)(image)
    build_stages(spec)
    split_deterministic_prefix(spec)
    assert output_size(spec, (48, 36)) == (16, 12)
    assert check_pair(spec, spec) == [
        "evaluation step 2 (RandomHorizontalFlip) is random, so predictions change from run to run; "
        "keep evaluation deterministic"
    ]
    preview_samples(image, spec, 2, seed=0)
    model_input_view(image, spec, seed=0)
    denormalize(build_pipeline(spec)(image), spec)
    spec_to_json(spec)
    save_named_pair("p", spec, spec, folder=tmp_path)
    paths = write_images(tmp_path / "imgs")
    for cache in ("memmap", "none"):
        source = make_source(paths, [(48, 36)] * 4, spec, cache, tmp_path / "cache", log=lambda m: None)
        list(source.batches(np.arange(4), np.arange(4), 2))
    infer.input_loader(spec)(paths[0])
    assert step_checks == []  # a TransformSpec is trusted everywhere


def test_train_config_validates_its_specs_once_and_keeps_them(step_checks):
    train, eval_ = preset("baseline", (32, 24))
    step_checks.clear()
    cfg = TrainConfig(img_size=[32, 24], train_spec=train, eval_spec=eval_)
    assert len(step_checks) == len(train) + len(eval_)  # parsed once each, then only read
    assert isinstance(cfg.train_spec, TransformSpec) and isinstance(cfg.eval_spec, TransformSpec)
    assert cfg.train_spec == TransformSpec.parse(train)
    step_checks.clear()
    again = TrainConfig(img_size=[32, 24], train_spec=cfg.train_spec, eval_spec=cfg.eval_spec)
    changed = cfg.replace(epochs=7)
    assert step_checks == [] and again == cfg and changed.epochs == 7 and changed.train_spec is cfg.train_spec


def test_train_config_names_the_field_of_a_bad_spec():
    with pytest.raises(ConfigError, match=r"^eval_spec: step 1: unknown op 'Resise'; did you mean Resize\?"):
        TrainConfig(eval_spec=[{"op": "Resise", "size": [128, 96]}])
    with pytest.raises(ConfigError, match="^train_spec: expected list, got str"):
        TrainConfig.from_dict({"train_spec": "Resize"})


def test_train_config_writes_plain_lists_in_the_same_config_json(tmp_path):
    train, eval_ = preset_pair("baseline", (32, 24))
    cfg = TrainConfig(img_size=[32, 24], train_spec=train, eval_spec=eval_)
    run = runs.create_run_folder(tmp_path, "r")
    runs.write_config(run, {**cfg.to_dict(), "kind": "train"})
    written = json.loads((run.root / "config.json").read_text())
    resize = {"op": "Resize", "size": [32, 24], "interpolation": "bilinear", "antialias": True}
    assert written["train_spec"] == written["eval_spec"] == [resize, NORMALIZE]
    assert set(written) == {f.name for f in dataclasses.fields(TrainConfig)} | {"kind"}
    assert TrainConfig.from_dict(written) == cfg
    assert cfg.to_dict()["train_spec"] is not cfg.to_dict()["train_spec"]  # fresh copies: editing one is safe


# ---- the type ---------------------------------------------------------------------------------------


def test_a_spec_is_immutable_and_hands_out_copies():
    spec = TransformSpec.parse(CROP_SPEC)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.steps = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec[0]["size"] = [1, 1]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec[0].op = "Resize"  # type: ignore[misc]
    assert spec[0]["size"] == (40, 30)  # nested values are tuples: nothing inside can change either
    plain = spec.to_list()
    plain[0]["size"][0] = 1
    assert spec.to_list()[0]["size"] == [40, 30]
    with pytest.raises(TypeError, match="TransformSpec.parse"):
        TransformSpec(({"op": "Resize", "size": [1, 1]},))  # type: ignore[arg-type]


def test_a_spec_round_trips_and_is_equal_and_hashed_by_content():
    spec = TransformSpec.parse(CROP_SPEC)
    assert TransformSpec.parse(spec.to_list()) == spec
    assert TransformSpec.parse(json.loads(json.dumps(spec.to_list()))) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert hash(TransformSpec.parse(CROP_SPEC)) == hash(spec) and len({spec, TransformSpec.parse(CROP_SPEC)}) == 1
    assert spec != TransformSpec.parse(CROP_SPEC[1:])
    assert spec.to_list() == validate_spec(CROP_SPEC)
    assert as_spec(spec) is spec and TransformSpec.parse(spec) is spec
    assert spec[1:] == TransformSpec.parse(CROP_SPEC[1:]) and spec.ops() == ["CenterCrop", "Resize", "Normalize"]
    # a step reads like its JSON and equals the plain dict with the same content
    assert isinstance(spec[1], Step) and spec[1] == {
        "op": "Resize",
        "size": [16, 12],
        "interpolation": "bilinear",
        "antialias": True,
    }
    assert spec[1] != {"op": "Resize", "size": [16, 13], "interpolation": "bilinear", "antialias": True}
    # validated steps can go back into a raw spec
    grown = TransformSpec.parse([*spec[:2], {"op": "RandomHorizontalFlip"}, spec[2]])
    assert grown.ops() == ["CenterCrop", "Resize", "RandomHorizontalFlip", "Normalize"] and grown.random


def test_parse_errors_name_the_source_step_op_parameter_and_nearest_op():
    with pytest.raises(SpecError, match=r"^a.json: step 2: unknown op 'Resise'; did you mean Resize\?"):
        TransformSpec.parse([NORMALIZE, {"op": "Resise"}], source="a.json")
    with pytest.raises(SpecError, match=r"^step 1 \(CenterCrop\): size must be \[height, width\]"):
        TransformSpec.parse([{"op": "CenterCrop", "size": "big"}])


def test_presets_come_as_specs_or_as_editable_lists():
    train, eval_ = preset_pair("light", (32, 24))
    assert isinstance(train, TransformSpec) and output_size(train) == output_size(eval_) == (32, 24)
    assert (train.to_list(), eval_.to_list()) == preset("light", (32, 24))
    with pytest.raises(SpecError, match="preset light: img_size"):
        preset_pair("light", (0, 24))


def test_spec_pairs_load_from_two_files_or_one_pair_file(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps(CROP_SPEC))
    (tmp_path / "e.json").write_text(json.dumps(CROP_SPEC[1:]))
    train, eval_ = load_spec_pair(tmp_path / "t.json", tmp_path / "e.json")
    assert (train, eval_) == (TransformSpec.parse(CROP_SPEC), TransformSpec.parse(CROP_SPEC[1:]))
    (tmp_path / "p.json").write_text(pair_to_json(train, eval_))
    assert load_spec_pair(tmp_path / "p.json") == (train, eval_)
    with pytest.raises(SpecError, match="t.json: holds one spec"):
        load_spec_pair(tmp_path / "t.json")


def test_specs_registry_and_pair_check_need_no_torch():
    code = (
        "import sys\n"
        "from core.specs.spec import TransformSpec\n"
        "from core.specs.paircheck import check_pair\n"
        "from core.specs.presets import preset_pair\n"
        "train, eval_ = preset_pair('center-crop')\n"
        "assert check_pair(train, eval_[1:]) and TransformSpec.parse([{'op': 'AutoAugment'}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_registry_spells_autoaugment_policies_as_torchvision_does():
    from torchvision.transforms import AutoAugmentPolicy

    from core.specs.ops import AUTO_AUGMENT_POLICIES

    assert AUTO_AUGMENT_POLICIES == tuple(p.value for p in AutoAugmentPolicy)


# ---- the one prefix/remainder split -------------------------------------------------------------------


def test_loader_and_inference_share_one_split_and_give_the_same_tensors(tmp_path):
    paths = write_images(tmp_path / "imgs")
    spec = TransformSpec.parse(CROP_SPEC)
    cached = make_source(paths, [(48, 36)] * 4, spec, "memmap", tmp_path / "cache", log=lambda m: None)
    decoded = make_source(paths, [(48, 36)] * 4, spec, "none", tmp_path / "cache", log=lambda m: None)
    predicting = infer.input_loader(spec)
    assert isinstance(cached, CachedSource) and isinstance(decoded, DecodeSource)
    assert all(isinstance(s, PrefixThenRest) for s in (cached.steps, decoded.steps, predicting.steps))
    assert cached.steps.prefix_spec.ops() == ["CenterCrop", "Resize"] and cached.steps.rest_spec.ops() == ["Normalize"]

    order = np.arange(4)
    a = torch.cat([b.images for b in cached.batches(order, order, 4)])
    b = torch.cat([b.images for b in decoded.batches(order, order, 4)])
    c = torch.stack([predicting(p) for p in paths])
    assert torch.equal(a, b) and torch.equal(a, c)
    # ... and the numbers are the whole pipeline's, run image by image (fused Normalize: to float rounding)
    whole = torch.stack([build_pipeline(spec)(Image.open(p).convert("RGB")) for p in paths])
    torch.testing.assert_close(a, whole, rtol=0, atol=1e-5)


def test_the_split_builds_prefix_and_rest_that_chain_to_the_whole_pipeline():
    image = torch.randint(0, 256, (3, 48, 36), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for raw in (CROP_SPEC, FLIP_SPEC, [{"op": "Grayscale"}, NORMALIZE], []):
        steps = PrefixThenRest(raw)
        assert steps.prefix_spec.to_list() + steps.rest_spec.to_list() == validate_spec(raw)
        torch.manual_seed(3)
        whole = build_pipeline(raw)(image)
        torch.manual_seed(3)
        split = steps.rest(steps.apply_prefix(image).contiguous())
        assert torch.equal(whole, split)
    flip = PrefixThenRest(FLIP_SPEC)
    assert flip.rest_is_random and flip.random_head is not None and flip.draft_size == (16, 12)
    batch = torch.stack([flip.apply_prefix(image)] * 2)
    torch.testing.assert_close(flip.finish(batch, [4, 4]), flip.finish(batch, [4, 4]), rtol=0, atol=0)


def test_a_run_with_an_invalid_eval_spec_in_its_checkpoint_is_refused_by_name(tmp_path):
    from core.training import models

    classes = [f"c{k}" for k in range(18)]
    net = models.build_model("small_cnn", len(classes), pretrained=False)
    run = runs.create_run_folder(tmp_path, run_id="bad")
    runs.write_config(run, {"kind": "imported", "model": "small_cnn", "task": "class", "classes": classes})
    runs.save_checkpoint(
        run.best_checkpoint,
        {
            "model": net.state_dict(),
            "model_name": "small_cnn",
            "task": "class",
            "classes": classes,
            "eval_spec": [{"op": "Resise"}],
        },
    )
    with pytest.raises(CheckpointError, match=r"best.pt: eval_spec: step 1: unknown op 'Resise'"):
        infer.load_run(run.root, device="cpu")


def test_the_transforms_facade_re_exports_the_package_api():
    import core.specs
    from core.specs import transforms

    for name in dir(core.specs):
        assert getattr(transforms, name) is getattr(core.specs, name), name
    assert set(dir(core.specs)) <= set(transforms.__all__)


def test_the_backbone_default_preset_round_trips_as_a_spec():
    from core.specs import presets
    from core.training import zoo

    for name, size in (("resnet18", (224, 224)), ("timm:resnet10t", (176, 176)), ("small_cnn", (128, 96))):
        train, eval_ = zoo.backbone_default_pair(name)
        assert output_size(eval_) == size and output_size(train) == size
        assert check_pair(train, eval_) == []  # a consistent pair: same size and normalisation
        again = spec_module.TransformSpec.parse(json.loads(json.dumps(eval_.to_list())))
        assert again == eval_
    prep = {"input_size": (224, 224), "resize": 256, "crop": (224, 224), "mean": [0.5] * 3, "std": [0.5] * 3,
            "interpolation": "bicubic"}  # fmt: skip
    _, eval_ = presets.backbone_pair(prep)
    assert eval_.to_list()[0] == {"op": "Resize", "size": [256, 256], "interpolation": "bicubic", "antialias": True}
