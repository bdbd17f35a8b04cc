"""The Dataset page through Streamlit's AppTest: charts, gallery, problems table, names as text."""

from __future__ import annotations

import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from tests.imagefactory import jpeg_bytes, write
from tests.test_datasets import make_mask_tree

from .conftest import REPO_ROOT

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("WORKBENCH_SUBMISSIONS_DIR", str(tmp_path / "submissions"))
    return tmp_path


def open_page(data_root, monkeypatch) -> AppTest:
    monkeypatch.setenv("WORKBENCH_DATA_ROOTS", str(data_root))
    at = AppTest.from_file(str(REPO_ROOT / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/dataset.py")
    at.run()
    assert not at.exception, at.exception
    return at


def shown(element) -> str:
    """The text an alert displays: the page escapes Markdown characters in user-derived text."""
    return re.sub(r"\\(.)", r"\1", element.value)


def plotly_specs(at) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def test_mask_dataset_page(env, monkeypatch):
    data = env / "data"
    root = make_mask_tree(data / "demo")
    write(root / "train/images/000001_female_Asian_45/mask2.jpeg", b"")  # a planted bad file
    at = open_page(data, monkeypatch)

    specs = plotly_specs(at)
    assert len(specs) == 4  # classes + mask, gender, age
    class_bars = specs[0]["data"]
    names = [x for trace in class_bars for x in trace["x"]]
    assert len(names) == 18 and "Wear · Male · &lt;30" in names  # all 18 classes, shown literally
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "20" and metrics["People"] == "3" and metrics["Classes"] == "18"
    assert metrics["Problems"] == "1"
    assert metrics["Imbalance"].startswith("∞")

    assert len(at.image) >= 1  # the gallery shows thumbnails
    assert any("000002 · " in c.value or "000001 · " in c.value or "000003 · " in c.value for c in at.caption)

    tables = [df.value for df in at.dataframe]
    problems = next(t for t in tables if "kind" in t.columns)
    assert "train/images/000001_female_Asian_45/mask2.jpeg" in set(problems["path"])
    assert set(problems["kind"]) == {"empty"}
    gender_age = next(t for t in tables if "30-59" in t.columns)
    assert int(gender_age.loc["Female", "30-59"]) == 1


def test_gallery_pages_and_channel_stats(env, monkeypatch):
    data = env / "data"
    root = data / "cls"
    for i in range(30):
        write(root / "cat" / f"{i:02d}.jpg", jpeg_bytes((20, 20), (255, 0, 0)))
    write(root / "dog" / "a.jpg", jpeg_bytes())
    at = open_page(data, monkeypatch)
    assert len(at.image) == 24
    at.number_input(key="dataset_gallery_page_0").set_value(2).run()
    assert len(at.image) == 6
    at.selectbox(key="dataset_gallery_class").set_value(1).run()
    assert len(at.image) == 1

    at.button(key="dataset_stats_button").click().run()
    assert not at.exception
    code = "\n".join(c.value for c in at.code)
    assert "Normalize(" in code and "mean=[0.98" in code

    at.button(key="dataset_verify_button").click().run()
    assert not at.exception
    assert any("31 images decode" in md.value for md in at.markdown)


def test_hostile_class_name_renders_as_text(env, monkeypatch):
    data = env / "data"
    write(data / "evil" / EVIL / "a.jpg", jpeg_bytes())
    write(data / "evil" / "=HYPERLINK(x)" / "b.jpg", jpeg_bytes())
    at = open_page(data, monkeypatch)
    names = [x for trace in plotly_specs(at)[0]["data"] for x in trace["x"]]
    assert "&lt;img src=x onerror=alert(1)&gt;" in names
    assert EVIL not in json.dumps(plotly_specs(at))
    assert any(EVIL in opt for opt in at.selectbox(key="dataset_gallery_class").options)
    for md in at.markdown:
        assert EVIL not in md.value or not md.proto.allow_html


def test_no_dataset_and_broken_dataset(env, monkeypatch):
    data = env / "data"
    data.mkdir()
    at = open_page(data, monkeypatch)
    assert at.info  # "No datasets under the data roots" / "Pick a dataset"
    write(data / "broken" / "cls" / "a.jpg", b"")
    at = open_page(data, monkeypatch)
    assert any("no usable images" in shown(e) for e in at.error)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_upload_zip_extracts_and_opens_the_dataset(env, monkeypatch):
    data = env / "data"
    make_mask_tree(data / "demo")
    at = open_page(data, monkeypatch)
    archive = zip_bytes(
        {"pets/cat/a.jpg": jpeg_bytes(), "pets/dog/b.jpg": jpeg_bytes(), "pets/dog/c.jpg": jpeg_bytes()}
    )
    at.file_uploader(key="dataset_zip").set_value(("pets.zip", archive, "application/zip")).run()
    at.text_input(key="dataset_zip_name").set_value("pets").run()
    at.button(key="dataset_zip_go").click().run()
    assert not at.exception and not at.error
    assert (data / "pets" / "cat" / "a.jpg").is_file()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "3" and metrics["Classes"] == "2"


def test_upload_hostile_zip_refused(env, monkeypatch):
    data = env / "data"
    make_mask_tree(data / "demo")
    at = open_page(data, monkeypatch)
    archive = zip_bytes({"../escape.jpg": jpeg_bytes(), "ok/a.jpg": jpeg_bytes()})
    at.file_uploader(key="dataset_zip").set_value(("evil.zip", archive, "application/zip")).run()
    at.text_input(key="dataset_zip_name").set_value("evil").run()
    at.button(key="dataset_zip_go").click().run()
    assert not at.exception
    assert at.error and "escape.jpg" in shown(at.error[0])
    assert sorted(p.name for p in data.iterdir()) == ["demo"]
    assert not (env / "escape.jpg").exists()


def test_zip_name_fills_the_folder_name(env, monkeypatch):
    """A keyed text_input ignores a changing value=: the page puts the archive's name into its state."""
    data = env / "data"
    make_mask_tree(data / "demo")
    at = open_page(data, monkeypatch)
    archive = zip_bytes({"cat/a.jpg": jpeg_bytes(), "dog/b.jpg": jpeg_bytes()})
    at.file_uploader(key="dataset_zip").set_value(("holiday-pets.zip", archive, "application/zip")).run()
    assert at.text_input(key="dataset_zip_name").value == "holiday-pets"
    assert not at.button(key="dataset_zip_go").disabled
    at.button(key="dataset_zip_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert (data / "holiday-pets" / "cat" / "a.jpg").is_file()

    # A second archive proposes its own name, replacing the first.
    at.file_uploader(key="dataset_zip").set_value(("more.zip", archive, "application/zip")).run()
    assert at.text_input(key="dataset_zip_name").value == "more"


def test_member_names_in_an_error_are_not_markdown(env, monkeypatch):
    data = env / "data"
    make_mask_tree(data / "demo")
    at = open_page(data, monkeypatch)
    member = "../[x](http://evil.example) ![i](http://evil.example/i.png).jpg"
    at.file_uploader(key="dataset_zip").set_value(("evil.zip", zip_bytes({member: jpeg_bytes()}), "application/zip"))
    at.run()
    at.button(key="dataset_zip_go").click().run()
    assert not at.exception
    (box,) = at.error
    assert "](http" not in box.value and "\\[x\\]" in box.value
    assert "[x](http://evil.example) ![i](http://evil.example/i.png).jpg" in shown(box)


def test_a_link_leading_outside_the_data_roots_is_not_offered(env, monkeypatch):
    data = env / "data"
    for cls in ("a", "b"):
        write(data / "inside" / cls / "x.jpg", jpeg_bytes())
        write(env / "elsewhere" / cls / "x.jpg", jpeg_bytes())
    (data / "escape").symlink_to(env / "elsewhere")
    (data / "alias").symlink_to(data / "inside")  # inside the roots: the same dataset, offered once
    at = open_page(data, monkeypatch)
    options = [str(o) for o in at.sidebar.selectbox[0].options]
    assert not any("escape" in o or "elsewhere" in o for o in options), options
    assert len([o for o in options if "inside" in o or "alias" in o]) == 1, options


# ---- duplicates, leakage and image quality ----------------------------------------------------------


@pytest.fixture
def planted(env, monkeypatch):
    """A small demo dataset with one planted exact pair (two people) and one dark photo."""
    from core.data import demo, demo_plants

    root = env / "data" / "demo"
    demo.generate(root, people=6, eval_people=0, seed=0)
    rows = demo_plants.plant_issues(root, counts={"exact": 1, "near": 0, "dark": 1, "bright": 0, "blurry": 0})
    return root, {row["kind"]: row for row in rows}


def leaky_run(env, root, val_path: str):
    """A run on ``root`` whose validation set holds ``val_path`` (and one other photo)."""
    import pandas as pd

    from core.runs.folder import create_run_folder, write_config, write_predictions

    run = create_run_folder(env / "models", "run-leak")
    write_config(run, {"kind": "train", "task": "class", "data": str(root)})
    other = next(p for p in sorted(root.glob("train/images/*/*.jpg")) if str(p) != val_path)
    frame = pd.DataFrame({"path": [val_path, str(other)], "group": ["a", "b"], "label": [0, 0], "pred": [0, 1]})
    for j in range(18):
        frame[f"p{j}"] = 1 / 18
    write_predictions(run.val_predictions, frame)
    return run


def test_duplicates_section_lists_the_planted_pair_and_flags_leakage(env, monkeypatch, planted):
    root, truth = planted
    exact = truth["exact"]
    target, source = str(root / exact["path"]), str(root / exact["source"])
    leaky_run(env, root, target)  # the copy is validated on, its source trained on
    at = open_page(env / "data", monkeypatch)
    at.button(key="dataset_duplicates_button").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Exact pairs"] == "1" and metrics["Different people"] == "1"
    notes = [t.value for t in at.text if " photos · " in t.value]
    assert notes and notes[0].startswith("2 photos · exact") and "different people" in notes[0]
    captions = [shown(c) for c in at.caption]
    assert any(c.endswith("· " + target.rsplit("/", 1)[1]) for c in captions)  # person · file name
    assert "LEAKAGE" not in notes[0]
    at.selectbox(key="dataset_leak_run").set_value("run-leak").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Leakage"] == "1"
    notes = [t.value for t in at.text if " photos · " in t.value]
    assert "LEAKAGE: split across train and validation" in notes[0]
    pairs = next(df.value for df in at.dataframe if "leakage" in df.value.columns)
    assert {pairs["path_a"].iloc[0], pairs["path_b"].iloc[0]} == {exact["path"], exact["source"]}
    assert source != target


def test_quality_gallery_shows_the_planted_dark_photo(env, monkeypatch, planted):
    root, truth = planted
    dark = truth["dark"]["path"]
    at = open_page(env / "data", monkeypatch)
    at.button(key="dataset_quality_button").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="dataset_quality_issue").value == "dark"
    captions = [shown(c) for c in at.caption if shown(c).startswith("score ")]
    assert any(c.endswith(dark) for c in captions), captions
    assert any("CleanVision" in c.value for c in at.caption)


def test_background_pass_writes_the_result_and_reports_progress(env, planted):
    from app import background
    from tests.conftest import wait_until

    root, truth = planted
    folder = env / "job"
    assert background.state(folder).status == "none"
    background.launch(folder, ["quality", str(root), "--out", str(folder / "result.csv")])
    job = wait_until(lambda: (s := background.state(folder)).status != "running" and s, 180, "the quality pass")
    assert job.status == "done", job.log_tail
    assert job.total > 0 and job.done == job.total
    assert truth["dark"]["path"] in (folder / "result.csv").read_text()


def test_rescan_and_problem_counts(env, monkeypatch):
    data = env / "data"
    root = make_mask_tree(data / "demo")
    at = open_page(data, monkeypatch)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Index in memory"].endswith("MB")
    before = int(metrics["Problems"])
    # Deep in the tree: the page's cheap fingerprint misses it, only a rescan finds it.
    write(root / "train/images/000001_female_Asian_45/mask3.jpeg", b"")
    at.button(key="dataset_rescan").click().run()
    assert not at.exception, at.exception
    assert int({m.label: m.value for m in at.metric}["Problems"]) > before  # the empty file (and its slot)
