"""Transform specs: registry, validation, pipelines, stages, presets, the pair check, saved pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core import specs as T
from core.errors import SpecError

SMALL_HW = (64, 48)  # a small portrait image, like the competition's photos scaled down by 8

ISSUE_OPS = [
    "Resize", "CenterCrop", "RandomCrop", "RandomResizedCrop", "RandomHorizontalFlip", "RandomRotation",
    "RandomAffine", "RandomPerspective", "ColorJitter", "RandomGrayscale", "GaussianBlur", "GaussianNoise",
    "RandomErasing", "RandAugment", "TrivialAugmentWide", "AutoAugment", "RandomEqualize", "Normalize",
]  # fmt: skip

NORMALIZE = {"op": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
RESIZE = {"op": "Resize", "size": [128, 96]}


def small_image() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, *SMALL_HW), dtype=torch.uint8, generator=gen)


def step_for_small_image(name: str) -> dict:
    """The registry's own initial parameters, with sizes scaled to fit the small test image."""
    op = T.OPS[name]
    step = {"op": name, **{p.name: p.initial() for p in op.params}}
    if "size" in step:
        step["size"] = [40, 30] if name != "Resize" else [32, 24]
    if name == "Pad":
        step["padding"] = 3
    if name == "RandomCrop":
        step["padding"] = 2
    for key in ("p",):  # always apply, so the op really runs
        if key in step:
            step[key] = 1.0
    return step


# ---------------------------------------------------------------------------------------------- registry


def test_registry_has_every_op_of_the_issue_named_as_torchvision():
    from torchvision.transforms import v2

    for name in ISSUE_OPS:
        assert name in T.OPS, name
    for name, op in T.OPS.items():
        assert hasattr(v2, name), name
        assert op.stage in T.STAGES
        for param in op.params:
            assert param.kind in ("int", "float", "bool", "choice", "size", "pair", "triple")


@pytest.mark.parametrize("name", sorted(T.OPS))
def test_every_op_builds_runs_and_gives_the_declared_size(name):
    spec = [step_for_small_image(name)]
    torch.manual_seed(0)
    out = T.build_pipeline(spec)(small_image())
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    assert tuple(out.shape) == (3, *T.output_size(spec, SMALL_HW))


@pytest.mark.parametrize("name", sorted(T.OPS))
def test_every_op_accepts_pil_and_numpy_input_alike(name):
    from PIL import Image

    spec = [step_for_small_image(name)]
    tensor = small_image()
    array = tensor.permute(1, 2, 0).numpy()
    outs = []
    for image in (tensor, array, Image.fromarray(array)):
        torch.manual_seed(3)
        outs.append(T.build_pipeline(spec)(image))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_output_size_follows_resizes_crops_and_padding():
    spec = [
        {"op": "CenterCrop", "size": [320, 256]},
        {"op": "Pad", "padding": 8},
        RESIZE,
        {"op": "RandomCrop", "size": 64},
    ]
    assert T.output_size(spec) == (64, 64)
    assert T.output_size([{"op": "Pad", "padding": 4}], (10, 20)) == (18, 28)
    assert T.output_size([], (10, 20)) == (10, 20)


# ---------------------------------------------------------------------------------------------- validation


