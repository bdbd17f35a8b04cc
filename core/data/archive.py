"""Unpack a user-uploaded dataset zip into a fresh folder, safely and within limits.

An upload is untrusted. ``extract_dataset_zip`` first reads the member count from the end-of-central-
directory record (zip64's when present) and counts the directory's entries itself, without parsing
them, so an archive of millions of tiny entries is refused before ``zipfile`` loads its directory
(a 53 MB zip of 1,000,000 entries cost 406 MB and 8 s inside ``zipfile.ZipFile`` before the count
could be checked). Then it reads the archive's central directory and refuses the whole archive, before writing a byte, when a member would land outside the new folder (``../``,
absolute names, drive letters), is a symlink or another special file, is encrypted or duplicated,
or when the archive declares more members, more bytes or a higher compression ratio than the limits
allow. While writing it counts the bytes actually decompressed instead of trusting the declared
sizes (a forged header is caught by that count or by the CRC check). Everything is written into a
temp folder inside ``dest_parent`` and renamed to ``dest_parent/<name>`` only on success; on any
failure the temp folder is removed, so nothing is left behind. A folder of the same name that appears
meanwhile (a second upload) is never replaced: that upload is refused with a clear message.

Mac archive junk (``__MACOSX/``, ``._*`` AppleDouble twins, ``.DS_Store``) is skipped. An archive
whose files all sit in one top folder (``mydata/train/...``) has that folder hoisted, so the dataset
is found at ``dest_parent/<name>`` directly.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core import settings
from core.errors import ArchiveError

CHUNK = 1 << 20
# Members smaller than this are not ratio-checked one by one: a tiny, very regular file (a CSV of
# zeros) compresses enormously but cannot be a bomb. They still count towards the total ratio.
RATIO_FLOOR_BYTES = 1 << 20
JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,99}")  # always used with fullmatch
DRIVE_RE = re.compile(r"^[A-Za-z]:")
KEEP_TOP_FOLDERS = frozenset({"train", "images", "eval"})  # part of the competition layout itself


@dataclass(frozen=True)
class ArchiveLimits:
    """What an upload may hold; the defaults come from the WORKBENCH_UPLOAD_* settings."""

    max_members: int = field(default_factory=lambda: settings.load().upload_max_members)  # entries in the zip
    max_bytes: int = field(default_factory=lambda: settings.load().upload_max_bytes)  # uncompressed bytes in all
    max_ratio: float = field(default_factory=lambda: settings.load().upload_max_ratio)  # uncompressed / compressed


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]  # safe relative path components
    is_dir: bool


def validate_folder_name(name: str) -> str:
    """The new dataset folder's name: one plain path component (letters, digits, ``._ -``)."""
    name = name.strip()
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ArchiveError(
            f"folder name {name!r} is not allowed; use letters, digits, '.', '_', '-' or spaces, "
            "starting with a letter or digit (at most 100 characters)"
        )
    return name


def _is_junk(parts: tuple[str, ...]) -> bool:
    return parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1] in JUNK_NAMES


def _safe_parts(name: str) -> tuple[str, ...]:
    """The member name's path components, or ArchiveError when it could leave the target folder."""
    if "\x00" in name:
        raise ArchiveError(f"archive member {name!r} has a NUL character in its name; the archive was refused")
    # Old Windows tools write backslashes; treat them as separators so "..\\x" is caught too.
    unified = name.replace("\\", "/")
    if unified.startswith("/") or DRIVE_RE.match(unified):
        raise ArchiveError(
            f"archive member {name!r} has an absolute name; the archive was refused "
            "(zip the dataset folder with relative paths)"
        )
    parts = tuple(p for p in PurePosixPath(unified).parts if p not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"archive member {name!r} would be written outside the new folder; the archive was refused")
    if not parts:
        raise ArchiveError(f"archive member {name!r} has an empty name; the archive was refused")
    return parts


def _check_kind(info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"archive member {info.filename!r} is a symbolic link; links are not accepted in uploads")
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveError(f"archive member {info.filename!r} is a special file; only files and folders are accepted")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"archive member {info.filename!r} is encrypted; upload an archive without a password")


# The zip records read before zipfile sees the archive (APPNOTE.TXT 4.3.12-4.3.16).
_EOCD = struct.Struct("<4s4H2LH")  # signature, disk, directory disk, entries here, entries, size, offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, offset of the zip64 record, disks
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # signature, size, versions, disks, entries here, entries, size, offset
_CENTRAL_HEADER = 46  # fixed part of a directory entry; name, extra and comment lengths at bytes 28..33
_MAX_COMMENT = 0xFFFF


