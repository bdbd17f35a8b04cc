"""The Augmentations page through Streamlit's AppTest: samples, editing, import, pair check, saving."""

from __future__ import annotations

import io
import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT, browse_to

CROP_TRAIN = [
    {"op": "CenterCrop", "size": [320, 256]},
    {"op": "Resize", "size": [128, 96]},
    {"op": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
]


@pytest.fixture
def env(monkeypatch, tmp_path, demo_root):
    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(demo_root.parent))
    monkeypatch.setenv("WORKBENCH_SPECS_DIR", str(tmp_path / "specs"))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path


def open_page() -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app" / "main.py"), default_timeout=180)
    at.run()
    at.switch_page("app_pages/augment.py")
    at.run()
    assert not at.exception, at.exception
    return at


def widget(items, prefix: str, suffix: str = ""):
    found = [w for w in items if w.key and w.key.startswith(prefix) and w.key.endswith(suffix)]
    assert found, f"no widget {prefix}…{suffix}"
    return found[0]


def sample_urls(at: AppTest, pipe: str) -> list[str]:
    return [img.value[0] for img in at.image if img.captions and img.captions[0].startswith(f"{pipe} · ")]


def shown(value: str) -> str:
    """The text a markdown element displays (the page escapes markdown characters in it)."""
    return re.sub(r"\\(.)", r"\1", value)


def warnings(at: AppTest) -> list[str]:
    return [shown(w.value) for w in at.warning]


def errors(at: AppTest) -> list[str]:
    return [shown(e.value) for e in at.error]


def spec_of(at: AppTest, pipe: str, which: str = "train") -> list[dict]:
    return [e["step"] for e in at.session_state[f"augment_pipe_{pipe}"][which]]


def test_page_shows_dataset_samples_for_both_pipelines_and_a_clean_check(env):
    at = open_page()
    assert at.radio(key="augment_source").value == "Dataset"
    n = at.slider(key="augment_n").value
    assert len(sample_urls(at, "A")) == n and len(sample_urls(at, "B")) == n
    assert len(set(sample_urls(at, "B"))) == n  # light preset: every sample is different
    assert [shown(s.value) for s in at.success] == [
        "Pipeline A: evaluation images match what training shows the model.",
        "Pipeline B: evaluation images match what training shows the model.",
    ]
    assert warnings(at) == [] and not at.error
    captions = [c for img in at.image for c in img.captions]
    assert any(c.startswith("after tensor (Normalize): 128×96") for c in captions)
    assert any(c.startswith("evaluation: ") for c in captions)


def test_changing_a_parameter_changes_the_samples_and_the_check_warns(env):
    at = open_page()
    before_a, before_b = sample_urls(at, "A"), sample_urls(at, "B")
    widget(at.number_input, "augment_A_train_", "_size_height").set_value(64)
    at.run()
    assert not at.exception
    after_a = sample_urls(at, "A")
    assert len(after_a) == len(before_a) and set(after_a).isdisjoint(before_a)
    assert sample_urls(at, "B") == before_b  # the other pipeline is untouched
    assert spec_of(at, "A")[0]["size"] == [64, 96]
    assert "Pipeline A: training feeds the model 64×96 images; evaluation feeds 128×96" in warnings(at)


def test_seed_brings_samples_back_and_new_samples_draws_others(env):
    at = open_page()
    first = sample_urls(at, "B")
    at.button(key="augment_new").click()
    at.run()
    assert at.number_input(key="augment_seed").value == 1
    assert warnings(at) == [] and not at.exception
    second = sample_urls(at, "B")
    assert second != first
    at.number_input(key="augment_seed").set_value(0)
    at.run()
    assert sample_urls(at, "B") == first


def test_importing_the_crop_spec_shows_the_competition_warning(env):
    at = open_page()
    upload = at.file_uploader(key="augment_import_A")
    upload.set_value(("crop.json", json.dumps(CROP_TRAIN).encode(), "application/json"))
    at.run()
    assert not at.exception and not at.error
    assert [s["op"] for s in spec_of(at, "A")] == ["CenterCrop", "Resize", "Normalize"]
    assert warnings(at) == ["Pipeline A: training crops to 320×256 before resizing; evaluation does not crop"]
    assert "crop.json" in at.session_state["augment_pipe_A"]["origin"]


