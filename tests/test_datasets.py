"""core.data.datasets.scan: the three formats and every real-world oddity, each reported and left out."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import datasets, stats, tasks
from core.errors import DatasetError
from tests.imagefactory import corrupt_png_data, jpeg_bytes, png_bytes, raw_png, write

PHOTOS = datasets.PHOTOS
EXTS = {"mask1": ".jpg", "mask2": ".jpeg", "mask3": ".png"}  # mixed extensions inside one folder


def add_person(images: Path, folder: str, photos=PHOTOS, size=(12, 16), color=(120, 90, 60)) -> Path:
    person = images / folder
    for photo in photos:
        ext = EXTS.get(photo, ".jpg")
        data = png_bytes(Image.new("RGB", size, color)) if ext == ".png" else jpeg_bytes(size, color)
        write(person / f"{photo}{ext}", data)
        write(person / f"._{photo}{ext}", b"\x00\x05\x16\x07 AppleDouble junk")
    write(images / f"._{folder}", b"\x00\x05\x16\x07")
    return person


def make_mask_tree(root: Path, people=None, eval_ids=("a" * 40 + ".jpg",), missing_eval=()) -> Path:
    people = people or ["000001_female_Asian_45", "000002_male_Asian_25", "000003_male_Asian_60"]
    images = root / "train" / "images"
    for folder in people:
        add_person(images, folder)
    rows = ["id,gender,race,age,path"] + [
        f"{f.split('_')[0]},{f.split('_')[1]},Asian,{f.split('_')[3]},{f}" for f in people
    ]
    write(root / "train" / "train.csv", ("\n".join(rows) + "\n").encode())
    write(root / "train" / ".DS_Store", b"junk")
    write(images / "Thumbs.db", b"junk")
    ev = root / "eval"
    write(ev / "info.csv", ("ImageID,ans\n" + "".join(f"{i},0\n" for i in [*eval_ids, *missing_eval])).encode())
    for image_id in eval_ids:
        write(ev / "images" / image_id, jpeg_bytes())
    return root


def kinds(index) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in index.problems:
        out.setdefault(p.kind, []).append(p.path)
    return out


# --- the competition layout ----------------------------------------------------------------------


@pytest.mark.parametrize("given", ["", "train", "train/images"])
def test_mask_layout_detected_from_top_train_or_images(tmp_path, given):
    root = make_mask_tree(tmp_path / "ds")
    index = datasets.scan(root / given if given else root)
    assert index.format == "mask"
    assert index.has_attributes
    assert len(index.frame) == 21
    assert index.problems == []  # junk (._ twins, .DS_Store, Thumbs.db) is skipped silently
    assert index.classes == list(tasks.CLASS_NAMES)
    # eval/ sits beside train/: only the top folder holds it (nothing above the given root is read)
    assert (index.eval is not None and len(index.eval.frame) == 1) == (given == "")


def test_nothing_above_the_dataset_root_is_read(tmp_path):
    """A people-style folder placed directly in a data root must not pick up the data root's
    train.csv or an eval/ beside the data root (finding 10); nor a folder holding images/."""
    data = tmp_path / "data"
    add_person(data / "people", "000001_female_Asian_45")
    write(data / "train.csv", b"id,gender,race,age,path\n9,male,Asian,40,000009_male_Asian_40\n")
    write(tmp_path / "eval" / "info.csv", b"ImageID,ans\nx.jpg,0\n")
    index = datasets.scan(data / "people")
    assert index.format == "mask" and len(index.frame) == 7
    assert index.eval is None and index.problems == []
    add_person(data / "ds" / "images", "000002_male_Asian_25")
    write(data / "eval" / "info.csv", b"ImageID,ans\nx.jpg,0\n")
    index = datasets.scan(data / "ds")
    assert index.format == "mask" and index.eval is None and index.problems == []


def test_mask_layout_labels_and_columns(tmp_path):
    index = datasets.scan(make_mask_tree(tmp_path / "ds"))
    frame = index.frame
    assert set(datasets.FRAME_COLUMNS) <= set(frame.columns)
    row = frame[(frame["group"] == "000001_female_Asian_45") & (frame["photo"] == "incorrect_mask")].iloc[0]
    assert (row["mask"], row["gender"], row["age_band"], row["age"]) == (1, 1, 1, 45)
    assert row["label"] == tasks.encode_class(1, 1, 1) == 10
    assert row["class_name"] == "Incorrect · Female · 30-59"
    assert row["person_id"] == "000001"
    assert row["rel"] == "train/images/000001_female_Asian_45/incorrect_mask.jpg"
    assert Path(row["path"]).is_absolute() and Path(row["path"]).is_file()
    assert (row["width"], row["height"]) == (12, 16)
    old = frame[frame["group"] == "000003_male_Asian_60"]
    assert set(old["age_band"]) == {2}
    assert set(frame[frame["photo"] == "mask3"]["format"]) == {"PNG"}


def test_the_index_offers_only_its_own_tasks(tmp_path):
    mask = datasets.scan(make_mask_tree(tmp_path / "ds"))
    assert [t.name for t in mask.tasks()] == ["class", "mask", "gender", "age"]
    assert [t.num_classes for t in mask.tasks()] == [18, 3, 2, 3]
    for task in mask.tasks():
        labels, names = mask.task_labels(task.name)
        assert tuple(names) == task.classes and labels.max() < task.num_classes
    write(tmp_path / "pets" / "cat" / "a.jpg", jpeg_bytes())
    write(tmp_path / "pets" / "dog" / "b.jpg", jpeg_bytes())
    pets = datasets.scan(tmp_path / "pets")
    assert [(t.name, t.classes) for t in pets.tasks()] == [("class", ("cat", "dog"))]
    with pytest.raises(DatasetError, match="unknown task"):
        pets.task_labels("colour")


def test_summary_is_the_scan_json_object(tmp_path):
    root = make_mask_tree(tmp_path / "ds", missing_eval=("b" * 40 + ".jpg",))
    summary = datasets.scan(root).summary()
    assert summary["format"] == "mask"
    assert summary["n_images"] == 21
    assert summary["classes"] == list(tasks.CLASS_NAMES)
    assert set(summary["class_counts"]) == {str(i) for i in range(18)}
    assert sum(summary["class_counts"].values()) == 21
    assert summary["class_counts"]["4"] == 5  # female 45: wear x5
    assert summary["n_groups"] == 3
    assert summary["attribute_counts"]["mask"] == {"Wear": 15, "Incorrect": 3, "Not wear": 3}
    assert summary["attribute_counts"]["gender"] == {"Male": 14, "Female": 7}
    assert summary["attribute_counts"]["age"] == {"<30": 7, "30-59": 7, "60+": 7}
    assert summary["eval"] == {"rows": 2, "missing": ["b" * 40 + ".jpg"]}
    assert {"path", "kind", "message"} == set(summary["problems"][0])
    assert any(p["kind"] == "eval_missing" for p in summary["problems"])


def test_suffix_and_duplicated_ids(tmp_path):
    root = make_mask_tree(
        tmp_path / "ds", people=["001498-1_male_Asian_30", "003397_female_Asian_20", "003397_female_Asian_19"]
    )
    index = datasets.scan(root)
    frame = index.frame
    assert set(frame[frame["group"] == "001498-1_male_Asian_30"]["person_id"]) == {"001498-1"}
    assert frame["group"].nunique() == 3  # the two 003397 folders stay two people
    assert (frame["person_id"] == "003397").sum() == 14
    assert index.problems == []


def test_missing_photo_reported_rest_kept(tmp_path):
    root = make_mask_tree(tmp_path / "ds")
    add_person(root / "train" / "images", "000010_male_Asian_33", photos=PHOTOS[:-1])
    index = datasets.scan(root)
    problems = kinds(index)
    assert problems["missing_photo"] == ["train/images/000010_male_Asian_33"]
    assert "normal" in index.problems[0].message
    assert (index.frame["group"] == "000010_male_Asian_33").sum() == 6


def test_bad_folder_names_reported_and_left_out(tmp_path):
    root = make_mask_tree(tmp_path / "ds")
    images = root / "train" / "images"
    add_person(images, "000011_robot_Asian_33")
    add_person(images, "person twelve")
    add_person(images, "000013_male_Asian_999")
    index = datasets.scan(root)
    assert sorted(kinds(index)["bad_folder_name"]) == [
        "train/images/000011_robot_Asian_33",
        "train/images/000013_male_Asian_999",
        "train/images/person twelve",
    ]
    assert len(index.frame) == 21


def test_broken_files_reported_and_left_out(tmp_path):
    root = make_mask_tree(tmp_path / "ds")
    person = root / "train" / "images" / "000001_female_Asian_45"
    write(person / "mask4.jpg", b"")  # zero-byte
    full = jpeg_bytes((64, 64), quality=95)
    write(person / "mask5.jpg", full[: len(full) // 2])  # truncated
    write(person / "normal.jpg", b"not an image at all")  # non-image content
    write(person / "incorrect_mask.jpg", raw_png(40000, 40000, 8, 2))  # bomb (PNG named .jpg)
    write(person / "notes.txt", b"hello")  # non-image file
    write(person / "mask9.jpg", jpeg_bytes())  # unexpected photo name
    index = datasets.scan(root)
    problems = kinds(index)
    base = "train/images/000001_female_Asian_45/"
    assert problems["empty"] == [base + "mask4.jpg"]
    assert problems["truncated"] == [base + "mask5.jpg"]
    assert sorted(problems["not_image"]) == sorted([base + "normal.jpg", base + "notes.txt"])
    assert problems["bomb"] == [base + "incorrect_mask.jpg"]
    assert problems["unexpected_file"] == [base + "mask9.jpg"]
    assert (index.frame["group"] == "000001_female_Asian_45").sum() == 3
    kept = set(index.frame[index.frame["group"] == "000001_female_Asian_45"]["photo"])
    assert kept == {"mask1", "mask2", "mask3"}


def test_exif_rotation_honoured_in_sizes(tmp_path):
    root = make_mask_tree(tmp_path / "ds")
    write(root / "train/images/000001_female_Asian_45/mask1.jpg", jpeg_bytes((40, 30), orientation=6))
    frame = datasets.scan(root).frame
    row = frame[frame["rel"].str.endswith("000001_female_Asian_45/mask1.jpg")].iloc[0]
    assert (row["width"], row["height"]) == (30, 40)


def test_eval_rows_whose_file_is_absent(tmp_path):
    ids = ["c" * 40 + ".jpg", "d" * 40 + ".jpg"]
    root = make_mask_tree(tmp_path / "ds", eval_ids=ids, missing_eval=("e" * 40 + ".jpg", "../../secret.jpg"))
    ev = datasets.scan_eval(root / "eval")
    assert list(ev.frame["ImageID"]) == [*ids, "e" * 40 + ".jpg", "../../secret.jpg"]
    assert list(ev.frame["exists"]) == [True, True, False, False]
    assert ev.missing == ["e" * 40 + ".jpg", "../../secret.jpg"]
    assert {p.kind for p in ev.problems} == {"eval_missing", "outside_root"}
    assert datasets.scan_eval(root).root == (root / "eval").resolve()  # the top folder works too


@pytest.mark.parametrize("linked", ["eval", "eval/images", "eval/info.csv"])
def test_an_eval_folder_linked_from_outside_the_root_is_not_read(tmp_path, linked):
    outside = make_mask_tree(tmp_path / "elsewhere")
    root = make_mask_tree(tmp_path / "ds")
    target = root / linked
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    os.symlink(outside / linked, target)
    assert datasets.scan(root).eval is None


def test_eval_image_id_with_a_nul_byte_is_refused(tmp_path):
    root = make_mask_tree(tmp_path / "ds")
    with open(root / "eval" / "info.csv", "a") as fh:
        fh.write("x\x00.jpg,0\n")
    ev = datasets.scan_eval(root / "eval")
    assert ev.missing == ["x\x00.jpg"] and ev.frame["exists"].tolist() == [True, False]
    assert [p.kind for p in ev.problems] == ["outside_root"] and "\x00" not in ev.problems[0].path


def test_train_csv_listing_a_folder_that_is_gone(tmp_path):
    root = make_mask_tree(tmp_path / "ds")
    with open(root / "train" / "train.csv", "a") as fh:
        fh.write("000099,male,Asian,40,000099_male_Asian_40\n")
    assert kinds(datasets.scan(root))["missing_folder"] == ["train/train.csv"]


def test_symlinks_out_of_root_refused(tmp_path):
    outside = tmp_path / "outside"
    add_person(outside, "000050_male_Asian_40")
    write(outside / "secret.jpg", jpeg_bytes())
    root = make_mask_tree(tmp_path / "ds")
    images = root / "train" / "images"
    os.symlink(outside / "000050_male_Asian_40", images / "000050_male_Asian_40")
    os.symlink(outside / "secret.jpg", images / "000001_female_Asian_45" / "mask9.jpg")
    os.symlink(outside / "000050_male_Asian_40" / "normal.jpg", images / "000002_male_Asian_25" / "normal.jpg.lnk")
    index = datasets.scan(root)
    problems = kinds(index)
    assert "train/images/000050_male_Asian_40" in problems["outside_root"]
    assert "train/images/000001_female_Asian_45/mask9.jpg" in problems["outside_root"]
    assert not index.frame["path"].str.startswith(str(outside.resolve())).any()
    assert len(index.frame) == 21


def test_symlink_inside_root_followed(tmp_path):
    root = tmp_path / "cls"
    write(root / "cat" / "a.jpg", jpeg_bytes())
    (root / "dog").mkdir()
    os.symlink(root / "cat" / "a.jpg", root / "dog" / "b.jpg")
    index = datasets.scan(root)
    assert len(index.frame) == 2 and index.problems == []


# --- class folders -------------------------------------------------------------------------------


def test_image_folder_classes_empty_class_and_stray_files(tmp_path):
    root = tmp_path / "cls"
    for name, n in [("cat", 3), ("dog", 2)]:
        for i in range(n):
            write(root / name / f"{i}.jpg", jpeg_bytes())
    write(root / "dog" / "nested" / "deep.png", png_bytes(Image.new("RGB", (4, 4))))
    (root / "empty").mkdir()
    write(root / "loose.jpg", jpeg_bytes())
    write(root / "._cat", b"junk")
    index = datasets.scan(root)
    assert index.format == "imagefolder" and not index.has_attributes
    assert index.classes == ["cat", "dog"]
    assert list(index.frame.groupby("label").size()) == [3, 3]
    problems = kinds(index)
    assert problems["empty_class"] == ["empty"]
    assert problems["stray_file"] == ["loose.jpg"]
    assert index.summary()["attribute_counts"] == {}
    assert index.summary()["eval"] is None
    labels, names = index.task_labels("class")
    assert names == ["cat", "dog"] and labels.tolist() == index.frame["label"].tolist()
    with pytest.raises(DatasetError, match="mask-status"):
        index.task_labels("gender")


def test_single_class_dataset_scans(tmp_path):
    write(tmp_path / "only" / "one" / "a.jpg", jpeg_bytes())
    index = datasets.scan(tmp_path / "only")
    assert index.classes == ["one"] and len(index.frame) == 1


def test_symlink_loop_finishes(tmp_path):
    root = tmp_path / "cls"
    write(root / "cat" / "a.jpg", jpeg_bytes())
    os.symlink(root / "cat", root / "cat" / "loop")
    os.symlink(root, root / "cat" / "up")
    index = datasets.scan(root)
    assert len(index.frame) == 1
    assert "symlink_loop" in kinds(index)


def test_unicode_and_spaces_in_names(tmp_path):
    root = tmp_path / "my data"
    write(root / "chat noir é" / "写真 (1).jpg", jpeg_bytes())
    write(root / "<img src=x onerror=alert(1)>" / "a b.jpg", jpeg_bytes())
    index = datasets.scan(root)
    assert index.classes == ["<img src=x onerror=alert(1)>", "chat noir é"]
    assert "chat noir é/写真 (1).jpg" in set(index.frame["rel"])


# --- CSV manifests --------------------------------------------------------------------------------


def make_csv_tree(root: Path, rows: list[str], header="path,label") -> Path:
    write(root / "imgs" / "a.jpg", jpeg_bytes())
    write(root / "imgs" / "b.jpg", jpeg_bytes())
    write(root / "imgs" / "c.png", png_bytes(Image.new("RGB", (5, 5))))
    write(root / "manifest.csv", ("\n".join([header, *rows]) + "\n").encode())
    return root / "manifest.csv"


def test_csv_manifest_as_file_or_folder(tmp_path):
    manifest = make_csv_tree(tmp_path / "m", ["imgs/a.jpg,10", "imgs/b.jpg,2", "imgs/c.png,10"])
    for given in (manifest, manifest.parent):
        index = datasets.scan(given)
        assert index.format == "csv"
        assert index.classes == ["2", "10"]  # numeric labels in numeric order
        assert len(index.frame) == 3 and index.problems == []
        assert index.manifest == manifest.resolve()


def test_csv_hostile_rows(tmp_path):
    outside = write(tmp_path / "secret.jpg", jpeg_bytes())
    inside_abs = (tmp_path / "m" / "imgs" / "b.jpg").resolve()
    manifest = make_csv_tree(
        tmp_path / "m",
        [
            "imgs/a.jpg,cat,x",
            "../secret.jpg,cat,x",
            f"{outside},cat,x",
            f"{inside_abs},dog,x",
            "imgs/a.jpg,dog,x",
            "imgs/nope.jpg,cat,x",
            ",cat,x",
            "manifest.csv,cat,x",
        ],
        header="path,label,comment",
    )
    index = datasets.scan(manifest)
    problems = kinds(index)
    assert problems["unknown_column"] == ["manifest.csv"]
    assert problems["outside_root"] == ["../secret.jpg", str(outside)]
    assert problems["duplicate"] == ["imgs/a.jpg"]
    assert problems["missing_file"] == ["imgs/nope.jpg"]
    assert "bad_row" in problems and "not_image" in problems
    assert sorted(index.frame["rel"]) == ["imgs/a.jpg", "imgs/b.jpg"]
    assert dict(zip(index.frame["rel"], index.frame["class_name"], strict=True)) == {
        "imgs/a.jpg": "cat",
        "imgs/b.jpg": "dog",
    }


def test_csv_missing_columns(tmp_path):
    manifest = make_csv_tree(tmp_path / "m", ["imgs/a.jpg"], header="file")
    with pytest.raises(DatasetError, match="path,label"):
        datasets.scan(manifest)
    with pytest.raises(DatasetError, match="path,label"):
        datasets.scan(manifest.parent / "imgs" / ".." / "manifest.csv")


def test_nul_byte_in_a_manifest_path_is_a_bad_row(tmp_path):
    manifest = make_csv_tree(tmp_path / "m", ["imgs/a.jpg,cat", "imgs/b\x00.jpg,cat", "imgs/c.png,d\x00g"])
    index = datasets.scan(manifest)
    problems = kinds(index)
    assert len(problems["bad_row"]) == 1 and "NUL" in index.problems[0].message
    assert "\x00" not in problems["bad_row"][0]  # the reported path is printable
    assert sorted(index.frame["rel"]) == ["imgs/a.jpg", "imgs/c.png"]


def test_problems_are_capped_keeping_the_first_and_counting_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_PROBLEMS", "5")
    rows = ["imgs/a.jpg,cat"] + [f"imgs/missing{i}.jpg,cat" for i in range(20)]
    index = datasets.scan(make_csv_tree(tmp_path / "m", rows))
    assert [p.path for p in index.problems] == [f"imgs/missing{i}.jpg" for i in range(5)]
    assert index.more_problems == 15
    summary = index.summary()
    assert len(summary["problems"]) == 5 and summary["more_problems"] == 15


def test_manifest_rows_are_capped_with_an_error_naming_file_and_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MANIFEST_MAX_ROWS", "10")
    assert len(datasets.scan(make_csv_tree(tmp_path / "ok", ["imgs/a.jpg,cat"] * 10)).frame) == 1
    manifest = make_csv_tree(tmp_path / "m", ["imgs/a.jpg,cat"] * 11)
    with pytest.raises(DatasetError, match=r"manifest\.csv.*10 rows.*WORKBENCH_MANIFEST_MAX_ROWS"):
        datasets.scan(manifest)


def test_manifest_ragged_rows_are_problems_not_a_failed_scan(tmp_path):
    manifest = make_csv_tree(tmp_path / "m", ["imgs/a.jpg,cat", "imgs/b.jpg,dog,extra,fields", "imgs/c.png"])
    index = datasets.scan(manifest)
    assert sorted(index.frame["rel"]) == ["imgs/a.jpg"]
    assert [p.kind for p in index.problems] == ["bad_row", "bad_row"]


def test_csv_group_column(tmp_path):
    manifest = make_csv_tree(tmp_path / "m", ["imgs/a.jpg,x,p1", "imgs/b.jpg,y,p1"], header="path,label,group")
    assert set(datasets.scan(manifest).frame["group"]) == {"p1"}


# --- errors and verification ---------------------------------------------------------------------


def test_missing_and_empty_roots(tmp_path):
    with pytest.raises(DatasetError, match="no such"):
        datasets.scan(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        datasets.scan(tmp_path / "empty")
    write(tmp_path / "broken" / "cls" / "a.jpg", b"")
    with pytest.raises(DatasetError, match="no usable images"):
        datasets.scan(tmp_path / "broken")


def test_verify_decodes_everything_with_progress(tmp_path):
    root = make_mask_tree(tmp_path / "ds")
    bad = root / "train/images/000002_male_Asian_25/mask3.png"
    write(bad, corrupt_png_data(png_bytes(Image.new("RGB", (12, 16), (5, 6, 7)))))
    assert len(datasets.scan(root).frame) == 21  # the header and end marker look fine
    calls = []
    index = datasets.scan(root, verify=True, progress=lambda done, total: calls.append((done, total)))
    assert len(index.frame) == 20
    problem = next(p for p in index.problems if p.path.endswith("mask3.png"))
    assert problem.kind in {"undecodable", "truncated"}
    assert calls[0] == (0, 21) and calls[-1] == (21, 21)


# --- page helpers ----------------------------------------------------------------------------------


def test_distributions_and_tables(tmp_path):
    index = datasets.scan(make_mask_tree(tmp_path / "ds"))
    dist = stats.class_distribution(index)
    assert len(dist) == 18 and dist["images"].sum() == 21
    assert stats.imbalance_ratio(index) == float("inf")  # some of the 18 classes are empty
    table = stats.gender_age_table(index)
    assert table.loc["Female", "30-59"] == 1 and table.loc["Male", "<30"] == 1 and table.loc["Male", "60+"] == 1
    assert stats.gender_age_table(index, unit="images").to_numpy().sum() == 21
    mask = stats.attribute_distribution(index, "mask")
    assert mask.to_dict() == {"Wear": 15, "Incorrect": 3, "Not wear": 3}
    assert index.summary()["attribute_counts"]["gender"] == {"Male": 14, "Female": 7}
    sizes = stats.size_table(index)
    assert sizes.iloc[0].tolist() == [12, 16, 21]
    labels, names = index.task_labels("gender")
    assert names == ["Male", "Female"] and set(labels.tolist()) == {0, 1}


def test_channel_stats_on_solid_colours(tmp_path):
    root = tmp_path / "cls"
    for i in range(4):
        write(root / "a" / f"{i}.png", png_bytes(Image.new("RGB", (32, 32), (255, 0, 51))))
    measured = stats.channel_stats(datasets.scan(root), sample=10, seed=1)
    assert measured["n"] == 4
    assert np.allclose(measured["mean"], [1.0, 0.0, 0.2], atol=0.01)
    assert np.allclose(measured["std"], [0, 0, 0], atol=0.01)


def test_demo_dataset_scans_clean(demo_root):
    index = datasets.scan(demo_root)
    assert index.format == "mask"
    assert len(index.frame) == 14 * 7
    assert index.problems == []
    assert index.eval is not None and index.eval.missing == [] and len(index.eval.frame) == 4 * 7