@dataclass(frozen=True)
class _Directory:
    entries: int  # as the end record declares them
    start: int  # where the central directory begins in the file
    size: int


def _end_record(fh: BinaryIO) -> _Directory | None:
    """The end-of-central-directory record, zip64's when present; None when there is none (zipfile then
    says why the file is not a zip). The directory is placed as zipfile places it: just before the record."""
    file_size = fh.seek(0, os.SEEK_END)
    tail_len = min(file_size, _EOCD.size + _MAX_COMMENT)
    fh.seek(file_size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or len(tail) - pos < _EOCD.size:
        return None
    _sig, _disk, _cd_disk, here, total, size, _offset, _comment = _EOCD.unpack_from(tail, pos)
    end = file_size - tail_len + pos
    zip64_at = end - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size
    if zip64_at >= 0:
        fh.seek(end - _ZIP64_LOCATOR.size)
        locator = fh.read(_ZIP64_LOCATOR.size)
        fh.seek(zip64_at)
        record = fh.read(_ZIP64_EOCD.size)
        if locator[:4] == b"PK\x06\x07" and record[:4] == b"PK\x06\x06":
            fields = _ZIP64_EOCD.unpack(record)
            here, total, size, end = fields[6], fields[7], fields[8], zip64_at
    return _Directory(entries=max(here, total), start=end - size, size=size)


def _count_entries(fh: BinaryIO, directory: _Directory, stop_after: int) -> int:
    """Walk the directory's entry headers (skipping names, never parsing them), up to ``stop_after`` + 1.

    zipfile trusts the directory's byte size, not the declared count, so a count forged low is caught
    here. A damaged directory ends the walk: zipfile then gives the verdict.
    """
    fh.seek(max(0, directory.start))
    count = done = 0
    while done + _CENTRAL_HEADER <= directory.size and count <= stop_after:
        head = fh.read(_CENTRAL_HEADER)
        if len(head) < _CENTRAL_HEADER or head[:4] != b"PK\x01\x02":
            break
        skip = sum(struct.unpack_from("<3H", head, 28))
        fh.seek(skip, os.SEEK_CUR)
        done += _CENTRAL_HEADER + skip
        count += 1
    return count


def check_member_count(source: str | os.PathLike | BinaryIO, limits: ArchiveLimits) -> None:
    """Refuse an archive with more members than ``limits.max_members`` before zipfile reads its directory."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            return check_member_count(fh, limits)
    start = source.tell()
    try:
        directory = _end_record(source)
        if directory is None:
            return
        count = directory.entries
        if count <= limits.max_members:
            count = _count_entries(source, directory, limits.max_members)
            if count <= limits.max_members:
                return
            what = f"at least {count}"
        else:
            what = str(count)
    finally:
        source.seek(start)
    raise ArchiveError(
        f"the archive holds {what} members, more than the limit of {limits.max_members} "
        "(WORKBENCH_UPLOAD_MAX_MEMBERS); the archive was refused"
    )


def _ratio(uncompressed: int, compressed: int) -> float:
    return uncompressed / max(compressed, 1)


def plan_members(zf: zipfile.ZipFile, limits: ArchiveLimits) -> list[_Member]:
    """Check the whole central directory against the rules and limits; return the members to write."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise ArchiveError(
            f"the archive holds {len(infos)} members, more than the limit of {limits.max_members} "
            "(WORKBENCH_UPLOAD_MAX_MEMBERS)"
        )
    members: list[_Member] = []
    files: set[tuple[str, ...]] = set()
    folders: set[tuple[str, ...]] = set()
    total = compressed = 0
    for info in infos:
        parts = _safe_parts(info.filename)
        _check_kind(info)
        if _is_junk(parts):
            continue
        is_dir = info.is_dir()
        if not is_dir:
            if parts in files:
                raise ArchiveError(f"archive member {info.filename!r} appears twice; the archive was refused")
            files.add(parts)
            total += info.file_size
            compressed += info.compress_size
            if total > limits.max_bytes:
                raise ArchiveError(
                    f"the archive unpacks to more than {limits.max_bytes} bytes (limit reached at member "
                    f"{info.filename!r}; WORKBENCH_UPLOAD_MAX_BYTES)"
                )
            ratio = _ratio(info.file_size, info.compress_size)
            if info.file_size >= RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
                raise ArchiveError(
                    f"archive member {info.filename!r} has a compression ratio of {ratio:.0f}, above the limit "
                    f"of {limits.max_ratio:g} (WORKBENCH_UPLOAD_MAX_RATIO); it looks like a zip bomb"
                )
        folders.update(parts[:k] for k in range(1, len(parts) if not is_dir else len(parts) + 1))
        members.append(_Member(info, parts, is_dir))
    if total >= RATIO_FLOOR_BYTES and _ratio(total, compressed) > limits.max_ratio:
        raise ArchiveError(
            f"the archive as a whole has a compression ratio of {_ratio(total, compressed):.0f}, above the limit "
            f"of {limits.max_ratio:g} (WORKBENCH_UPLOAD_MAX_RATIO); it looks like a zip bomb"
        )
    clash = files & folders
    if clash:
        raise ArchiveError(f"archive member {'/'.join(sorted(clash)[0])!r} is both a file and a folder")
    if not files:
        raise ArchiveError("the archive holds no files (only folders or Mac metadata)")
    return members