def test_importing_a_pair_replaces_both_specs(env):
    at = open_page()
    pair = {"name": "x", "train": CROP_TRAIN, "eval": CROP_TRAIN}
    at.file_uploader(key="augment_import_B").set_value(("pair.json", json.dumps(pair).encode(), "application/json"))
    at.run()
    assert [s["op"] for s in spec_of(at, "B", "eval")] == ["CenterCrop", "Resize", "Normalize"]
    assert warnings(at) == []


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"[{", "not valid JSON"), (b'[{"op": "Resise"}]', "step 1: unknown op 'Resise'")],
)
def test_importing_a_bad_spec_shows_an_error_and_keeps_the_pipeline(env, content, words):
    at = open_page()
    at.file_uploader(key="augment_import_A").set_value(("bad.json", content, "application/json"))
    at.run()
    assert not at.exception
    assert any(words in e for e in errors(at)), errors(at)
    assert [s["op"] for s in spec_of(at, "A")] == ["Resize", "Normalize"]


def test_add_move_and_remove_steps(env):
    at = open_page()
    at.selectbox(key="augment_A_train_addop").set_value("RandomGrayscale")
    at.button(key="augment_A_train_add").click()
    at.run()
    assert [s["op"] for s in spec_of(at, "A")] == ["Resize", "Normalize", "RandomGrayscale"]
    # after Normalize a colour step is refused with a clear message
    assert any("step 3 (RandomGrayscale): colour changes must come before Normalize" in e for e in errors(at))
    widget(at.button, "augment_A_train_", "_up").key  # noqa: B018 - exists
    uid = at.session_state["augment_pipe_A"]["train"][2]["uid"]
    at.button(key=f"augment_A_train_{uid}_up").click()
    at.run()
    assert [s["op"] for s in spec_of(at, "A")] == ["Resize", "RandomGrayscale", "Normalize"]
    assert not at.error
    at.slider(key=f"augment_A_train_{uid}_p").set_value(1.0)
    at.run()
    assert "Pipeline A: training always turns the image grey (RandomGrayscale); evaluation does not" in warnings(at)
    at.button(key=f"augment_A_train_{uid}_remove").click()
    at.run()
    assert [s["op"] for s in spec_of(at, "A")] == ["Resize", "Normalize"]
    assert warnings(at) == []


def test_every_registry_op_gets_working_widgets(env):
    from core.specs import transforms

    at = open_page()
    for name in transforms.OPS:
        at.selectbox(key="augment_A_train_addop").set_value(name)
        at.button(key="augment_A_train_add").click()
        at.run()
        assert not at.exception, (name, at.exception)
    assert [s["op"] for s in spec_of(at, "A")][2:] == list(transforms.OPS)
    # switching an optional parameter on starts from the registry's suggestion
    affine = next(e for e in at.session_state["augment_pipe_A"]["train"] if e["step"]["op"] == "RandomAffine")
    at.checkbox(key=f"augment_A_train_{affine['uid']}_shear_on").check()
    at.run()
    assert next(s for s in spec_of(at, "A") if s["op"] == "RandomAffine")["shear"] == [-10.0, 10.0]


def test_editing_the_evaluation_spec(env):
    at = open_page()
    at.radio(key="augment_B_which").set_value("eval")
    at.run()
    widget(at.number_input, "augment_B_eval_", "_size_width").set_value(128)
    at.run()
    assert spec_of(at, "B", "eval")[0]["size"] == [128, 128]
    assert "Pipeline B: training feeds the model 128×96 images; evaluation feeds 128×128" in warnings(at)


def test_load_a_preset_and_save_a_pair_for_the_training_page(env):
    at = open_page()
    at.selectbox(key="augment_B_pick").set_value("preset: center-crop")
    at.button(key="augment_B_load").click()
    at.run()
    assert spec_of(at, "B")[0]["op"] == "CenterCrop"
    at.text_input(key="augment_B_savename").set_value("../escape")
    at.button(key="augment_B_save").click()
    at.run()
    assert any("not a usable name" in e for e in errors(at))
    at.text_input(key="augment_B_savename").set_value("crop-v1")
    at.button(key="augment_B_save").click()
    at.run()
    assert (env / "specs" / "crop-v1.json").is_file()
    assert any("crop-v1" in shown(s.value) for s in at.success)
    assert "saved: crop-v1" in at.selectbox(key="augment_A_pick").options
    from core.specs import transforms

    assert transforms.load_named_pair("crop-v1", folder=env / "specs")[0][0]["op"] == "CenterCrop"

    before = (env / "specs" / "crop-v1.json").read_bytes()
    at.selectbox(key="augment_B_pick").set_value("preset: baseline")
    at.button(key="augment_B_load").click()
    at.run()
    at.button(key="augment_B_save").click()  # same name again: refused, the saved pair kept
    at.run()
    assert any("already exists" in e for e in errors(at))
    assert (env / "specs" / "crop-v1.json").read_bytes() == before
    at.checkbox(key="augment_B_overwrite").check()
    at.button(key="augment_B_save").click()
    at.run()
    assert (env / "specs" / "crop-v1.json").read_bytes() != before


