"""Issue 16, the last findings: transform specs with size limits and a byte-bounded preview cache (4),
``train --run`` never rewriting a locked run (9), bounded uploads and cache sizes shown (12), full-match
name patterns (13)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from core import cachebudget, runs
from core.errors import SpecError
from core.specs.spec import MAX_OUTPUT_PIXELS, MAX_OUTPUT_SIDE, MAX_STEPS, TransformSpec

# ---- 4: specs that cannot ask for gigabytes ------------------------------------------------------------


def test_a_spec_with_too_many_steps_is_refused():
    flip = {"op": "RandomHorizontalFlip"}
    assert len(TransformSpec.parse([flip] * MAX_STEPS)) == MAX_STEPS
    with pytest.raises(SpecError, match=rf"{MAX_STEPS + 1} steps.*at most {MAX_STEPS}"):
        TransformSpec.parse([flip] * (MAX_STEPS + 1))


def test_a_resize_beyond_the_side_limit_is_refused():
    with pytest.raises(SpecError, match=rf"step 1 \(Resize\).*size.*{MAX_OUTPUT_SIDE}"):
        TransformSpec.parse([{"op": "Resize", "size": [MAX_OUTPUT_SIDE + 1, 64]}])


def test_a_resize_beyond_the_pixel_limit_is_refused():
    side = MAX_OUTPUT_SIDE
    assert side * side > MAX_OUTPUT_PIXELS  # the pixel cap is the tighter one for square images
    with pytest.raises(SpecError, match=r"step 2 \(Resize\).*pixels"):
        TransformSpec.parse([{"op": "Resize", "size": [64, 64]}, {"op": "Resize", "size": [side, side]}])


def test_pads_that_add_up_past_the_side_limit_are_refused():
    pad = {"op": "Pad", "padding": 512}
    TransformSpec.parse([pad] * 3)  # 3072 pixels of border: allowed
    with pytest.raises(SpecError, match=r"step 4 \(Pad\).*4096×4096"):
        TransformSpec.parse([pad] * 8)  # no step-count trick: the sum of the borders is what counts


def test_growth_after_a_resize_counts_from_the_resized_size():
    resize = {"op": "Resize", "size": [3900, 2000]}
    TransformSpec.parse([resize, {"op": "Pad", "padding": 98}])  # 4096 high: the limit itself
    with pytest.raises(SpecError, match=r"step 3 \(RandomCrop\)"):
        TransformSpec.parse([resize, {"op": "Pad", "padding": 90}, {"op": "RandomCrop", "size": 64, "padding": 10}])


def test_ordinary_specs_still_parse():
    from core.specs import transforms

    for name in transforms.PRESETS:
        train, eval_ = transforms.preset(name)
        TransformSpec.parse(train)
        TransformSpec.parse(eval_)


def test_the_preview_cache_never_holds_more_than_its_byte_budget():
    from app.augment_ui import ByteBudgetCache

    cache = ByteBudgetCache(max_bytes=1000)
    calls = []

    def make(n: int):
        def compute():
            calls.append(n)
            return [np.zeros(400, np.uint8) + n]

        return compute

    for key in range(5):
        cache.get(key, make(key))
        assert cache.nbytes <= 1000
    assert cache.nbytes == 800 and len(cache) == 2
    assert cache.get(4, make(99))[0][0] == 4 and calls == [0, 1, 2, 3, 4]  # a hit: not computed again
    cache.get(3, make(3))  # 3 becomes the most recently used
    cache.get(5, make(5))  # evicts 4, the least recently used
    assert 4 not in cache and 3 in cache and 5 in cache
    too_big = cache.get("big", lambda: np.zeros(5000, np.uint8))  # returned, never kept
    assert too_big.nbytes == 5000 and "big" not in cache and cache.nbytes <= 1000


# ---- 9: train --run never writes a run another process is writing --------------------------------------


@pytest.fixture
def env(jobs_env):
    return jobs_env  # conftest: private models and cache folders, one job slot


def test_train_on_a_running_run_leaves_its_config_alone(env, capsys):
    from core.__main__ import main
    from core.training.config import TrainConfig

    run = runs.create_run_folder(env / "models", "busy")
    runs.write_config(run, {**TrainConfig(data=str(env / "data"), lr=0.01).to_dict(), "kind": "train"})
    before = run.config.read_bytes()
    fd = runs.lock_run_folder(run)  # what a running job holds
    runs.write_status(run, state="running", pid=os.getpid())
    try:
        code = main(["train", "--run", str(run.root), "--lr", "0.5"])
    finally:
        runs.unlock_run_folder(fd)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "already being written" in err
    assert run.config.read_bytes() == before


# ---- 12: uploads bounded, cache sizes reported ---------------------------------------------------------


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_cache_usage_reports_each_cache(tmp_path):
    _write(tmp_path / "thumbs" / "thumbs.sqlite3", 100)
    _write(tmp_path / "thumbs" / "thumbs.sqlite3-wal", 10)
    _write(tmp_path / "decoded" / "k1.u8", 200)
    _write(tmp_path / "decoded" / "k1.json", 5)
    _write(tmp_path / "uploads" / "a.png", 50)
    _write(tmp_path / "index" / "k.frame.parquet", 30)
    assert cachebudget.cache_usage(tmp_path) == {"thumbnails": 110, "decoded": 205, "uploads": 50, "index": 30}
    assert cachebudget.cache_usage(tmp_path / "missing") == {"thumbnails": 0, "decoded": 0, "uploads": 0, "index": 0}


def test_uploaded_images_stay_within_their_budget(env, monkeypatch):
    from app import augment_ui

    monkeypatch.setattr(augment_ui, "UPLOADS_BUDGET_BYTES", 2500)
    saved = []
    for i in range(5):
        saved.append(Path(augment_ui._save_upload(f"photo{i}.png", bytes([i]) * 1000)))
        assert saved[-1].is_file()  # the file just saved is never evicted
    folder = env / "cache" / "uploads"
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 2500
    assert not saved[0].exists()


# ---- 13: names with a trailing newline ------------------------------------------------------------------


def test_a_tag_pattern_needs_a_full_match():
    from core.runs import journal

    assert journal._TAG_OK.fullmatch("x")
    assert not journal._TAG_OK.fullmatch("x\n")
    assert journal.check_tag("x\n") == "x"  # check_tag strips outer whitespace: no newline is ever stored


@pytest.mark.parametrize("name", ["000001_male_Asian_45\n", "٠٠٠٠٠١_male_Asian_45", "000001_male_Asian_٤٥"])
def test_a_person_folder_name_must_match_whole_and_in_ascii_digits(tmp_path, name):
    from core.data import datasets

    assert datasets._looks_like_people(_people(tmp_path / "ok", "000001_male_Asian_45"))
    assert not datasets._looks_like_people(_people(tmp_path / "bad", name))


def _people(root: Path, name: str) -> Path:
    (root / name).mkdir(parents=True)
    return root
