"""Thumbnails: small upright JPEGs for galleries, cached in memory (bounded) and in one SQLite file.

Pages show pages of these rather than full photos (``st.image`` of many PIL images grows memory).
Images are opened through ``core.data.images``, the one place that decodes them.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import sqlite3
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw

from core.data.images import open_rgb, read_header
from core.errors import ImageError

THUMBNAIL_DRAFT_SLACK = 0.8  # see _make_thumbnail
_MEMORY_ENTRIES = 4096  # ~4 KB each: a bounded ~16 MB shared by every session of the app
_memory: OrderedDict[tuple, bytes] = OrderedDict()
_memory_lock = threading.Lock()


def _thumb_key(path: str | os.PathLike, max_side: int, quality: int) -> tuple:
    resolved = os.path.realpath(path)
    try:
        st = os.stat(resolved)
    except OSError as err:
        raise ImageError(os.fspath(path), "unreadable", f"cannot open ({err.strerror})") from err
    return (resolved, st.st_mtime_ns, st.st_size, int(max_side), int(quality))


def _cache_dir() -> Path:
    # settings.load() resolves every configured path (dozens of lstat calls): once per environment.
    return _cache_dir_for(os.environ.get("WORKBENCH_CACHE_DIR"), os.getcwd())


@lru_cache(maxsize=8)
def _cache_dir_for(_env: str | None, _cwd: str) -> Path:
    from core import settings

    return settings.load().cache_dir / "thumbs"


def thumbnail_jpeg(path: str | os.PathLike, max_side: int = 160, quality: int = 80) -> bytes:
    """Small upright JPEG bytes fitting in ``max_side`` x ``max_side``; cached in memory and on disk."""
    key = _thumb_key(path, max_side, quality)
    with _memory_lock:
        hit = _memory.get(key)
        if hit is not None:
            _memory.move_to_end(key)
            return hit
    digest = hashlib.sha1(repr(key).encode("utf-8", "surrogateescape")).hexdigest()
    db = _disk_cache(_cache_dir())
    data = _disk_get(db, digest)
    if data is None:
        data = _make_thumbnail(path, max_side, quality)
        _disk_put(db, digest, data)
    _remember(key, data)
    return data


def _remember(key: tuple, data: bytes) -> None:
    with _memory_lock:
        _memory[key] = data
        _memory.move_to_end(key)
        while len(_memory) > _MEMORY_ENTRIES:
            _memory.popitem(last=False)


def clear_thumbnail_memory() -> None:
    """Forget the in-memory thumbnails (the disk cache stays)."""
    with _memory_lock:
        _memory.clear()


# The disk cache is one SQLite file (WAL): inserting a 4 KB blob costs ~0.3 ms where creating a file
# per thumbnail cost ~2.5 ms on a busy disk, and readers in other threads and processes never block.
# It is best effort: an unwritable or damaged cache only costs speed, never the thumbnail.
_local = threading.local()


def _disk_cache(folder: Path) -> sqlite3.Connection | None:
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    con = conns.get(folder)
    if con is None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(folder / "thumbs.sqlite3", timeout=5, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("CREATE TABLE IF NOT EXISTS thumbs (key TEXT PRIMARY KEY, data BLOB NOT NULL)")
        except (sqlite3.Error, OSError):
            con = False  # remembered per thread: no disk cache in this folder
        conns[folder] = con
    return con or None


def _disk_get(db: sqlite3.Connection | None, digest: str) -> bytes | None:
    if db is None:
        return None
    try:
        row = db.execute("SELECT data FROM thumbs WHERE key = ?", (digest,)).fetchone()
    except sqlite3.Error:
        return None
    return bytes(row[0]) if row and bytes(row[0][-2:]) == b"\xff\xd9" else None


def _disk_put(db: sqlite3.Connection | None, digest: str, data: bytes) -> None:
    if db is None:
        return
    try:
        db.execute("INSERT OR REPLACE INTO thumbs (key, data) VALUES (?, ?)", (digest, data))
    except sqlite3.Error:
        pass


def _make_thumbnail(path: str | os.PathLike, max_side: int, quality: int) -> bytes:
    header = read_header(path)
    # libjpeg may decode down to 80% of the thumbnail size, and that result is kept as it is: for a
    # 384x512 photo at 160 px, the 1/4 scale (96x128) instead of the 1/2 scale, about 2x faster to
    # decode, and no resampling at all (Pillow's bilinear resize costs as much as the decode here).
    # The browser scales the tile to its column anyway; ~40 dB PSNR against a full-decode thumbnail.
    scale = THUMBNAIL_DRAFT_SLACK * max_side / max(header.width, header.height)
    want = (max(1, math.ceil(header.height * scale)), max(1, math.ceil(header.width * scale)))
    im = open_rgb(path, min_size=want)
    if max(im.size) > max_side:
        # reducing_gap: a fast integer box reduction first, then the bilinear filter on a small image.
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(quality), optimize=False)
    return buf.getvalue()


@lru_cache(maxsize=16)
def placeholder_jpeg(max_side: int = 160, text: str = "unreadable") -> bytes:
    """A grey tile with ``text``, for files that cannot be shown."""
    side = max(16, int(max_side))
    im = Image.new("RGB", (side, side), (200, 200, 200))
    draw = ImageDraw.Draw(im)
    draw.line([(0, 0), (side - 1, side - 1)], fill=(150, 150, 150), width=2)
    draw.line([(0, side - 1), (side - 1, 0)], fill=(150, 150, 150), width=2)
    left, top, right, bottom = draw.textbbox((0, 0), text)
    draw.rectangle(
        [((side - (right - left)) / 2 - 3, (side - (bottom - top)) / 2 - 3),
         ((side + (right - left)) / 2 + 3, (side + (bottom - top)) / 2 + 3)],
        fill=(200, 200, 200),
    )  # fmt: skip
    draw.text(((side - (right - left)) / 2, (side - (bottom - top)) / 2), text, fill=(60, 60, 60))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def thumbnail_or_placeholder(path: str | os.PathLike, max_side: int = 160) -> bytes:
    """A thumbnail, or the placeholder when the file cannot be read (never raises)."""
    try:
        return thumbnail_jpeg(path, max_side)
    except ImageError as err:
        return placeholder_jpeg(max_side, err.kind)