def test_picking_images_by_class_index_and_at_random(env):
    at = open_page()
    classes = at.selectbox(key="augment_class").options
    assert len(classes) > 1
    first = sample_urls(at, "A")
    at.selectbox(key="augment_class").set_value(classes[-1])
    at.run()
    assert sample_urls(at, "A") != first
    at.button(key="augment_random").click()
    at.run()
    assert warnings(at) == []
    assert not at.exception and len(sample_urls(at, "A")) == at.slider(key="augment_n").value


def test_uploaded_image_and_unreadable_upload(env):
    from PIL import Image

    at = open_page()
    at.radio(key="augment_source").set_value("Upload")
    at.run()
    assert not sample_urls(at, "A")
    buf = io.BytesIO()
    Image.new("RGB", (300, 400), (200, 30, 30)).save(buf, format="PNG")
    at.file_uploader(key="augment_upload_image").set_value(("red.png", buf.getvalue(), "image/png"))
    at.run()
    assert not at.exception and len(sample_urls(at, "A")) == at.slider(key="augment_n").value
    at.file_uploader(key="augment_upload_image").set_value(("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png"))
    at.run()
    assert not at.exception and at.error and not sample_urls(at, "A")


def test_user_file_names_are_shown_literally(env):
    at = open_page()
    name = "[click](http://example.invalid) *x*.json"
    at.file_uploader(key="augment_import_A").set_value((name, json.dumps(CROP_TRAIN).encode(), "application/json"))
    at.run()
    origin = next(c.value for c in at.caption if "imported from" in c.value)
    assert "\\[click\\]\\(http" in origin and "\\*x\\*" in origin  # escaped: no link, no emphasis
    assert shown(origin) == f"Started from training spec imported from {name}."


def test_without_a_dataset_the_test_pattern_is_used(env, monkeypatch):
    empty = env / "nothing"
    empty.mkdir()
    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(empty))
    at = open_page()
    assert at.radio(key="augment_source").value == "Test pattern"
    assert len(sample_urls(at, "A")) == at.slider(key="augment_n").value


@pytest.mark.browser
def test_browser_page_renders_samples_and_warning(demo_root, app_server_factory, new_page, tmp_path):
    """A real Chromium: samples appear, an edited parameter brings up the pair-check warning."""
    from tests.conftest import wait_for_app

    server = app_server_factory(demo_root.parent, WORKBENCH_SPECS_DIR=str(tmp_path / "specs"))
    page, watch = new_page()
    page.set_default_timeout(120_000)
    browse_to(page, server.url, "Augmentations")  # through the sidebar; waits for the title
    page.get_by_text("What the model receives").wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(img => img.complete && img.naturalWidth > 0).length >= 14"
    )
    assert page.locator('[data-testid="stAlertContentWarning"]').count() == 0
    height = page.get_by_label("size height").first
    height.fill("64")
    height.press("Enter")
    wait_for_app(page)
    page.get_by_text("training feeds the model 64×96 images").wait_for()
    watch.screenshot("augment_page")
    watch.errors[:] = [e for e in watch.errors if "ERR_NAME_NOT_RESOLVED" not in e]  # offline font fetch
    watch.assert_clean()


def test_the_backbone_default_pair_loads_as_an_ordinary_pair(env):
    at = open_page()
    at.selectbox(key="augment_B_pick").set_value("backbone default: resnet18")
    at.button(key="augment_B_load").click()
    at.run()
    assert not at.exception and not errors(at), errors(at)
    train, eval_ = spec_of(at, "B"), spec_of(at, "B", "eval")
    assert [s["op"] for s in eval_] == ["Resize", "CenterCrop", "Normalize"]
    assert eval_[1]["size"] == [224, 224] and train[0]["op"] == "RandomResizedCrop"
    assert eval_[-1]["mean"] == [0.485, 0.456, 0.406]  # the weights' own normalisation
