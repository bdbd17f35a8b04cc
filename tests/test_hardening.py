"""Hardening, round two: resource limits checked before the work, bounded caches, exact names, safe writes."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import cachebudget, fsutil, runs
from core.data import archive, images, thumbnails
from core.data.archive import ArchiveLimits, extract_dataset_zip
from core.errors import ArchiveError, ImageError, RunError
from core.evaluation import submission
from core.runs import folder as runfolder
from core.runs import jobs

# ---- (2) zip entry count read from the end-of-central-directory record -------------------------------


def small_zip(path: Path, count: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"c/{i}.jpg", b"x")
    return path


def forge_eocd_count(path: Path, count: int) -> None:
    """Rewrite both entry counts of the end-of-central-directory record (the directory itself is untouched)."""
    data = bytearray(path.read_bytes())
    pos = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, pos + 8, count, count)
    path.write_bytes(bytes(data))


def add_zip64_eocd(path: Path, count: int) -> None:
    """Insert a zip64 end record (and its locator) claiming ``count`` entries; the classic record defers to it."""
    data = bytearray(path.read_bytes())
    pos = data.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", data, pos + 12)
    zip64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, pos, 1)
    eocd = bytearray(data[pos:])
    struct.pack_into("<HH", eocd, 8, 0xFFFF, 0xFFFF)
    path.write_bytes(bytes(data[:pos]) + zip64 + locator + bytes(eocd))


def forbid_zipfile(monkeypatch) -> None:
    """From now on, fail the test if an archive is handed to zipfile (which loads the whole directory)."""

    def refuse(*args, **kwargs):
        pytest.fail("zipfile.ZipFile was constructed before the member count was checked")

    monkeypatch.setattr(zipfile, "ZipFile", refuse)


def test_too_many_members_refused_before_zipfile_reads_the_directory(tmp_path, monkeypatch):
    src = small_zip(tmp_path / "many.zip", 6)
    limits = ArchiveLimits(max_members=5, max_bytes=1 << 20, max_ratio=50)
    forbid_zipfile(monkeypatch)
    with pytest.raises(ArchiveError, match=r"6 members.*limit of 5"):
        extract_dataset_zip(src, tmp_path / "data", "upload", limits)
    with pytest.raises(ArchiveError, match=r"6 members.*limit of 5"):  # an upload's file object too
        extract_dataset_zip(io.BytesIO(src.read_bytes()), tmp_path / "data", "upload", limits)
    assert not (tmp_path / "data" / "upload").exists()


def test_a_forged_eocd_count_is_refused_by_its_claim(tmp_path, monkeypatch):
    src = small_zip(tmp_path / "forged.zip", 2)
    forge_eocd_count(src, 65_000)
    forbid_zipfile(monkeypatch)
    with pytest.raises(ArchiveError, match=r"65000 members.*limit of 50"):
        extract_dataset_zip(src, tmp_path / "data", "upload", ArchiveLimits(50, 1 << 20, 50))


def test_a_zip64_eocd_count_is_read(tmp_path, monkeypatch):
    src = small_zip(tmp_path / "z64.zip", 2)
    add_zip64_eocd(src, 1_000_000)
    forbid_zipfile(monkeypatch)
    with pytest.raises(ArchiveError, match=r"1000000 members.*limit of 50"):
        extract_dataset_zip(src, tmp_path / "data", "upload", ArchiveLimits(50, 1 << 20, 50))


def test_a_count_forged_low_is_caught_by_counting_the_directory(tmp_path, monkeypatch):
    # zipfile ignores the declared count and parses the whole directory: the real entries are counted.
    src = small_zip(tmp_path / "low.zip", 6)
    forge_eocd_count(src, 1)
    forbid_zipfile(monkeypatch)
    with pytest.raises(ArchiveError, match=r"more than the limit of 5"):
        extract_dataset_zip(src, tmp_path / "data", "upload", ArchiveLimits(5, 1 << 20, 50))


def test_a_zip64_archive_within_the_limit_still_unpacks(tmp_path):
    src = small_zip(tmp_path / "z64.zip", 2)
    add_zip64_eocd(src, 2)
    dest = extract_dataset_zip(src, tmp_path / "data", "upload", ArchiveLimits(50, 1 << 20, 50))
    assert sorted(p.name for p in (dest / "c").iterdir()) == ["0.jpg", "1.jpg"]


# ---- (15) a second upload with the same folder name -------------------------------------------------------


def test_a_folder_made_by_a_concurrent_upload_is_a_clear_error(tmp_path, monkeypatch):
    src = small_zip(tmp_path / "ok.zip", 2)
    parent = tmp_path / "data"
    real = archive._dataset_folder

    def other_upload_finishes_first(tmp: Path) -> Path:
        (parent / "upload" / "c").mkdir(parents=True)
        (parent / "upload" / "c" / "theirs.jpg").write_bytes(b"theirs")
        return real(tmp)

    monkeypatch.setattr(archive, "_dataset_folder", other_upload_finishes_first)
    with pytest.raises(ArchiveError, match=r"upload.*already exists"):
        extract_dataset_zip(src, parent, "upload", ArchiveLimits(50, 1 << 20, 50))
    assert sorted(p.name for p in parent.iterdir()) == ["upload"], "the temp folder is gone"
    assert (parent / "upload" / "c" / "theirs.jpg").read_bytes() == b"theirs"


# ---- (13) names with a trailing newline -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x\n", "run-1\n", "ok\nok"])
def test_run_ids_with_a_newline_are_refused(tmp_path, name):
    with pytest.raises(RunError):
        runs.validate_run_id(name)
    with pytest.raises(RunError):
        runs.create_run_folder(tmp_path, name)


def test_upload_folder_names_never_keep_a_newline():
    assert archive.validate_folder_name("data\n") == "data"
    with pytest.raises(ArchiveError):
        archive.validate_folder_name("da\nta")
    assert archive.NAME_RE.fullmatch("data\n") is None


def test_submission_answers_must_be_ascii_digits(tmp_path):
    info = tmp_path / "info.csv"
    info.write_text("ImageID,ans\na.jpg,0\nb.jpg,0\n")
    sub = tmp_path / "submission.csv"
    sub.write_text("ImageID,ans\na.jpg,\u0663\nb.jpg,1\n")  # ARABIC-INDIC DIGIT THREE: int() accepts it
    problems = submission.validate_submission(sub, info)
    assert any("not integers" in p and "a.jpg" in p for p in problems)


# ---- (15) atomic writes: ordinary permissions, the folder synced -------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_write_gives_a_new_file_the_umask_mode(tmp_path, umask_022):
    path = tmp_path / "new.json"
    fsutil.atomic_write_json(path, {"a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.umask(0o027)
    other = tmp_path / "other.txt"
    fsutil.atomic_write_text(other, "x")
    assert stat.S_IMODE(other.stat().st_mode) == 0o640


def test_atomic_write_keeps_an_existing_files_mode(tmp_path, umask_022):
    path = tmp_path / "shared.txt"
    path.write_text("old")
    path.chmod(0o664)
    fsutil.atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o664


def test_atomic_write_syncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    fsutil.atomic_write_bytes(tmp_path / "a.bin", b"data")
    assert synced == ["file", "dir"]


# ---- (8) ids a spreadsheet would run as formulas ------------------------------------------------------------


FORMULA_IDS = ["=1+1.jpg", "+a.jpg", "-b.jpg", "@c.jpg", "plain.jpg"]


def test_formula_warnings_name_the_ids():
    frame = pd.DataFrame({"ImageID": FORMULA_IDS, "ans": [0] * 5})
    warnings = submission.formula_warnings(frame)
    assert len(warnings) == 1
    assert "4 ImageID(s)" in warnings[0] and "'=1+1.jpg'" in warnings[0] and "plain.jpg" not in warnings[0]
    assert submission.formula_warnings(frame.iloc[4:]) == []


def test_validate_submission_cli_warns_about_formula_ids(tmp_path, capsys):
    from core.__main__ import main

    info = tmp_path / "info.csv"
    pd.DataFrame({"ImageID": FORMULA_IDS, "ans": [0] * 5}).to_csv(info, index=False)
    sub = tmp_path / "submission.csv"
    submission.write_submission(pd.DataFrame({"ImageID": FORMULA_IDS, "ans": [1] * 5}), sub)
    assert sub.read_text().splitlines()[1] == "=1+1.jpg,1", "ids are written exactly"
    assert main(["validate-submission", str(sub), "--info", str(info)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "warning:" in out and "'=1+1.jpg'" in out
    assert submission.submission_warnings(sub) == submission.formula_warnings(pd.read_csv(sub, dtype=str))


# ---- (3) 16-bit PNGs: decoded bytes capped, converted at the smallest size ------------------------------------


def png16(path: Path, h: int, w: int) -> Path:
    ramp = (np.add.outer(np.arange(h), np.arange(w)) * 16 % 65536).astype(np.uint16)
    Image.fromarray(ramp).save(path, "PNG")
    return path


def test_a_16bit_png_over_the_byte_cap_is_a_bomb(tmp_path, monkeypatch):
    deep = png16(tmp_path / "deep.png", 100, 100)  # 20,000 decoded bytes at 16 bits
    flat = tmp_path / "flat.png"
    Image.new("L", (100, 100), 7).save(flat)  # 10,000 decoded bytes
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 15_000)
    for call in (images.read_header, images.open_rgb, images.verify):
        with pytest.raises(ImageError) as info:
            call(deep)
        assert info.value.kind == "bomb" and "bytes" in str(info.value)
    assert images.open_rgb(flat).size == (100, 100)


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_16bit_png_thumbnail_never_holds_a_full_int32_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    path = png16(tmp_path / "big16.png", 2000, 2000)
    full_int32 = 2000 * 2000 * 4
    small = images.open_rgb(path, min_size=(100, 100))
    assert small.mode == "RGB" and 100 <= min(small.size) < 400
    assert peak_bytes(lambda: images.open_rgb(path, min_size=(100, 100))) < full_int32 // 4
    assert peak_bytes(lambda: thumbnails._make_thumbnail(path, 160, 80)) < full_int32 // 4
    # Even the full-size open converts in bounded slices instead of whole-image int64 arithmetic.
    assert peak_bytes(lambda: images.open_rgb(path)) < full_int32


def test_16bit_scaling_is_the_same_reduced_or_not(tmp_path):
    path = png16(tmp_path / "ramp.png", 64, 64)
    full = np.asarray(images.open_rgb(path), dtype=np.int16)
    ramp = np.add.outer(np.arange(64), np.arange(64)) * 16 * 255 // 65535
    assert np.abs(full[..., 0] - ramp).max() <= 1
    reduced = np.asarray(images.open_rgb(path, min_size=(16, 16)), dtype=np.int16)
    assert reduced.shape == (16, 16, 3)
    assert np.abs(reduced[..., 0] - ramp.reshape(16, 4, 16, 4).mean(axis=(1, 3))).max() <= 1


# ---- (12a) the thumbnail disk cache is bounded by bytes, least recently used out first ----------------------


def thumb_rows(cache: Path) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(cache / "thumbs" / "thumbs.sqlite3") as con:
        return dict(con.execute("SELECT key, length(data) FROM thumbs").fetchall())


def noisy_jpeg(path: Path, seed: int) -> Path:
    arr = (np.random.default_rng(seed).random((120, 90, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    return path


def test_thumbnail_disk_cache_evicts_least_recently_used_past_its_budget(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(cache))
    thumbnails.clear_thumbnail_memory()
    clock = iter(range(1_000, 100_000, 100))
    monkeypatch.setattr(thumbnails, "_now", lambda: next(clock))
    paths = [noisy_jpeg(tmp_path / f"{i}.jpg", i) for i in range(6)]
    sizes = [len(thumbnails.thumbnail_jpeg(p)) for p in paths[:4]]
    thumbnails.clear_thumbnail_memory()
    thumbnails.thumbnail_jpeg(paths[0])  # a disk hit: 0 is now more recent than 1, 2, 3
    assert len(thumb_rows(cache)) == 4

    budget = sum(sizes) - 1  # one thumbnail too many
    removed = thumbnails.trim_disk_cache(budget)
    assert removed >= 1
    kept = thumb_rows(cache)
    assert sum(kept.values()) <= budget and len(kept) == 3

    # The periodic check, as puts happen: the budget holds and the newest thumbnail stays.
    monkeypatch.setattr(thumbnails, "_disk_budget_bytes", lambda: budget)
    monkeypatch.setattr(thumbnails, "CHECK_EVERY_PUTS", 1)
    newest = thumbnails.thumbnail_jpeg(paths[5])
    assert sum(thumb_rows(cache).values()) <= budget
    thumbnails.clear_thumbnail_memory()
    monkeypatch.setattr(thumbnails, "_make_thumbnail", lambda *a: pytest.fail("the newest thumbnail was evicted"))
    assert thumbnails.thumbnail_jpeg(paths[5]) == newest
    assert thumbnails.thumbnail_jpeg(paths[0])  # recently used: kept


def test_thumbnail_cache_budget_comes_from_the_settings(monkeypatch):
    from core import settings

    assert settings.load().thumbnail_cache_mb == 512
    monkeypatch.setenv("WORKBENCH_THUMBNAIL_CACHE_MB", "64")
    assert settings.load().thumbnail_cache_mb == 64
    assert thumbnails._disk_budget_bytes() == 64 << 20


def test_an_old_thumbnail_cache_file_is_upgraded(tmp_path, monkeypatch):
    import sqlite3

    cache = tmp_path / "cache"
    (cache / "thumbs").mkdir(parents=True)
    with sqlite3.connect(cache / "thumbs" / "thumbs.sqlite3") as con:
        con.execute("CREATE TABLE thumbs (key TEXT PRIMARY KEY, data BLOB NOT NULL)")
        con.execute("INSERT INTO thumbs VALUES ('old', x'ffd8ffd9')")
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(cache))
    thumbnails.clear_thumbnail_memory()
    thumbnails._local.__dict__.clear()  # a fresh connection, as in a new process
    assert thumbnails.thumbnail_jpeg(noisy_jpeg(tmp_path / "a.jpg", 1))[:2] == b"\xff\xd8"
    assert len(thumb_rows(cache)) >= 1


# ---- (12b) summary.json: list_runs costs O(runs), not O(metric lines) ----------------------------------------


def make_run(models: Path, name: str) -> runs.RunFolder:
    run = runs.create_run_folder(models, name)
    runs.write_config(run, {"kind": "train", "model": "small_cnn", "task": "class"})
    runs.write_status(run, state="completed", step=30, total_steps=30, started_at=1.0, finished_at=2.0)
    return run


def test_append_metrics_keeps_the_summary_in_step(tmp_path):
    run = make_run(tmp_path, "r1")
    runs.append_metrics(run, {"step": 5, "epoch": 0, "train_loss": 1.0})
    assert runfolder.read_summary(run)["best_val_f1"] is None
    for step, f1, acc in [(10, 0.5, 0.6), (20, 0.7, 0.65), (30, 0.6, 0.8)]:
        runs.append_metrics(run, {"step": step, "epoch": step // 10, "val_f1": f1, "val_acc": acc})
    on_disk = json.loads(run.summary.read_text())
    assert on_disk == {
        "best_val_f1": 0.7,
        "best_val_f1_step": 20,
        "best_val_acc": 0.8,
        "best_val_acc_step": 30,
        "last_val_step": 30,
    }
    runs.truncate_metrics(run, after_step=15)  # a resume drops what came after its checkpoint
    assert runfolder.read_summary(run) == {
        "best_val_f1": 0.5,
        "best_val_f1_step": 10,
        "best_val_acc": 0.6,
        "best_val_acc_step": 10,
        "last_val_step": 10,
    }


def test_list_runs_reads_the_summary_not_the_metrics(tmp_path, monkeypatch):
    run = make_run(tmp_path, "r1")
    runs.append_metrics(run, {"step": 10, "epoch": 1, "val_f1": 0.42, "val_acc": 0.5})
    run.metrics.write_text("not json\n" * 1000)  # huge or damaged: must not be read
    for module in (runs, runfolder):
        monkeypatch.setattr(module, "read_metrics", lambda run: pytest.fail("metrics.jsonl was read"))
    frame = jobs.list_runs(tmp_path)
    assert frame.loc[frame["id"] == "r1", "best_val_f1"].item() == 0.42
    assert jobs.best_scores(run) == {"val_f1": 0.42, "val_acc": 0.5}
    run.metrics.unlink()
    assert jobs.list_runs(tmp_path).loc[0, "best_val_f1"] == 0.42


def test_an_old_run_without_a_summary_gets_one(tmp_path):
    run = make_run(tmp_path, "old")
    lines = [{"step": 10, "epoch": 1, "val_f1": 0.3, "val_acc": 0.4}, {"step": 20, "epoch": 2, "val_f1": 0.35}]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert not run.summary.exists()
    frame = jobs.list_runs(tmp_path)
    assert frame.loc[0, "best_val_f1"] == 0.35
    assert json.loads(run.summary.read_text())["best_val_f1_step"] == 20


# ---- (12c) a folder of cache files kept under a byte budget ----------------------------------------------------


def cache_file(folder: Path, name: str, size: int, used: float) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    os.utime(path, (used, used))
    return path


def test_cache_budget_removes_least_recently_used_files_first(tmp_path):
    now = time.time()
    a = cache_file(tmp_path, "a.u8", 400, now - 400)
    b = cache_file(tmp_path, "sub/b.u8", 400, now - 300)
    c = cache_file(tmp_path, "c.u8", 400, now - 200)
    d = cache_file(tmp_path, "d.u8", 400, now - 100)
    result = cachebudget.enforce_budget(tmp_path, max_bytes=900, protected=[a])
    assert set(result.removed) == {b, c}, "oldest first, the protected file kept"
    assert result.freed_bytes == 800 and result.kept_bytes == 800
    assert a.exists() and d.exists()
    assert not (tmp_path / "sub").exists(), "emptied folders go too"


def test_cache_budget_evicts_an_entrys_files_together_and_spares_fresh_files(tmp_path):
    now = time.time()
    old_data = cache_file(tmp_path, "k1.u8", 1000, now - 1000)
    old_meta = cache_file(tmp_path, "k1.json", 10, now - 60)  # rewritten lately: the entry counts as used then
    new_data = cache_file(tmp_path, "k2.u8", 1000, now - 100)
    building = cache_file(tmp_path, ".k3.abc.tmp", 1000, now)  # a build in progress
    result = cachebudget.enforce_budget(tmp_path, max_bytes=2100, group=cachebudget.by_stem, min_age_s=30)
    assert set(result.removed) == {new_data}, "k1 was used last (its meta file); the fresh temp file is spared"
    assert old_data.exists() and old_meta.exists() and building.exists()
    result = cachebudget.enforce_budget(tmp_path, max_bytes=1000, group=cachebudget.by_stem, min_age_s=30)
    assert set(result.removed) == {old_data, old_meta}


def test_cache_budget_on_a_missing_folder_is_a_no_op(tmp_path):
    result = cachebudget.enforce_budget(tmp_path / "absent", max_bytes=0)
    assert result.removed == [] and result.kept_bytes == 0


def test_touch_used_marks_a_file_used_without_changing_its_mtime(tmp_path):
    path = cache_file(tmp_path, "x.u8", 10, 1_000_000)
    cachebudget.touch_used(path)
    st = path.stat()
    assert st.st_mtime == 1_000_000 and st.st_atime > 1_000_000


def test_saved_pair_names_with_a_trailing_newline_are_refused(tmp_path):
    from core.errors import SpecError
    from core.specs import saved

    with pytest.raises(SpecError, match="not a usable name"):
        saved.check_pair_name("pair\n")
    assert saved.check_pair_name("pair") == "pair"


def test_decoded_caches_are_evicted_least_recently_used_first(tmp_path, monkeypatch):
    from core.specs import transforms
    from core.training import loader

    photos = tmp_path / "photos"
    photos.mkdir()
    paths = []
    for i in range(4):
        Image.new("RGB", (48, 64), (40 * i, 90, 160)).save(photos / f"{i}.jpg")
        paths.append(str(photos / f"{i}.jpg"))
    prefix = transforms.TransformSpec.parse([{"op": "Resize", "size": [32, 24]}])
    monkeypatch.setenv("WORKBENCH_DECODED_CACHE_MB", "0")  # any other cache is over budget
    loader.open_or_build_cache(paths[:2], prefix, (32, 24), tmp_path / "cache")
    old = sorted((tmp_path / "cache" / "decoded").iterdir())
    assert len(old) == 2
    hour_ago = time.time() - 3600
    for f in old:
        os.utime(f, (hour_ago, hour_ago))
    loader.open_or_build_cache(paths[2:], prefix, (32, 24), tmp_path / "cache")
    left = sorted((tmp_path / "cache" / "decoded").iterdir())
    assert len(left) == 2 and not set(old) & set(left)  # the old entry went, the one just built stayed
