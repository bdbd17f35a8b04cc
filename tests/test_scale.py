"""The persisted dataset index (core.data.index_store): a reopen reads no image header, a changed
folder is rescanned alone, a corrupt or foreign index is never trusted, a failed scan is remembered.

Work is counted (image headers read, manifest readings), never timed."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from core.data import datasets, images, index_store, tree
from core.errors import DatasetError
from tests.imagefactory import jpeg_bytes, write
from tests.test_datasets import PHOTOS, add_person, make_csv_tree, make_mask_tree


@pytest.fixture
def headers_read(monkeypatch) -> list[str]:
    """Paths whose image header the scan reads, in order."""
    calls: list[str] = []
    real = images.read_header

    def counted(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(images, "read_header", counted)
    return calls


def make_class_tree(root):
    for name, n in [("cat", 3), ("dog", 2)]:
        for i in range(n):
            write(root / name / f"{i}.jpg", jpeg_bytes())
    write(root / "dog" / "nested" / "deep.jpg", jpeg_bytes())
    write(root / "stray.jpg", jpeg_bytes())
    return root


def make_tree(kind: str, tmp_path):
    if kind == "mask":
        root = make_mask_tree(tmp_path / "ds", missing_eval=("z" * 40 + ".jpg",))
        add_person(root / "train" / "images", "000004_female_Asian_19", photos=PHOTOS[:-2])
        write(root / "train" / "images" / "000005_male_Asian_x" / "mask1.jpg", jpeg_bytes())
        return root
    if kind == "imagefolder":
        return make_class_tree(tmp_path / "cls")
    return make_csv_tree(tmp_path / "m", ["imgs/a.jpg,cat", "imgs/b.jpg,dog", "imgs/nope.jpg,cat"])


def assert_same_index(got: datasets.DatasetIndex, want: datasets.DatasetIndex) -> None:
    pd.testing.assert_frame_equal(got.frame, want.frame)
    assert got.classes == want.classes
    assert got.problems == want.problems and got.more_problems == want.more_problems
    assert (got.root, got.format, got.manifest, got.has_attributes) == (
        want.root,
        want.format,
        want.manifest,
        want.has_attributes,
    )
    assert (got.eval is None) == (want.eval is None)
    if want.eval is not None:
        pd.testing.assert_frame_equal(got.eval.frame, want.eval.frame)


@pytest.mark.parametrize("kind", ["mask", "imagefolder", "csv"])
def test_index_hit_returns_the_same_index_as_a_fresh_scan(tmp_path, headers_read, kind):
    root = make_tree(kind, tmp_path)
    index_dir = tmp_path / "index"
    built = datasets.scan(root, use_index=True, index_dir=index_dir)
    assert headers_read and list(index_dir.iterdir())
    headers_read.clear()
    reopened = datasets.scan(root, use_index=True, index_dir=index_dir)
    assert headers_read == []  # nothing but folder states was read
    fresh = datasets.scan(root)
    assert_same_index(built, fresh)
    assert_same_index(reopened, fresh)


def person_dir(root, name="000002_male_Asian_25"):
    return root / "train" / "images" / name


def test_changed_person_folder_is_rescanned_alone(tmp_path, headers_read):
    root = make_tree("mask", tmp_path)
    index_dir = tmp_path / "index"
    datasets.scan(root, use_index=True, index_dir=index_dir)

    changes = {
        "removed": lambda: (person_dir(root) / "normal.jpg").unlink(),
        "added": lambda: write(person_dir(root, "000001_female_Asian_45") / "mask1.png", jpeg_bytes()),
        "touched": lambda: os.utime(person_dir(root, "000003_male_Asian_60"), ns=(1, 10**18)),
    }
    changed_folders = {
        "removed": "000002_male_Asian_25",
        "added": "000001_female_Asian_45",
        "touched": "000003_male_Asian_60",
    }
    for what, change in changes.items():
        change()
        headers_read.clear()
        index = datasets.scan(root, use_index=True, index_dir=index_dir)
        assert headers_read, what
        assert {os.path.basename(os.path.dirname(p)) for p in headers_read} == {changed_folders[what]}, what
        assert_same_index(index, datasets.scan(root))


def test_a_changed_eval_folder_is_read_again(tmp_path):
    root = make_tree("mask", tmp_path)
    index_dir = tmp_path / "index"
    datasets.scan(root, use_index=True, index_dir=index_dir)
    with open(root / "eval" / "info.csv", "a") as fh:
        fh.write("y" * 40 + ".jpg,0\n")
    index = datasets.scan(root, use_index=True, index_dir=index_dir)
    assert len(index.eval.frame) == 3
    assert_same_index(index, datasets.scan(root))
    (root / "eval" / "images" / ("a" * 40 + ".jpg")).unlink()
    index = datasets.scan(root, use_index=True, index_dir=index_dir)
    assert ("a" * 40 + ".jpg") in index.eval.missing
    assert_same_index(index, datasets.scan(root))


def test_new_and_deleted_folders_and_class_order_after_an_incremental_scan(tmp_path, headers_read):
    root = make_tree("imagefolder", tmp_path)
    index_dir = tmp_path / "index"
    datasets.scan(root, use_index=True, index_dir=index_dir)
    write(root / "ant" / "0.jpg", jpeg_bytes())  # a new first class shifts every label
    shutil.rmtree(root / "cat")
    headers_read.clear()
    index = datasets.scan(root, use_index=True, index_dir=index_dir)
    assert headers_read == [str((root / "ant" / "0.jpg").resolve())]
    assert index.classes == ["ant", "dog"]
    assert_same_index(index, datasets.scan(root))


def test_a_change_in_a_nested_folder_is_seen(tmp_path, headers_read):
    root = make_tree("imagefolder", tmp_path)
    index_dir = tmp_path / "index"
    datasets.scan(root, use_index=True, index_dir=index_dir)
    write(root / "dog" / "nested" / "more.jpg", jpeg_bytes())  # the class folder's own mtime stays
    headers_read.clear()
    index = datasets.scan(root, use_index=True, index_dir=index_dir)
    assert headers_read and all("/dog/" in p for p in headers_read)
    assert_same_index(index, datasets.scan(root))


def test_rescan_reads_everything_again(tmp_path, headers_read):
    root = make_tree("mask", tmp_path)
    index_dir = tmp_path / "index"
    first = datasets.scan(root, use_index=True, index_dir=index_dir)
    headers_read.clear()
    again = datasets.scan(root, use_index=True, rescan=True, index_dir=index_dir)
    assert len(headers_read) == len(first.frame)
    assert_same_index(again, first)


DAMAGES = {
    "frame": lambda frame, ev, units, meta: frame.write_bytes(b"PAR1 not really parquet"),
    "truncated frame": lambda frame, ev, units, meta: frame.write_bytes(frame.read_bytes()[:100]),
    "eval frame": lambda frame, ev, units, meta: ev.write_bytes(ev.read_bytes()[:-30]),
    "units": lambda frame, ev, units, meta: units.write_text('{"token": "x", "units": ['),
    "unit values": lambda frame, ev, units, meta: units.write_text(
        units.read_text().replace('"000002_male_Asian_25", [[', '"000002_male_Asian_25", [[7, ')
    ),
    "meta": lambda frame, ev, units, meta: meta.write_text('{"version": 1, "root": 5'),
    "another write": lambda frame, ev, units, meta: meta.write_text(
        meta.read_text().replace('"token": "', '"token": "0')
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_corrupt_index_is_ignored_and_rebuilt(tmp_path, headers_read, damage):
    root = make_tree("mask", tmp_path)
    index_dir = tmp_path / "index"
    fresh = datasets.scan(root, use_index=True, index_dir=index_dir)
    files = index_store.IndexStore(index_dir).files_for(root.resolve())
    before = [f.read_bytes() for f in files]
    DAMAGES[damage](*files)
    assert [f.read_bytes() for f in files] != before
    headers_read.clear()
    rebuilt = datasets.scan(root, use_index=True, index_dir=index_dir)
    if damage == "unit values":  # only the unit whose stored state is damaged is read again
        assert {os.path.basename(os.path.dirname(p)) for p in headers_read} == {"000002_male_Asian_25"}
    else:
        assert len(headers_read) == len(fresh.frame)
    assert_same_index(rebuilt, fresh)
    headers_read.clear()
    datasets.scan(root, use_index=True, index_dir=index_dir)
    assert headers_read == []  # the rebuilt index is used again


def test_an_index_for_another_root_is_never_used(tmp_path, headers_read):
    a = make_class_tree(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)  # same names, same folder mtimes (copystat)
    index_dir = tmp_path / "index"
    datasets.scan(a, use_index=True, index_dir=index_dir)
    store = index_store.IndexStore(index_dir)
    for src, dst in zip(store.files_for(a.resolve()), store.files_for(b.resolve()), strict=True):
        if src.exists():
            shutil.copyfile(src, dst)  # a's index planted where b's would be
    headers_read.clear()
    index = datasets.scan(b, use_index=True, index_dir=index_dir)
    assert len(headers_read) == len(index.frame)
    assert index.frame["path"].str.startswith(str(b.resolve()) + os.sep).all()


def test_a_failed_scan_is_remembered_until_the_manifest_changes(tmp_path, monkeypatch):
    manifest = make_csv_tree(tmp_path / "m", [f"imgs/missing{i}.jpg,cat" for i in range(50)])
    readings = []
    real = tree.manifest_rows

    def counted(*args, **kwargs):
        readings.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tree, "manifest_rows", counted)
    index_dir = tmp_path / "index"
    for _ in range(2):
        with pytest.raises(DatasetError, match="no usable images"):
            datasets.scan(manifest, use_index=True, index_dir=index_dir)
    assert len(readings) == 1
    with open(manifest, "a") as fh:
        fh.write("imgs/a.jpg,cat\n")
    assert len(datasets.scan(manifest, use_index=True, index_dir=index_dir).frame) == 1
    assert len(readings) == 2


def test_a_refused_manifest_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MANIFEST_MAX_ROWS", "3")
    manifest = make_csv_tree(tmp_path / "m", ["imgs/a.jpg,cat"] * 5)
    readings = []
    real = tree.manifest_rows
    monkeypatch.setattr(tree, "manifest_rows", lambda *a, **k: readings.append(1) or real(*a, **k))
    for _ in range(2):
        with pytest.raises(DatasetError, match="WORKBENCH_MANIFEST_MAX_ROWS"):
            datasets.scan(manifest, use_index=True, index_dir=tmp_path / "index")
    assert len(readings) == 1


def test_indexes_of_vanished_roots_are_evicted(tmp_path):
    index_dir = tmp_path / "index"
    a, b = make_class_tree(tmp_path / "a"), make_class_tree(tmp_path / "b")
    datasets.scan(a, use_index=True, index_dir=index_dir)
    store = index_store.IndexStore(index_dir)
    a_files = [f for f in store.files_for(a.resolve()) if f.exists()]
    assert len(a_files) == 3  # frame, units, meta: a few files per dataset (no eval folder here)
    shutil.rmtree(a)
    datasets.scan(b, use_index=True, index_dir=index_dir)  # every save evicts
    assert not any(f.exists() for f in a_files)
    assert sorted(index_dir.iterdir()) == sorted(f for f in store.files_for(b.resolve()) if f.exists())


def test_the_index_is_bounded_in_count(tmp_path, monkeypatch):
    monkeypatch.setattr(index_store, "MAX_INDEXES", 2)
    index_dir = tmp_path / "index"
    made = [make_class_tree(tmp_path / name) for name in ("a", "b", "c")]
    for root in made:
        datasets.scan(root, use_index=True, index_dir=index_dir)
    store = index_store.IndexStore(index_dir)
    assert [store.files_for(r.resolve())[-1].exists() for r in made] == [False, True, True]
    assert len(list(index_dir.iterdir())) == 2 * 3


def test_memory_and_class_rows(tmp_path):
    index = datasets.scan(make_tree("imagefolder", tmp_path))
    assert index.memory_bytes() >= int(index.frame.memory_usage(deep=True).sum()) > 0
    dog = index.classes.index("dog")
    want = index.frame[index.frame["label"] == dog]
    pd.testing.assert_frame_equal(index.class_rows(dog), want)
    pd.testing.assert_frame_equal(index.class_rows(dog, 1, 2), want.iloc[1:2])
    assert index.class_rows(99).empty


def test_a_name_that_is_not_utf8_is_a_problem_not_a_crash(tmp_path):
    """A Latin-1 file name (from an old zip, say) made pandas' string column raise UnicodeEncodeError."""
    root = make_class_tree(tmp_path / "cls")
    write(root / "cat" / os.fsdecode(b"caf\xe9.jpg"), jpeg_bytes())
    write(root / os.fsdecode(b"\xe9t\xe9") / "a.jpg", jpeg_bytes())
    index_dir = tmp_path / "index"
    for _ in range(2):
        index = datasets.scan(root, use_index=True, index_dir=index_dir)
        assert len(index.frame) == 6
        assert {(p.kind, p.path) for p in index.problems if p.kind == "bad_name"} == {
            ("bad_name", "cat/caf\\xe9.jpg"),
            ("bad_name", "\\xe9t\\xe9"),
        }
    assert_same_index(index, datasets.scan(root))
    with pytest.raises(DatasetError, match="not valid UTF-8"):
        datasets.scan(root / os.fsdecode(b"\xe9t\xe9"))