def _write_member(zf: zipfile.ZipFile, member: _Member, root: Path, limits: ArchiveLimits, written: int) -> int:
    """Stream one member to disk, counting real bytes; return the running total."""
    target = root.joinpath(*member.parts)
    if member.is_dir:
        target.mkdir(parents=True, exist_ok=True)
        return written
    target.parent.mkdir(parents=True, exist_ok=True)
    info = member.info
    size = 0
    with zf.open(info) as src, open(target, "xb") as dst:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            written += len(chunk)
            if size > info.file_size:
                raise ArchiveError(f"archive member {info.filename!r} unpacks to more bytes than it declares; refused")
            if written > limits.max_bytes:
                raise ArchiveError(
                    f"the archive unpacks to more than {limits.max_bytes} bytes (at member {info.filename!r}; "
                    "WORKBENCH_UPLOAD_MAX_BYTES)"
                )
            if size >= RATIO_FLOOR_BYTES and _ratio(size, info.compress_size) > limits.max_ratio:
                raise ArchiveError(
                    f"archive member {info.filename!r} exceeds the compression ratio limit of {limits.max_ratio:g} "
                    "(WORKBENCH_UPLOAD_MAX_RATIO); it looks like a zip bomb"
                )
            dst.write(chunk)
    return written


def _dataset_folder(tmp: Path) -> Path:
    """The extracted tree's dataset root: a lone top folder is hoisted unless it is the data itself."""
    entries = list(tmp.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in KEEP_TOP_FOLDERS:
        top = entries[0]
        if any(child.is_dir() for child in top.iterdir()):  # a lone folder of images is a class: keep it
            return top
    return tmp


def _move_into_place(folder: Path, dest: Path) -> None:
    """Rename the unpacked ``folder`` to ``dest``, refusing when ``dest`` appeared meanwhile.

    The name was free when the upload began, but a second upload with the same name may have finished
    first: rename(2) then fails on its non-empty folder (and would silently replace an empty one, so
    that case is refused as well).
    """
    if dest.exists() or dest.is_symlink():
        raise ArchiveError(f"{dest} already exists (another upload with the same name?); choose another folder name")
    try:
        os.rename(folder, dest)
    except OSError as err:
        if dest.exists() or dest.is_symlink():
            raise ArchiveError(
                f"{dest} already exists (another upload with the same name?); choose another folder name"
            ) from err
        raise ArchiveError(f"could not move the unpacked archive to {dest} ({err.strerror or err})") from err


def extract_dataset_zip(
    source: str | os.PathLike | BinaryIO,
    dest_parent: str | os.PathLike,
    name: str,
    limits: ArchiveLimits | None = None,
) -> Path:
    """Unpack the zip ``source`` (a path or a binary file object) into the new folder ``dest_parent/name``.

    Raises ArchiveError, naming the member and the limit, when the archive is refused; in that case
    nothing is left in ``dest_parent``. Returns the new folder's resolved path.
    """
    limits = limits or ArchiveLimits()
    name = validate_folder_name(name)
    parent = Path(dest_parent).resolve()
    parent.mkdir(parents=True, exist_ok=True)
    dest = parent / name
    if dest.exists() or dest.is_symlink():
        raise ArchiveError(f"{dest} already exists; choose another folder name")
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise ArchiveError(f"{source}: no such archive file")
    try:
        check_member_count(source, limits)
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, struct.error) as err:
        raise ArchiveError(f"the upload is not a readable zip archive ({err})") from err
    with zf:
        members = plan_members(zf, limits)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.extracting-", dir=parent))
        try:
            written = 0
            for member in members:
                try:
                    written = _write_member(zf, member, tmp, limits, written)
                except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as err:
                    raise ArchiveError(
                        f"archive member {member.info.filename!r} is damaged or unsupported ({err})"
                    ) from err
                except OSError as err:
                    raise ArchiveError(
                        f"archive member {member.info.filename!r} could not be written ({err.strerror or err})"
                    ) from err
            _move_into_place(_dataset_folder(tmp), dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # left over only when a top folder was hoisted
    return dest
