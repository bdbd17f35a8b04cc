"""The Review page through Streamlit's AppTest: metrics, cell filter, paging, filters, person view, CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.runs.folder import RunFolder, create_run_folder, write_config, write_predictions, write_status
from tests.conftest import REPO_ROOT

PHOTOS = ["mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal"]
PHOTO_MASK = [0, 0, 0, 0, 0, 1, 2]


def label(mask: int, gender: int, age: int) -> int:
    return mask * 6 + gender * 3 + age


def make_dataset_and_run(tmp_path, people: int = 8, run_id: str = "run-a") -> tuple[pd.DataFrame, object]:
    """``people`` person folders of 7 tiny JPEGs, and a run whose predictions get the gender of
    odd-numbered people wrong (7 errors each) with falling confidence."""
    images = tmp_path / "data" / "mini" / "train" / "images"
    rows = []
    rng = np.random.default_rng(0)
    for person in range(people):
        gender, age = person % 2, person % 3
        folder = images / f"{person:06d}_{'female' if gender else 'male'}_Asian_{[25, 40, 60][age]}"
        folder.mkdir(parents=True)
        for photo, mask in zip(PHOTOS, PHOTO_MASK, strict=True):
            path = folder / f"{photo}.jpg"
            Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(path, quality=70)
            true = label(mask, gender, age)
            wrong = person % 2 == 1
            pred = label(mask, 1 - gender, age) if wrong else true
            rows.append({"path": str(path), "group": folder.name, "label": true, "pred": pred})
    frame = pd.DataFrame(rows)
    probs = np.full((len(frame), 18), 0.01)
    confidence = np.linspace(0.9, 0.5, len(frame))
    probs[np.arange(len(frame)), frame["pred"]] = confidence
    probs /= probs.sum(axis=1, keepdims=True)
    frame["loss"] = -np.log(probs[np.arange(len(frame)), frame["label"]])
    for j in range(18):
        frame[f"p{j}"] = probs[:, j]
    run = create_run_folder(tmp_path / "models", run_id)
    write_config(run, {"kind": "train", "task": "class", "data": str(images.parent.parent)})
    write_predictions(run.val_predictions, frame)
    return frame, run


@pytest.fixture
def page_env(tmp_path, monkeypatch):
    frame, run = make_dataset_and_run(tmp_path)
    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return frame, run


def open_review(run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app" / "main.py"), default_timeout=120)
    if run_id:
        at.query_params["run"] = run_id
    at.run()
    at.switch_page("app_pages/review.py")
    at.run()
    assert not at.exception, at.exception
    return at


def gallery_count(at: AppTest) -> int:
    texts = [t.value for t in at.text if t.value.endswith("pages")]
    return int(texts[0].split()[0])


def card_texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text if t.value.startswith("true: ")]


def test_page_without_runs_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    at = open_review()
    assert any("No run has validation predictions" in i.value for i in at.info)


def test_headline_numbers_and_gallery_paging(page_env):
    frame, run = page_env
    at = open_review()
    assert at.query_params["run"] == [run.id] or at.query_params["run"] == run.id
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "56" and metrics["Accuracy"] == "50.0%"
    assert metrics["Gender accuracy"] == "50.0%" and metrics["Mask accuracy"] == "100.0%"
    assert gallery_count(at) == 28  # 4 people x 7 photos wrong
    first = card_texts(at)
    assert len(first) == 24
    # Highest confidence first: the first wrong person (000001), its mask1 photo.
    assert "person: 000001_female_Asian_40" in first[0] and "true: Wear · Female · 30-59" in first[0]
    at.get("pagination")[0].set_value(2).run()
    second = card_texts(at)
    assert len(second) == 4 and not set(second) & set(first)
    at.selectbox(key="review_page_size").set_value(12).run()
    assert len(card_texts(at)) == 12


def test_filters_and_sort(page_env):
    frame, run = page_env
    at = open_review(run.id)
    at.multiselect(key="review_true").set_value([label(0, 1, 1)]).run()  # wear, female, 30-59: people 1 and 7
    assert gallery_count(at) == 10
    assert all("true: Wear · Female · 30-59" in t for t in card_texts(at))
    at.multiselect(key="review_true").set_value([]).run()
    at.selectbox(key="review_attr").set_value("mask").run()
    assert gallery_count(at) == 0 and any("No image matches" in i.value for i in at.info)
    at.selectbox(key="review_attr").set_value("gender").run()
    assert gallery_count(at) == 28
    at.radio(key="review_sort").set_value("loss").run()
    assert not at.exception and len(card_texts(at)) == 24


def test_confusion_cell_filter_is_shown_and_removable(page_env):
    frame, run = page_env
    at = open_review(run.id)
    true, pred = label(2, 1, 0), label(2, 0, 0)  # person 3 is female <30: normal photo predicted male
    at.session_state["review_cell"] = (true, pred)  # what a click on that cell sets
    at.run()
    assert not at.exception
    assert gallery_count(at) == 1
    chip = [b for b in at.button if b.key == "review_clear_cell"]
    shown = chip[0].label.replace("\\", "")  # the label is Markdown-escaped
    assert "Not wear · Female · <30" in shown and "Not wear · Male · <30" in shown
    chip[0].click().run()
    assert gallery_count(at) == 28 and not [b for b in at.button if b.key == "review_clear_cell"]


def test_cell_from_a_plotly_selection_event():
    from app import review_ui

    event = {"selection": {"points": [{"curve_number": 1, "point_index": 2 * 18 + 5, "customdata": [2, 5]}]}}
    assert review_ui.selected_cell(event, 18) == (2, 5)
    assert review_ui.selected_cell({"selection": {"points": [{"curve_number": 1, "point_index": 40}]}}, 18) == (2, 4)
    assert review_ui.selected_cell({"selection": {"points": []}}, 18) is None
    assert review_ui.selected_cell(None, 18) is None


def test_markdown_in_names_is_escaped_for_labels():
    from app import widgets

    assert widgets.plain("[x](javascript:alert(1)) **b** <30") == (
        "\\[x\\]\\(javascript\\:alert\\(1\\)\\) \\*\\*b\\*\\* \\<30"
    )


def test_person_view_shows_the_other_six_photos(page_env):
    frame, run = page_env
    at = open_review(run.id)
    at.button(key="review_gallery_person_0").click().run()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert any(t.startswith("Selected: ") and "000001_female_Asian_40" in t for t in texts)
    assert "The person's other photos (6):" in texts
    at.button(key="review_close_focus").click().run()
    assert not [t for t in at.text if t.value.startswith("Selected: ")]


def test_best_worst_and_label_errors_with_csv(page_env):
    frame, run = page_env
    at = open_review(run.id)
    at.segmented_control(key="review_view").set_value("Best vs worst per class").run()
    at.selectbox(key="review_bw_class").set_value(label(0, 1, 1)).run()
    cards = card_texts(at)
    assert len(cards) == 24 + 12  # the gallery, then the 6 best and 6 worst of the class (10 images)
    assert not at.exception
    at.segmented_control(key="review_view").set_value("Suspected label errors").run()
    assert not at.exception
    assert any(t.value == "28 images where the model prefers another label" for t in at.text)
    issue_cards = [t.value for t in at.text if t.value.startswith("suggest: ")]
    assert len(issue_cards) == 24 and "by: person" in issue_cards[0] and "changes: gender" in issue_cards[0]
    download = at.get("download_button")
    assert len(download) == 1 and download[0].proto.label == "Download CSV"


@pytest.mark.browser
def test_browser_cell_click_filters_the_gallery(tmp_path, app_server_factory, new_page):
    import re

    from tests.conftest import wait_for_app

    make_dataset_and_run(tmp_path)
    server = app_server_factory(tmp_path / "data", WORKBENCH_MODELS_DIR=str(tmp_path / "models"))
    page, watch = new_page()
    missing: list[str] = []
    page.on("response", lambda r: r.status == 404 and missing.append(r.url))
    page.set_default_timeout(120_000)
    page.goto(server.url + "/review?run=run-a")
    wait_for_app(page)
    page.get_by_text(re.compile(r"^28 images, 2 pages$")).wait_for()
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    plot_area = chart.locator(".nsewdrag").first
    plot_area.wait_for()
    box = plot_area.bounding_box()
    # The cell in row "Wear · Female · 30-59" (true 4), column "Wear · Male · 30-59" (predicted 1).
    true, pred = label(0, 1, 1), label(0, 0, 1)
    page.mouse.click(box["x"] + box["width"] * (pred + 0.5) / 18, box["y"] + box["height"] * (true + 0.5) / 18)
    chip = page.get_by_role("button", name=re.compile("^✕ true"))
    chip.wait_for()
    assert "Wear · Female · 30-59" in chip.inner_text() and "Wear · Male · 30-59" in chip.inner_text()
    page.get_by_text(re.compile(r"^10 images, 1 pages$")).wait_for()
    chip.click()
    page.get_by_text(re.compile(r"^28 images, 2 pages$")).wait_for()
    # Opening a sub-path URL makes Streamlit probe <path>/_stcore/...: those 404s are expected.
    assert all("/review/_stcore/" in url for url in missing), missing
    watch.errors[:] = [e for e in watch.errors if "ERR_NAME_NOT_RESOLVED" not in e and "404" not in e]
    watch.screenshot("review-cell-click")
    watch.assert_clean()


def test_label_errors_use_finished_kfold_predictions(page_env):
    """After `label-issues --kfold 2` the list covers every training image, not just validation."""
    frame, run = page_env
    folds = [frame[frame["group"].str[5].astype(int) % 2 == i] for i in range(2)]  # person ids end in 0..7
    for i, part in enumerate(folds):
        sub = run.root / "folds" / f"fold-{i}"
        sub.mkdir(parents=True)
        write_config(RunFolder(sub), {"kind": "train", "task": "class", "n_folds": 2, "fold": i})
        write_status(RunFolder(sub), state="completed")
        write_predictions(RunFolder(sub).val_predictions, part)
    # The run's own validation predictions shrink to one person: the list must still hold all 28 errors.
    write_predictions(run.val_predictions, frame[frame["group"].str.startswith("000001")])
    at = open_review(run.id)
    at.segmented_control(key="review_view").set_value("Suspected label errors").run()
    assert not at.exception
    assert any(t.value == "28 images where the model prefers another label" for t in at.text)
    assert any("out-of-sample predictions of" in c.value for c in at.caption)


# ---- why the model is wrong: Grad-CAM, the embedding map, more like this ----------------------------


def add_checkpoint(run, model: str = "small_cnn") -> None:
    """A random-weight checkpoint for the run (18 competition classes), so the page can load its model."""
    import torch

    from core.data import tasks
    from core.runs import folder as runfolder
    from core.specs import transforms
    from core.training import models

    torch.manual_seed(0)
    net = models.build_model(model, 18, pretrained=False)
    spec = transforms.preset("baseline", img_size=(32, 24))[1]
    classes = tasks.task_classes("class")
    runfolder.save_checkpoint(
        run.best_checkpoint,
        {
            "model": net.state_dict(),
            "model_name": model,
            "task": "class",
            "classes": classes,
            "img_size": [32, 24],
            "eval_spec": spec,
            "config": {"model": model},
        },
    )


def add_embeddings(run, frame: pd.DataFrame) -> np.ndarray:
    """Embeddings in two far-apart blobs: the first 20 validation photos, then the rest."""
    from core.evaluation import embeddings

    rng = np.random.default_rng(0)
    features = rng.normal(0, 0.05, (len(frame), 8)).astype(np.float32)
    features[:20, 0] += 5
    features[20:, 1] += 5
    embeddings.save_run_embeddings(run, features, frame)
    return features


def test_gradcam_toggle_shows_two_overlays_per_card(page_env):
    frame, run = page_env
    add_checkpoint(run)
    at = open_review(run.id)
    plain_images = len(at.image)
    at.toggle(key="review_gradcam").set_value(True).run()
    assert not at.exception, at.exception
    cards = len(card_texts(at))
    assert cards == 24
    assert len(at.image) == plain_images + 2 * cards
    captions = [img.proto.imgs[0].caption for img in at.image if img.proto.imgs]
    assert captions.count("pred") == cards and captions.count("true") == cards
    at.button(key="review_gallery_person_0").click().run()  # the person view shows the pair too, large
    assert not at.exception and captions.count("pred") + 1 == [
        img.proto.imgs[0].caption for img in at.image if img.proto.imgs
    ].count("pred")


def test_gradcam_refused_for_a_transformer_once(page_env, monkeypatch):
    from core.evaluation import gradcam

    frame, run = page_env
    add_checkpoint(run)
    monkeypatch.setattr(gradcam, "is_transformer", lambda model: True)
    at = open_review(run.id)
    at.toggle(key="review_gradcam").set_value(True).run()
    assert not at.exception
    notes = [i.value for i in at.info if "not available for this backbone" in i.value]
    assert len(notes) == 1
    assert not [img for img in at.image if img.proto.imgs and img.proto.imgs[0].caption in ("pred", "true")]


def test_map_selection_paths_from_a_plotly_event():
    from app import explain_ui

    points = pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"]})
    event = {"selection": {"points": [{"customdata": [2]}, {"customdata": [0]}, {"customdata": [9]}]}}
    assert explain_ui.selected_paths(event, points) == ["a.jpg", "c.jpg"]
    assert explain_ui.selected_paths({"selection": {"points": []}}, points) == []
    assert explain_ui.selected_paths(None, points) == []


def test_embedding_map_selection_filters_the_gallery(page_env):
    frame, run = page_env
    add_embeddings(run, frame)
    at = open_review(run.id)
    spec = [el for el in at.get("plotly_chart") if "review_map" in el.proto.id]
    assert spec, "the embedding map is drawn"
    assert gallery_count(at) == 28
    chosen = frame["path"].iloc[:20].tolist()  # the first blob: persons 0-2 (14 right, 6 wrong)
    at.session_state["review_map_selection"] = chosen  # what a lasso over the blob sets
    at.run()
    assert not at.exception
    assert gallery_count(at) == 20  # every selected photo, right or wrong
    shown_paths = {t.split("\n")[0] for t in card_texts(at)}
    assert shown_paths
    at.button(key="review_clear_map").click().run()
    assert gallery_count(at) == 28


def test_more_like_this_shows_nearest_neighbours(page_env):
    frame, run = page_env
    add_embeddings(run, frame)
    at = open_review(run.id)
    at.session_state["review_map_selection"] = frame["path"].iloc[:20].tolist()
    at.run()
    at.button(key="review_gallery_similar_0").click().run()
    assert not at.exception
    assert any(t.value == "12 nearest neighbours, closest first" for t in at.text)
    neighbours = [t.value for t in at.text if t.value.startswith("distance: ")]
    assert len(neighbours) == 12


def test_runs_without_embeddings_offer_to_compute_them(page_env):
    frame, run = page_env
    add_checkpoint(run)
    at = open_review(run.id)
    assert not [el for el in at.get("plotly_chart") if "review_map" in el.proto.id]
    at.button(key="review_embed_button").click().run()
    assert not at.exception, at.exception
    assert (run.root / "embeddings.npy").is_file()
    assert [el for el in at.get("plotly_chart") if "review_map" in el.proto.id]
