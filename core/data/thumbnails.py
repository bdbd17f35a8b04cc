"""Thumbnails: small upright JPEGs for galleries, cached in memory (bounded) and in one SQLite file.

Pages show pages of these rather than full photos (``st.image`` of many PIL images grows memory).
Images are opened through ``core.data.images``, the one place that decodes them.

The disk cache is bounded by bytes (``settings.thumbnail_cache_mb``, WORKBENCH_THUMBNAIL_CACHE_MB,
0 turns it off): every row records its size and when it was last used, and every ``CHECK_EVERY_PUTS``
writes (and once per connection) the total is summed from an index and the least recently used
rows are deleted down to 90% of the budget. ``trim_disk_cache`` does the same on demand.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import sqlite3
import threading
import time
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
CHECK_EVERY_PUTS = 200  # how often the disk cache's total is checked against its budget
_TRIM_TO = 0.9  # eviction goes below the budget, so the next check does not evict again at once
_TOUCH_AFTER_S = 60  # a hit refreshes its row's last use at most this often (a hit stays a read)
_puts_since_check = 0


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


def _disk_budget_bytes() -> int:
    return _budget_for(os.environ.get("WORKBENCH_THUMBNAIL_CACHE_MB"))


@lru_cache(maxsize=8)
def _budget_for(_env: str | None) -> int:
    from core import settings

    return max(0, settings.load().thumbnail_cache_mb) << 20


def _now() -> int:
    return int(time.time())


def thumbnail_jpeg(path: str | os.PathLike, max_side: int = 160, quality: int = 80) -> bytes:
    """Small upright JPEG bytes fitting in ``max_side`` x ``max_side``; cached in memory and on disk."""
    key = _thumb_key(path, max_side, quality)
    with _memory_lock:
        hit = _memory.get(key)
        if hit is not None:
            _memory.move_to_end(key)
            return hit
    digest = hashlib.sha1(repr(key).encode("utf-8", "surrogateescape")).hexdigest()
    db = _disk_cache(_cache_dir()) if _disk_budget_bytes() > 0 else None
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
            _prepare(con)
        except (sqlite3.Error, OSError):
            con = False  # remembered per thread: no disk cache in this folder
        conns[folder] = con
        if con:
            try:
                _trim(con, _disk_budget_bytes())  # once per connection: a cache left over budget shrinks
            except sqlite3.Error:
                pass  # busy: the periodic check will do it
    return con or None


def _prepare(con: sqlite3.Connection) -> None:
    # Deleted rows give their pages back to the file system (auto_vacuum applies to a new file).
    con.execute("PRAGMA auto_vacuum=INCREMENTAL")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    columns = {row[1] for row in con.execute("PRAGMA table_info(thumbs)")}
    if columns and "accessed" not in columns:
        # A cache from before the budget: dropped (it is only a cache) and the file compacted once.
        con.execute("DROP TABLE thumbs")
        con.execute("VACUUM")
    con.execute(
        "CREATE TABLE IF NOT EXISTS thumbs (key TEXT PRIMARY KEY, data BLOB NOT NULL, "
        "size INTEGER NOT NULL, accessed INTEGER NOT NULL)"
    )
    # Covers the budget check and the eviction order, so neither reads a thumbnail's bytes.
    con.execute("CREATE INDEX IF NOT EXISTS thumbs_by_use ON thumbs (accessed, size)")


def _disk_get(db: sqlite3.Connection | None, digest: str) -> bytes | None:
    if db is None:
        return None
    try:
        row = db.execute("SELECT data, accessed FROM thumbs WHERE key = ?", (digest,)).fetchone()
        if row is None or bytes(row[0][-2:]) != b"\xff\xd9":
            return None
        now = _now()
        if row[1] < now - _TOUCH_AFTER_S:
            db.execute("UPDATE thumbs SET accessed = ? WHERE key = ?", (now, digest))
    except sqlite3.Error:
        return None
    return bytes(row[0])


def _disk_put(db: sqlite3.Connection | None, digest: str, data: bytes) -> None:
    global _puts_since_check
    if db is None:
        return
    try:
        db.execute(
            "INSERT OR REPLACE INTO thumbs (key, data, size, accessed) VALUES (?, ?, ?, ?)",
            (digest, data, len(data), _now()),
        )
        _puts_since_check += 1
        if _puts_since_check >= CHECK_EVERY_PUTS:
            _puts_since_check = 0
            _trim(db, _disk_budget_bytes())
    except sqlite3.Error:
        pass


def _trim(db: sqlite3.Connection, budget: int) -> int:
    """Delete the least recently used rows until the cache holds 90% of ``budget`` bytes; rows removed."""
    total = db.execute("SELECT COALESCE(SUM(size), 0) FROM thumbs").fetchone()[0]
    if total <= budget:
        return 0
    excess = total - int(budget * _TRIM_TO)
    removed = db.execute(
        "DELETE FROM thumbs WHERE rowid IN (SELECT id FROM (SELECT rowid AS id, "
        "SUM(size) OVER (ORDER BY accessed, rowid ROWS UNBOUNDED PRECEDING) - size AS before FROM thumbs) "
        "WHERE before < ?)",
        (excess,),
    ).rowcount
    db.execute("PRAGMA incremental_vacuum")
    return removed


def trim_disk_cache(max_bytes: int | None = None) -> int:
    """Evict least recently used thumbnails from the disk cache down to 90% of ``max_bytes`` (default:
    the settings' budget) when it holds more; returns the number of thumbnails removed."""
    db = _disk_cache(_cache_dir())
    if db is None:
        return 0
    try:
        return _trim(db, _disk_budget_bytes() if max_bytes is None else int(max_bytes))
    except sqlite3.Error:
        return 0


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
        [
            ((side - (right - left)) / 2 - 3, (side - (bottom - top)) / 2 - 3),
            ((side + (right - left)) / 2 + 3, (side + (bottom - top)) / 2 + 3),
        ],
        fill=(200, 200, 200),
    )
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
