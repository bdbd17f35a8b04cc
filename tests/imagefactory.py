"""Tiny image files made inside the tests (no binaries committed): normal, broken and hostile ones."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(size_wh=(24, 32), color=(200, 80, 40), mode="RGB", orientation: int | None = None, quality=90) -> bytes:
    im = Image.new(mode, size_wh, color)
    buf = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    im.save(buf, "JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def marked_jpeg(size_wh=(40, 20), orientation: int = 1) -> bytes:
    """A white JPEG with a black block in its stored top-left corner (to see where rotation puts it)."""
    arr = np.full((size_wh[1], size_wh[0], 3), 255, np.uint8)
    arr[:8, :8] = 0
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None = None) -> bytes:
    """A PNG written by hand: any bit depth, or a header that declares far more pixels than it holds."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def png16_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG from a uint16 HxWx3 array."""
    h, w, _ = arr.shape
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return raw_png(w, h, 16, 2, rows)


def png16_gray(arr: np.ndarray) -> bytes:
    h, w = arr.shape
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return raw_png(w, h, 16, 0, rows)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header is rewritten to declare width x height (a bomb)."""
    data = bytearray(jpeg_bytes((16, 16)))
    pos = 2
    while True:
        marker = data[pos + 1]
        seg_len = struct.unpack_from(">H", data, pos + 2)[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, pos + 5, height, width)
            return bytes(data)
        pos += 2 + seg_len


def corrupt_png_data(good_png: bytes) -> bytes:
    """Flip a byte inside IDAT: header and IEND stay intact, decoding fails (CRC/zlib)."""
    data = bytearray(good_png)
    idat = data.index(b"IDAT")
    data[idat + 8] ^= 0xFF
    return bytes(data)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
