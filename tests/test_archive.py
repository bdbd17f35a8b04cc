"""Uploaded dataset zips: good archives unpack into a fresh folder, hostile ones are refused whole."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from core.data import archive
from core.data.archive import ArchiveLimits, extract_dataset_zip
from core.errors import ArchiveError

LIMITS = ArchiveLimits(max_members=50, max_bytes=20 << 20, max_ratio=50)


def patch_central(path: Path, member: str, offset: int, value: int, fmt: str = "<I") -> None:
    """Forge a field of ``member``'s central directory entry (the local header keeps the truth)."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + name_len] == member.encode():
            struct.pack_into(fmt, data, pos + offset, value)
        pos = data.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(data))


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def parent(tmp_path) -> Path:
    """The data root uploads land in, holding one existing dataset that must stay untouched."""
    root = tmp_path / "data"
    (root / "existing").mkdir(parents=True)
    (root / "existing" / "keep.txt").write_text("keep")
    return root


def assert_refused(tmp_path: Path, parent: Path, zip_source, match: str, limits=LIMITS) -> ArchiveError:
    """The archive is refused with a message matching ``match`` and nothing new exists anywhere."""
    before = tree(tmp_path)
    with pytest.raises(ArchiveError, match=match) as info:
        extract_dataset_zip(zip_source, parent, "upload", limits)
    assert tree(tmp_path) == before, "nothing written, no temp folder left"
    assert (parent / "existing" / "keep.txt").read_text() == "keep"
    return info.value


def jpeg_like(n: int = 2000) -> bytes:
    return bytes((i * 7919) % 251 for i in range(n))  # poorly compressible, like image data


# ------------------------------------------------------------------------------------- good archives


def test_dataset_in_a_single_top_folder_is_hoisted(tmp_path, parent):
    src = make_zip(
        tmp_path / "demo.zip",
        [
            ("mydata/train/train.csv", b"id,gender,race,age,path\n"),
            ("mydata/train/images/000001_male_Asian_20/mask1.jpg", jpeg_like()),
            ("mydata/eval/info.csv", b"ImageID,ans\n"),
            ("__MACOSX/mydata/train/._train.csv", b"\x00\x05\x16\x07junk"),
            ("mydata/train/images/._000001_male_Asian_20", b"\x00\x05\x16\x07junk"),
            ("mydata/.DS_Store", b"junk"),
        ],
    )
    out = extract_dataset_zip(src, parent, "upload", LIMITS)
    assert out == (parent / "upload").resolve()
    assert tree(out) == {
        "train",
        "train/train.csv",
        "train/images",
        "train/images/000001_male_Asian_20",
        "train/images/000001_male_Asian_20/mask1.jpg",
        "eval",
        "eval/info.csv",
    }
    assert (out / "train/images/000001_male_Asian_20/mask1.jpg").read_bytes() == jpeg_like()
    assert sorted(p.name for p in parent.iterdir()) == ["existing", "upload"]


def test_flat_archive_from_a_file_object_keeps_its_layout(tmp_path, parent):
    buf = io.BytesIO()
    make_zip(buf, [("cats/a.jpg", jpeg_like()), ("dogs/b.jpg", jpeg_like()), ("labels.csv", b"path,label\n")])
    buf.seek(0)
    out = extract_dataset_zip(buf, parent, "pets", LIMITS)
    assert tree(out) == {"cats", "cats/a.jpg", "dogs", "dogs/b.jpg", "labels.csv"}


def test_a_lone_class_folder_or_train_folder_is_not_hoisted(tmp_path, parent):
    out = extract_dataset_zip(
        make_zip(tmp_path / "a.zip", [("cats/a.jpg", b"x"), ("cats/b.jpg", b"y")]), parent, "a", LIMITS
    )
    assert tree(out) == {"cats", "cats/a.jpg", "cats/b.jpg"}
    src = make_zip(tmp_path / "b.zip", [("train/train.csv", b"x"), ("train/images/p/mask1.jpg", b"y")])
    assert (extract_dataset_zip(src, parent, "b", LIMITS) / "train" / "train.csv").is_file()


def test_backslash_names_from_old_windows_tools_become_folders(tmp_path, parent):
    out = extract_dataset_zip(
        make_zip(tmp_path / "w.zip", [("cats\\a.jpg", b"x"), ("dogs\\b.jpg", b"y")]), parent, "w", LIMITS
    )
    assert (out / "cats" / "a.jpg").read_bytes() == b"x"


def test_limits_default_to_the_settings(monkeypatch):
    monkeypatch.setenv("WORKBENCH_UPLOAD_MAX_MEMBERS", "3")
    monkeypatch.setenv("WORKBENCH_UPLOAD_MAX_BYTES", "1000")
    monkeypatch.setenv("WORKBENCH_UPLOAD_MAX_RATIO", "7")
    assert ArchiveLimits() == ArchiveLimits(max_members=3, max_bytes=1000, max_ratio=7)


def test_settings_limits_apply_when_none_are_given(tmp_path, parent, monkeypatch):
    monkeypatch.setenv("WORKBENCH_UPLOAD_MAX_MEMBERS", "2")
    src = make_zip(tmp_path / "m.zip", [(f"c/{i}.jpg", b"x") for i in range(3)])
    assert_refused(tmp_path, parent, src, r"3 members, more than the limit of 2", limits=None)


# ---------------------------------------------------------------------------------- refused requests


@pytest.mark.parametrize("name", ["", "..", ".", "a/b", "../x", ".hidden", "x" * 101, "a\\b", "/abs"])
def test_bad_folder_names_are_refused(tmp_path, parent, name):
    src = make_zip(tmp_path / "ok.zip", [("a.jpg", b"x")])
    with pytest.raises(ArchiveError, match="folder name"):
        extract_dataset_zip(src, parent, name, LIMITS)
    assert sorted(p.name for p in parent.iterdir()) == ["existing"]