def test_validate_fills_defaults_and_expands_scalars():
    spec = T.validate_spec([{"op": "RandomRotation", "degrees": 15}, {"op": "CenterCrop", "size": 100}])
    assert spec[0]["degrees"] == [-15.0, 15.0] and spec[0]["interpolation"] == "nearest"
    assert spec[1]["size"] == [100, 100]
    assert T.validate_spec({"steps": [RESIZE]}) == T.validate_spec([RESIZE])
    # translate is [horizontal, vertical], not a range: any order is fine
    assert T.validate_spec([{"op": "RandomAffine", "degrees": 0, "translate": [0.2, 0.05]}])[0]["translate"] == [
        0.2,
        0.05,
    ]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"op": "Resize"}, ["list of steps"]),
        ([RESIZE, "Resize"], ["step 2", "object"]),
        ([RESIZE, {"size": [1, 2]}], ["step 2", "op"]),
        ([RESIZE, {"op": "Resise", "size": [1, 2]}], ["step 2", "unknown op", "Resise", "did you mean Resize"]),
        ([{"op": "Explode"}], ["step 1", "unknown op", "Explode"]),
        ([RESIZE, {"op": "CenterCrop", "sise": [1, 2]}], ["step 2 (CenterCrop)", "unknown parameter", "sise"]),
        ([RESIZE, {"op": "CenterCrop", "size": "big"}], ["step 2 (CenterCrop)", "size", "[height, width]"]),
        ([{"op": "CenterCrop", "size": [320.5, 256]}], ["step 1 (CenterCrop)", "size", "whole numbers"]),
        ([{"op": "CenterCrop", "size": [0, 256]}], ["step 1 (CenterCrop)", "size", "between 1 and"]),
        ([{"op": "CenterCrop"}], ["step 1 (CenterCrop)", "size", "required"]),
        ([{"op": "RandomHorizontalFlip", "p": 1.5}], ["step 1 (RandomHorizontalFlip)", "p", "between 0 and 1", "1.5"]),
        ([{"op": "RandomHorizontalFlip", "p": "half"}], ["step 1 (RandomHorizontalFlip)", "p", "a number"]),
        ([{"op": "RandomHorizontalFlip", "p": True}], ["step 1 (RandomHorizontalFlip)", "p", "a number"]),
        ([{"op": "Resize", "size": [8, 8], "antialias": 1}], ["step 1 (Resize)", "antialias", "true or false"]),
        (
            [{"op": "Resize", "size": [8, 8], "interpolation": "cubic"}],
            ["step 1 (Resize)", "interpolation", "bilinear"],
        ),
        ([{"op": "RandAugment", "num_ops": 2.5}], ["step 1 (RandAugment)", "num_ops", "whole number"]),
        ([{"op": "RandAugment", "magnitude": 40}], ["step 1 (RandAugment)", "magnitude", "below num_magnitude_bins"]),
        (
            [{"op": "RandomResizedCrop", "size": [8, 8], "scale": [0.9, 0.1]}],
            ["RandomResizedCrop", "scale", "low <= high"],
        ),
        ([{"op": "RandomResizedCrop", "size": [8, 8], "scale": [0.5, 2.0]}], ["RandomResizedCrop", "scale", "between"]),
        ([{"op": "Normalize", "mean": [0.5, 0.5], "std": [1, 1, 1]}], ["step 1 (Normalize)", "mean", "three numbers"]),
        ([{"op": "Normalize", "mean": [0.5] * 3, "std": [0, 1, 1]}], ["step 1 (Normalize)", "std", "between"]),
        ([{"op": "GaussianBlur", "kernel_size": 4}], ["step 1 (GaussianBlur)", "kernel_size", "odd"]),
        ([{"op": "GaussianNoise", "sigma": float("nan")}], ["step 1 (GaussianNoise)", "sigma"]),
        ([{"op": "RandomAffine", "degrees": 5, "translate": [0.1]}], ["step 1 (RandomAffine)", "translate"]),
        ([NORMALIZE, {"op": "ColorJitter", "brightness": 0.2}], ["step 2 (ColorJitter)", "before Normalize"]),
    ],
)
def test_invalid_specs_get_an_error_naming_step_op_and_parameter(spec, words):
    with pytest.raises(SpecError) as info:
        T.validate_spec(spec)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_build_pipeline_validates_too():
    with pytest.raises(SpecError, match="step 1"):
        T.build_pipeline([{"op": "Nope"}])


def test_a_crop_larger_than_the_image_is_a_spec_error_not_a_traceback():
    with pytest.raises(SpecError, match="cannot process this 64×48 image"):
        T.preview_samples(small_image(), [{"op": "RandomCrop", "size": [100, 100]}], 1, 0)


