"""core.data.roots: which dataset folders the app may offer and open (one rule: resolved once, kept
inside a data root, links pointing outside refused), and open_dataset's error-as-value result."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from core.data import datasets, roots
from core.errors import DatasetError, UnsafePathError
from tests.imagefactory import jpeg_bytes, write


def make_roots(tmp_path: Path) -> tuple[Path, Path]:
    """A data root with two datasets, a hidden folder, a file, an inside link and two outside links."""
    data = tmp_path / "data"
    write(data / "cats" / "cat" / "a.jpg", jpeg_bytes())
    write(data / "dogs" / "dog" / "a.jpg", jpeg_bytes())
    write(data / ".hidden" / "x" / "a.jpg", jpeg_bytes())
    write(data / "notes.txt", b"not a dataset")
    outside = tmp_path / "outside"
    write(outside / "secret" / "a.jpg", jpeg_bytes())
    os.symlink(outside, data / "escape")
    os.symlink("/", data / "disk")
    os.symlink(data / "cats", data / "cats-again")
    return data, outside


def test_list_datasets_keeps_inside_folders_and_refuses_links_out(tmp_path):
    data, _outside = make_roots(tmp_path)
    found = roots.list_datasets([data])
    assert found == [(data / "cats").resolve(), (data / "dogs").resolve()]  # the inside link is the same folder


def test_list_datasets_skips_missing_roots_and_accepts_links_between_roots(tmp_path):
    data, _outside = make_roots(tmp_path)
    other = tmp_path / "other"
    write(other / "birds" / "bird" / "a.jpg", jpeg_bytes())
    os.symlink(other / "birds", data / "birds-link")
    found = roots.list_datasets([data, other, tmp_path / "gone"])
    assert (other / "birds").resolve() in found and len(found) == 3


def test_resolve_dataset_by_name_or_path_inside_a_root(tmp_path):
    data, _outside = make_roots(tmp_path)
    assert roots.resolve_dataset("dogs", [data]) == (data / "dogs").resolve()
    assert roots.resolve_dataset(str(data / "cats"), [data]) == (data / "cats").resolve()
    assert roots.resolve_dataset("cats-again", [data]) == (data / "cats").resolve()
    assert roots.resolve_dataset("cats/cat", [data]) == (data / "cats" / "cat").resolve()


@pytest.mark.parametrize("given", ["escape", "disk", "../outside", "escape/secret", "/", "cats/../../outside"])
def test_resolve_dataset_refuses_paths_leading_outside(tmp_path, given):
    data, _outside = make_roots(tmp_path)
    with pytest.raises(UnsafePathError, match="data roots"):
        roots.resolve_dataset(given, [data])


def test_resolve_dataset_refuses_absolute_paths_outside_and_missing_ones(tmp_path, monkeypatch):
    data, outside = make_roots(tmp_path)
    with pytest.raises(UnsafePathError):
        roots.resolve_dataset(str(outside / "secret"), [data])
    monkeypatch.chdir(tmp_path)  # a relative path is never read against the working directory
    with pytest.raises(DatasetError, match="no such"):
        roots.resolve_dataset("outside", [data])
    with pytest.raises(DatasetError, match="no such"):
        roots.resolve_dataset("nope", [data])
    with pytest.raises(UnsafePathError):
        roots.resolve_dataset("", [data])


def test_open_dataset_returns_the_index_or_the_error(tmp_path):
    data, _outside = make_roots(tmp_path)
    (data / "empty").mkdir()
    index_dir = tmp_path / "index"
    opened = roots.open_dataset("cats", [data], index_dir=index_dir)
    assert isinstance(opened, datasets.DatasetIndex) and len(opened.frame) == 1
    for bad in ("empty", "escape", "nope"):
        result = roots.open_dataset(bad, [data], index_dir=index_dir)
        assert isinstance(result, DatasetError | UnsafePathError)
        copy = pickle.loads(pickle.dumps(result))  # a page caches it with st.cache_data
        assert type(copy) is type(result) and str(copy) == str(result)