def test_an_existing_folder_is_never_overwritten(tmp_path, parent):
    src = make_zip(tmp_path / "ok.zip", [("keep.txt", b"overwritten")])
    with pytest.raises(ArchiveError, match="already exists"):
        extract_dataset_zip(src, parent, "existing", LIMITS)
    assert (parent / "existing" / "keep.txt").read_text() == "keep"


def test_not_a_zip(tmp_path, parent):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip file at all")
    assert_refused(tmp_path, parent, bad, "not a readable zip")
    assert_refused(tmp_path, parent, tmp_path / "missing.zip", "no such archive")


# ----------------------------------------------------------------------------------- hostile archives


@pytest.mark.parametrize(
    ("member", "match"),
    [
        ("../evil.txt", "outside the new folder"),
        ("good/../../evil.txt", "outside the new folder"),
        ("..\\evil.txt", "outside the new folder"),
        ("/tmp/evil.txt", "absolute name"),
        ("\\evil.txt", "absolute name"),
        ("C:/evil.txt", "absolute name"),
        ("C:evil.txt", "absolute name"),
    ],
)
def test_members_escaping_the_target_are_refused(tmp_path, parent, member, match):
    # A good member first: the refusal must come before anything is written.
    src = make_zip(tmp_path / "evil.zip", [("ok/a.jpg", b"fine"), (member, b"owned")])
    err = assert_refused(tmp_path, parent, src, match)
    assert repr(member) in str(err)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_symlink_members_are_refused(tmp_path, parent):
    link = zipfile.ZipInfo("data/link.jpg")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    src = make_zip(tmp_path / "link.zip", [("data/a.jpg", b"x"), (link, b"/etc/passwd")])
    assert_refused(tmp_path, parent, src, r"'data/link.jpg' is a symbolic link")


def test_special_files_and_encrypted_members_are_refused(tmp_path, parent):
    fifo = zipfile.ZipInfo("data/fifo")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    assert_refused(tmp_path, parent, make_zip(tmp_path / "f.zip", [(fifo, b"")]), "special file")
    locked = make_zip(tmp_path / "e.zip", [("data/a.jpg", b"x")])
    patch_central(locked, "data/a.jpg", offset=8, value=0x1, fmt="<H")  # general purpose flag: encrypted
    assert_refused(tmp_path, parent, locked, "encrypted")


def test_duplicate_and_clashing_members_are_refused(tmp_path, parent):
    with pytest.warns(UserWarning, match="Duplicate name"):
        dup = make_zip(tmp_path / "d.zip", [("a/x.jpg", b"1"), ("a/x.jpg", b"2")])
    assert_refused(tmp_path, parent, dup, "appears twice")
    clash = make_zip(tmp_path / "c.zip", [("a/x", b"1"), ("a/x/y.jpg", b"2")])
    assert_refused(tmp_path, parent, clash, "both a file and a folder")


def test_too_many_members(tmp_path, parent):
    src = make_zip(tmp_path / "many.zip", [(f"c/{i}.jpg", b"x") for i in range(51)])
    assert_refused(tmp_path, parent, src, r"51 members, more than the limit of 50")


def test_too_many_bytes(tmp_path, parent):
    limits = ArchiveLimits(max_members=50, max_bytes=10_000, max_ratio=50)
    src = make_zip(tmp_path / "big.zip", [("c/a.jpg", jpeg_like(6000)), ("c/b.jpg", jpeg_like(6000))])
    err = assert_refused(tmp_path, parent, src, "more than 10000 bytes", limits)
    assert "'c/b.jpg'" in str(err)


def test_a_high_compression_ratio_is_refused(tmp_path, parent):
    src = make_zip(tmp_path / "bomb.zip", [("c/a.jpg", jpeg_like()), ("c/zeros.jpg", bytes(8 << 20))])
    assert_refused(tmp_path, parent, src, r"'c/zeros.jpg' has a compression ratio of \d+, above the limit of 50")


def test_a_high_total_ratio_from_many_small_members_is_refused(tmp_path, parent):
    # Each member is under the per-member floor, together they are a bomb.
    src = make_zip(tmp_path / "many.zip", [(f"c/{i}.bin", bytes(600_000)) for i in range(4)])
    assert_refused(tmp_path, parent, src, "as a whole has a compression ratio")


def test_declared_sizes_are_not_trusted(tmp_path, parent):
    # The header claims 100 bytes; the member really inflates to 4 MiB. Counting real bytes (or the CRC
    # check on the truncated stream) refuses it, after writing started: the temp folder must go.
    src = make_zip(tmp_path / "liar.zip", [("c/a.jpg", jpeg_like()), ("c/liar.jpg", bytes(4 << 20))])
    patch_central(src, "c/liar.jpg", offset=24, value=100)  # uncompressed size
    err = assert_refused(tmp_path, parent, src, "liar.jpg")
    assert "damaged" in str(err) or "more bytes than it declares" in str(err)


def test_a_failure_while_writing_removes_the_temp_folder(tmp_path, parent, monkeypatch):
    src = make_zip(tmp_path / "ok.zip", [("c/a.jpg", jpeg_like()), ("c/b.jpg", jpeg_like())])
    real = archive._write_member
    calls = []

    def disk_full(zf, member, root, limits, written):
        calls.append(member)
        if len(calls) == 2:  # after the first file was written
            raise OSError(28, "No space left on device")
        return real(zf, member, root, limits, written)

    monkeypatch.setattr(archive, "_write_member", disk_full)
    err = assert_refused(tmp_path, parent, src, "could not be written")
    assert "No space left" in str(err)