# ---------------------------------------------------------------------------------------------- building


def test_pipeline_output_is_float_normalised_and_matches_manual_torchvision():
    from torchvision.transforms import v2

    image = small_image()
    ours = T.build_pipeline([{"op": "Resize", "size": [32, 24]}, NORMALIZE])(image)
    manual = v2.Compose(
        [v2.Resize([32, 24]), v2.ToDtype(torch.float32, scale=True), v2.Normalize(NORMALIZE["mean"], NORMALIZE["std"])]
    )(image)
    assert torch.allclose(ours, manual)


def test_uint8_pipeline_refuses_float_only_steps():
    assert T.build_pipeline([RESIZE], dtype=torch.uint8)(small_image()).dtype == torch.uint8
    with pytest.raises(SpecError, match="Normalize"):
        T.build_pipeline([NORMALIZE], dtype=torch.uint8)


def test_same_seed_same_samples_and_global_rng_untouched():
    spec = T.PRESETS["strong"][0]
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = T.preview_samples(small_image(), spec, 3, seed=7)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG stream is not disturbed
    again = T.preview_samples(small_image(), spec, 3, seed=7)
    other = T.preview_samples(small_image(), spec, 3, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert first[0].dtype == np.uint8 and first[0].shape == (128, 96, 3)


def test_preview_samples_match_the_training_pipeline_under_the_same_seed():
    spec = T.PRESETS["light"][0]
    samples = T.preview_samples(small_image(), spec, 2, seed=5)
    torch.manual_seed(5)
    pipeline = T.build_pipeline(spec)
    direct = [T.denormalize(pipeline(small_image()), spec) for _ in range(2)]
    for a, b in zip(samples, direct, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # only the display rounding may differ


@pytest.mark.parametrize("name", sorted(T.PRESETS))
def test_deterministic_prefix_then_rest_equals_the_whole_pipeline(name):
    for spec in T.PRESETS[name]:
        prefix, rest = T.split_deterministic_prefix(spec)
        assert prefix.to_list() + rest.to_list() == T.validate_spec(spec)
        assert all(T.OPS[s["op"]].stage == "geometry" and not T.OPS[s["op"]].random for s in prefix)
        from PIL import Image

        for image in (small_image(), Image.fromarray(small_image().permute(1, 2, 0).numpy())):
            torch.manual_seed(1)
            whole = T.build_pipeline(spec)(image)
            torch.manual_seed(1)
            # the loader keeps the prefix output in a contiguous uint8 cache
            cached = T.build_pipeline(prefix, dtype=torch.uint8)(image).contiguous()
            split = T.build_pipeline(rest)(cached)
            assert cached.dtype == torch.uint8
            assert torch.equal(whole, split)


def test_prefix_stops_at_the_first_random_or_colour_step():
    spec = [
        RESIZE,
        {"op": "RandomHorizontalFlip", "p": 1.0},
        {"op": "RandomCrop", "size": 64},
        {"op": "Pad", "padding": 1},
    ]
    prefix, rest = T.split_deterministic_prefix(spec)
    assert [s["op"] for s in prefix] == ["Resize", "RandomHorizontalFlip"]
    assert [s["op"] for s in rest] == ["RandomCrop", "Pad"]
    assert len(T.split_deterministic_prefix([{"op": "Grayscale"}, RESIZE])[0]) == 0


def test_stages_chained_equal_the_pipeline_and_keep_step_order():
    spec = [RESIZE, {"op": "ColorJitter", "brightness": 0.4}, {"op": "RandomHorizontalFlip"}, NORMALIZE,
            {"op": "RandomErasing", "p": 1.0}]  # fmt: skip
    assert T.stage_of_steps(T.validate_spec(spec)) == ["geometry", "colour", "colour", "tensor", "tensor"]
    stages = T.build_stages(spec)
    assert list(stages) == ["geometry", "colour", "tensor"]
    image = small_image()
    torch.manual_seed(2)
    whole = T.build_pipeline(spec)(image)
    torch.manual_seed(2)
    staged = image
    for name in T.STAGES:
        staged = stages[name](staged)
    assert torch.equal(whole, staged)


def test_model_input_view_shows_each_stage_at_training_resolution():
    spec = T.PRESETS["light"][0]
    view = T.model_input_view(T.test_pattern(), spec, seed=0)
    assert [p.stage for p in view.stages] == ["input", "geometry", "colour", "tensor"]
    assert view.stages[0].image.shape == (512, 384, 3)
    assert all(p.image.shape == (128, 96, 3) and p.image.dtype == np.uint8 for p in view.stages[1:])
    assert view.shape == (3, 128, 96) and view.dtype == "float32"
    assert view.minimum < 0 < view.maximum  # normalised values, not pixels
    assert "Normalize" in view.stages[-1].caption


def test_denormalize_undoes_normalize():
    image = small_image()
    spec = [NORMALIZE]
    out = T.build_pipeline(spec)(image)
    back = T.denormalize(out, spec)
    assert back.shape == (*SMALL_HW, 3)
    assert np.abs(back.astype(int) - image.permute(1, 2, 0).numpy().astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------------- presets


def test_presets_exist_retarget_and_reject_unknown_names():
    assert set(T.PRESETS) >= {"baseline", "center-crop", "light", "strong"}
    assert T.PRESETS["baseline"][0][0] == {"op": "Resize", "size": [128, 96]}
    assert [s["op"] for s in T.PRESETS["center-crop"][0][:2]] == ["CenterCrop", "Resize"]
    for name in T.PRESETS:
        train, eval_ = T.preset(name, img_size=[224, 168])
        assert T.output_size(train) == T.output_size(eval_) == (224, 168)
        assert T.output_size(T.preset(name)[0]) == (128, 96)
    with pytest.raises(SpecError, match="unknown preset"):
        T.preset("huge")


def test_changing_a_preset_copy_does_not_change_the_preset():
    train, _ = T.preset("baseline")
    train[0]["size"] = [1, 1]
    assert T.preset("baseline")[0][0]["size"] == [128, 96]


# ---------------------------------------------------------------------------------------------- pair check


@pytest.mark.parametrize("name", sorted(T.PRESETS))
def test_each_preset_pair_is_clean(name):
    train, eval_ = T.PRESETS[name]
    assert T.check_pair(train, eval_) == []
    assert T.check_pair(*T.preset(name, img_size=[224, 168])) == []


def test_competition_mistake_crop_in_training_only():
    train = [{"op": "CenterCrop", "size": [320, 256]}, RESIZE, NORMALIZE]
    eval_ = [RESIZE, NORMALIZE]
    assert T.check_pair(train, eval_) == ["training crops to 320×256 before resizing; evaluation does not crop"]
    assert T.check_pair(eval_, train) == ["evaluation crops to 320×256 before resizing; training does not crop"]


def test_identical_deterministic_specs_and_train_only_random_augmentation_are_clean():
    eval_ = [RESIZE, NORMALIZE]
    train = [RESIZE, {"op": "RandomHorizontalFlip"}, {"op": "RandomGrayscale", "p": 0.2},
             {"op": "ColorJitter", "brightness": 0.3}, {"op": "RandomEqualize", "p": 0.5}, NORMALIZE,
             {"op": "GaussianNoise"}, {"op": "RandomErasing"}]  # fmt: skip
    assert T.check_pair(eval_, eval_) == []
    assert T.check_pair(train, eval_) == []


def test_different_final_size_is_reported():
    findings = T.check_pair([RESIZE], [{"op": "Resize", "size": [224, 224]}])
    assert findings == ["training feeds the model 128×96 images; evaluation feeds 224×224"]


def test_resize_in_one_spec_only_is_reported():
    findings = T.check_pair([RESIZE, NORMALIZE], [NORMALIZE])
    assert "training feeds the model 128×96 images; evaluation feeds 512×384" in findings
    assert "training resizes to 128×96; evaluation does not resize" in findings


def test_different_crop_box_is_reported():
    train = [{"op": "CenterCrop", "size": [320, 256]}, RESIZE]
    eval_ = [{"op": "CenterCrop", "size": [384, 288]}, RESIZE]
    assert T.check_pair(train, eval_) == [
        "training sees the central 320×256 region of the 512×384 input; evaluation sees the central 384×288 region"
    ]
    # the same crop expressed after a resize is the same view: nothing to report
    scaled = [{"op": "Resize", "size": [256, 192]}, {"op": "CenterCrop", "size": [160, 128]}, RESIZE]
    assert T.check_pair(train, scaled) == []


def test_random_crop_in_training_matches_a_centre_crop_at_evaluation():
    train = [{"op": "Resize", "size": [136, 102]}, {"op": "RandomCrop", "size": [128, 96]}]
    eval_ = [{"op": "Resize", "size": [136, 102]}, {"op": "CenterCrop", "size": [128, 96]}]
    assert T.check_pair(train, eval_) == []
    findings = T.check_pair(train, [RESIZE])
    assert findings == ["training takes a random 128×96 crop; evaluation does not crop"]


def test_random_resized_crop_is_compared_with_its_scale_range():
    imagenet_eval = [{"op": "Resize", "size": [256, 256]}, {"op": "CenterCrop", "size": [224, 224]}]
    assert T.check_pair([{"op": "RandomResizedCrop", "size": [224, 224]}], imagenet_eval) == []
    small_crops = [{"op": "RandomResizedCrop", "size": [128, 96], "scale": [0.2, 0.5], "ratio": [0.7, 0.8]}]
    findings = T.check_pair(small_crops, [RESIZE])
    assert len(findings) == 1 and "20%–50%" in findings[0] and "the whole picture" in findings[0]
    squares = [{"op": "RandomResizedCrop", "size": [128, 96], "scale": [0.5, 1.0], "ratio": [0.95, 1.05]}]
    assert any("width/height" in f for f in T.check_pair(squares, [RESIZE]))


def test_normalize_differences_are_reported():
    other = {"op": "Normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert T.check_pair([RESIZE, NORMALIZE], [RESIZE, other]) == [
        "training normalises with mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225]; "
        "evaluation with mean [0.5, 0.5, 0.5] and std [0.5, 0.5, 0.5]"
    ]
    assert T.check_pair([RESIZE, NORMALIZE], [RESIZE]) == [
        "training normalises with mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225]; evaluation does not normalise"
    ]
    assert T.check_pair([RESIZE], [RESIZE, other])[0].startswith("evaluation normalises with")


@pytest.mark.parametrize(
    ("step", "words"),
    [
        ({"op": "Grayscale"}, "training always turns the image grey (Grayscale); evaluation does not"),
        ({"op": "RandomGrayscale", "p": 1.0}, "training always turns the image grey (RandomGrayscale)"),
        ({"op": "RandomEqualize", "p": 1.0}, "training always equalizes the histogram (RandomEqualize)"),
        (
            {"op": "RandomHorizontalFlip", "p": 1.0},
            "training always mirrors the image left-right (RandomHorizontalFlip)",
        ),
    ],
)
def test_a_change_applied_always_in_training_only_is_reported(step, words):
    assert T.check_pair([step, RESIZE], [RESIZE]) == [
        words + ("" if words.endswith("does not") else "; evaluation does not")
    ]


def test_an_always_on_change_present_on_both_sides_is_fine():
    assert T.check_pair([{"op": "RandomGrayscale", "p": 1.0}, RESIZE], [{"op": "Grayscale"}, RESIZE]) == []


def test_random_steps_at_evaluation_are_reported():
    findings = T.check_pair([RESIZE], [RESIZE, {"op": "RandomHorizontalFlip"}])
    assert findings == [
        "evaluation step 2 (RandomHorizontalFlip) is random, so predictions change from run to run; "
        "keep evaluation deterministic"
    ]


def test_every_kind_of_difference_is_reported_at_once():
    train = [{"op": "CenterCrop", "size": [320, 256]}, RESIZE, {"op": "Grayscale"}, NORMALIZE]
    eval_ = [{"op": "Resize", "size": [224, 224]}]
    findings = T.check_pair(train, eval_)
    assert len(findings) == 4, findings  # size, crop, normalize, grey


# ---------------------------------------------------------------------------------------------- json, saved pairs


def test_spec_json_round_trip_and_parse_errors():
    spec = T.PRESETS["strong"][0]
    assert T.parse_spec_json(T.spec_to_json(spec)) == T.validate_spec(spec)
    with pytest.raises(SpecError, match="a.json: not valid JSON"):
        T.parse_spec_json("[{", "a.json")
    with pytest.raises(SpecError, match="a.json: step 1"):
        T.parse_spec_json('[{"op": "Nope"}]', "a.json")
    with pytest.raises(SpecError, match="not a text file"):
        T.parse_spec_json(b"\xff\xfe\x00", "a.json")


def test_parse_spec_document_reads_a_spec_or_a_pair():
    train, eval_ = T.PRESETS["light"]
    assert T.parse_spec_document(json.dumps(train)) == (T.validate_spec(train), None)
    pair = T.pair_to_json(train, eval_, name="x")
    assert T.parse_spec_document(pair) == (T.validate_spec(train), T.validate_spec(eval_))
    with pytest.raises(SpecError, match=r"p.json \(eval\): step 1"):
        T.parse_spec_document(json.dumps({"train": train, "eval": [{"op": "Nope"}]}), "p.json")


def test_named_pairs_save_list_load(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SPECS_DIR", str(tmp_path / "specs"))
    assert T.list_named_pairs() == []
    train, eval_ = T.PRESETS["center-crop"]
    path = T.save_named_pair("crop-v1", train, eval_)
    assert path == tmp_path / "specs" / "crop-v1.json"
    with pytest.raises(SpecError, match="already exists"):
        T.save_named_pair("crop-v1", train, eval_)  # never silently replaced
    T.save_named_pair("crop-v1", train, eval_, overwrite=True)
    T.save_named_pair("b.2", *T.PRESETS["baseline"])
    assert T.list_named_pairs() == ["b.2", "crop-v1"]
    assert T.load_named_pair("crop-v1") == (T.validate_spec(train), T.validate_spec(eval_))
    assert T.resolve_pair("crop-v1") == T.load_named_pair("crop-v1")
    assert T.resolve_pair("baseline", [64, 48])[0][0]["size"] == [64, 48]
    assert not list((tmp_path / "specs").glob(".*tmp"))  # atomic write left no temp file


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "x.json", "a" * 65, "sp ace", "é"])
def test_named_pairs_refuse_unsafe_names(tmp_path, name):
    with pytest.raises(SpecError, match="not a usable name"):
        T.save_named_pair(name, [RESIZE], [RESIZE], folder=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_loading_a_missing_or_broken_pair_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="no saved spec pair named 'ghost'"):
        T.load_named_pair("ghost", folder=tmp_path)
    (tmp_path / "broken.json").write_text('{"train": [{"op": "Resize"}], "eval": []}')
    with pytest.raises(SpecError, match=r"broken.json \(train\): step 1 \(Resize\): size is required"):
        T.load_named_pair("broken", folder=tmp_path)
    (tmp_path / "half.json").write_text('{"train": []}')
    with pytest.raises(SpecError, match="needs both"):
        T.load_named_pair("half", folder=tmp_path)
