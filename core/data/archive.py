"""Unpack a user-uploaded dataset zip into a fresh folder, safely and within limits.

An upload is untrusted. ``extract_dataset_zip`` reads the archive's central directory and refuses the
whole archive, before writing a byte, when a member would land outside the new folder (``../``,
absolute names, drive letters), is a symlink or another special file, is encrypted or duplicated,
or when the archive declares more members, more bytes or a higher compression ratio than the limits
allow. While writing it counts the bytes actually decompressed instead of trusting the declared
sizes (a forged header is caught by that count or by the CRC check). Everything is written into a
temp folder inside ``dest_parent`` and renamed to ``dest_parent/<name>`` only on success; on any
failure the temp folder is removed, so nothing is left behind.

Mac archive junk (``__MACOSX/``, ``._*`` AppleDouble twins, ``.DS_Store``) is skipped. An archive
whose files all sit in one top folder (``mydata/train/...``) has that folder hoisted, so the dataset
is found at ``dest_parent/<name>`` directly.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
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
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,99}$")
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
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as err:
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
                    raise ArchiveError(f"archive member {member.info.filename!r} is damaged or unsupported ({err})") from err
                except OSError as err:
                    raise ArchiveError(f"archive member {member.info.filename!r} could not be written ({err.strerror or err})") from err
            os.rename(_dataset_folder(tmp), dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # left over only when a top folder was hoisted
    return dest
