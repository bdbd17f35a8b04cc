"""The one place that opens images: EXIF orientation, modes, decompression bombs, draft decode, thumbnails.

CONTRACT (other modules code against these names):

    IMAGE_EXTENSIONS: frozenset[str]         # lower-case, with dot: .jpg .jpeg .png .bmp .webp .gif .tif .tiff
    MAX_PIXELS: int                          # above this a file is a decompression bomb: refused, never decoded
    MAX_DECODED_BYTES: int                   # likewise for pixels x bytes per decoded pixel (16-bit gray: 2)
    is_junk(name: str) -> bool               # AppleDouble "._x", dotfiles, Thumbs.db, desktop.ini
    is_image_name(name: str) -> bool         # by extension, junk excluded

    @dataclass ImageHeader: width:int, height:int (after EXIF orientation), format:str, orientation:int
    read_header(path) -> ImageHeader         # headers only, no pixel decode; raises ImageError with
                                             # kind in {"empty","truncated","not_image","bomb","unreadable"}
    verify(path) -> None                     # full decode; raises ImageError

    open_rgb(path, min_size=None) -> PIL.Image.Image
        # RGB, EXIF-transposed; 16-bit scaled to 8-bit (not clipped); RGBA/LA/P composited on white;
        # CMYK converted; bombs refused (ImageError kind "bomb"). When min_size=(h, w) is given,
        # JPEGs are draft-decoded at the smallest libjpeg scale whose result still covers (h, w),
        # and 16/32-bit images are box-reduced by the largest integer factor that still covers it
        # before their conversion to 8 bits (which works on slices of rows, never the whole image).
    load_resized(path, size_hw) -> np.ndarray  # uint8 HxWx3 at exactly size_hw (draft + resize)
    thumbnail_jpeg(path, max_side=160, quality=80) -> bytes
        # small JPEG bytes (a few KB), draft decoded; cached in memory (LRU) and on disk under
        # settings cache_dir/thumbs keyed by (resolved path, mtime, size, max_side)
    placeholder_jpeg(max_side=160, text="unreadable") -> bytes   # shown for broken files

Also: thumbnail_or_placeholder(path, max_side) -> bytes (never raises), clear_thumbnail_memory().
The disk cache is one SQLite file, cache_dir/thumbs/thumbs.sqlite3 (safe to delete).

Headers of JPEG and PNG files (nearly every dataset) are parsed here directly from the first few KB
and the file's tail: Pillow's lazy open costs several times more per file, and the scan of a
full-size dataset (18,900 photos) must take well under two seconds. Other formats go through
Pillow's lazy open. Either way no pixel is decoded.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from core.errors import ImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})

# 64 megapixels: 8000x8000. Real photos are far below; a few-KB file declaring more is a bomb.
MAX_PIXELS: int = 64_000_000

# Pixels alone do not bound memory: Pillow holds a decoded pixel in 1 byte (1, L, P), 2 (16-bit gray)
# or 4 (everything else). 8000x8000 at 4 bytes each is the most a decode may take (256 MB).
MAX_DECODED_BYTES: int = 4 * MAX_PIXELS
# 16/32-bit gray and float images: converted to 8 bits in slices of this many pixels (~1 MB each).
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_SLICE_PIXELS = 1 << 18

# Pillow's own guard, set consistently: it warns above MAX_IMAGE_PIXELS and raises above twice that.
# Every path here checks width*height against MAX_PIXELS before decoding, so the warning is redundant.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# A truncated file must fail loudly, never decode as grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx", "ehthumbs.db"})

# EXIF orientations 5..8 swap width and height.
_SWAPS_AXES = frozenset({5, 6, 7, 8})

_FIRST_READ = 4096  # the markers before SOF of most JPEGs; PNG's IHDR
_HEAD_BYTES = 65536  # enough for the markers before SOF in virtually every JPEG (EXIF thumbnails included)
_TAIL_BYTES = 4096  # trailing padding after the end marker is tolerated up to this much


def is_junk(name: str) -> bool:
    """AppleDouble twins (``._x``), dotfiles, Thumbs.db, desktop.ini, __MACOSX: skipped without a word."""
    return name.startswith(".") or name.lower() in _JUNK_NAMES


def is_image_name(name: str) -> bool:
    """An image by its extension (case-insensitive), junk excluded."""
    return not is_junk(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class ImageHeader:
    width: int  # after EXIF orientation
    height: int  # after EXIF orientation
    format: str  # "JPEG", "PNG", ... (from the content, not the extension)
    orientation: int = 1  # EXIF orientation tag, 1 when absent


# ----------------------------------------------------------------------------------------------
# Headers


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Width/height (EXIF-oriented) and format from the file's header; no pixel is decoded.

    Raises ImageError with kind "empty", "truncated" (JPEG without EOI, PNG without IEND),
    "not_image", "bomb" (more than MAX_PIXELS) or "unreadable".
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise ImageError(path, "unreadable", f"cannot open ({err.strerror}); check the file's permissions") from err
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise ImageError(path, "empty", "empty file (0 bytes); delete it or copy it again")
        head = os.pread(fd, min(size, _FIRST_READ), 0)
        if head[:3] == b"\xff\xd8\xff":
            header = _jpeg_header(path, fd, head, size)
            if header is None and len(head) < size:
                header = _jpeg_header(path, fd, os.pread(fd, min(size, _HEAD_BYTES), 0), size)
        elif head[:8] == b"\x89PNG\r\n\x1a\n":
            header = _png_header(path, fd, head, size)
        else:
            header = None
    finally:
        os.close(fd)
    if header is None:
        header = _pillow_header(path)
    _check_pixels(path, header.width, header.height)
    return header


def _check_pixels(path: str, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(path, "unreadable", f"header declares an empty image ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageError(
            path,
            "bomb",
            f"header declares {width}x{height} pixels, more than the {MAX_PIXELS:,} allowed "
            "(a decompression bomb?); not decoded",
        )


def _check_decoded_bytes(path: str, width: int, height: int, bytes_per_pixel: int) -> None:
    decoded = width * height * bytes_per_pixel
    if decoded > MAX_DECODED_BYTES:
        raise ImageError(
            path,
            "bomb",
            f"decodes to {decoded:,} bytes ({width}x{height} pixels of {bytes_per_pixel} bytes), more than the "
            f"{MAX_DECODED_BYTES:,} allowed; not decoded",
        )


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow holds per decoded pixel in ``mode``."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _png_bytes_per_pixel(bit_depth: int, colour_type: int) -> int:
    """Pillow's bytes per pixel for a PNG's IHDR: 16-bit gray stays 16-bit, other 16-bit PNGs become 8-bit."""
    if colour_type == 0:  # gray
        return 2 if bit_depth == 16 else 1
    return 1 if colour_type == 3 else 4  # palette; RGB, gray+alpha and RGBA are held in 4 bytes


def _truncated(path: str, what: str) -> ImageError:
    return ImageError(path, "truncated", f"truncated {what} (no end marker); copy the file again")


# JPEG start-of-frame markers carry the size: C0..CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_header(path: str, fd: int, head: bytes, size: int) -> ImageHeader | None:
    """Walk the JPEG markers up to the start of scan; None sends the file to Pillow."""
    pos, n = 2, len(head)
    width = height = 0
    orientation = 1
    while pos < n:
        # Markers may be padded with extra 0xFF bytes.
        start = pos
        while pos < n and head[pos] == 0xFF:
            pos += 1
        if pos == start:
            return None  # not at a marker: a corrupt header; Pillow gives the verdict
        if pos + 3 > n:
            break
        marker = head[pos]
        pos += 1
        if marker in _STANDALONE_MARKERS:
            continue
        seg_len = (head[pos] << 8) | head[pos + 1]
        if seg_len < 2:
            raise ImageError(path, "unreadable", "corrupt JPEG header (bad segment length)")
        end = pos + seg_len
        if end > n:
            break
        if marker == 0xE1 and orientation == 1 and head[pos + 2 : pos + 8] == b"Exif\x00\x00":
            orientation = _exif_orientation(head[pos + 8 : end])
        elif marker in _SOF_MARKERS:
            # EXIF (APP1) always precedes the frame header, so the walk can stop here.
            if seg_len < 7:
                raise ImageError(path, "unreadable", "corrupt JPEG frame header")
            height, width = struct.unpack_from(">HH", head, pos + 3)
            _require_end(path, fd, size, max(end, size - _TAIL_BYTES), b"\xff\xd9", "JPEG")
            return _oriented("JPEG", width, height, orientation)
        elif marker in (0xDA, 0xD9):
            raise ImageError(path, "unreadable", "JPEG without a frame header")
        pos = end
    if n < size:
        return None  # headers longer than our window (huge EXIF/ICC blocks): let Pillow read them
    raise _truncated(path, "JPEG")


def _png_header(path: str, fd: int, head: bytes, size: int) -> ImageHeader:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise _truncated(path, "PNG") if len(head) < 24 else ImageError(path, "unreadable", "corrupt PNG header")
    width, height = struct.unpack_from(">II", head, 16)
    _check_pixels(path, width, height)
    _check_decoded_bytes(path, width, height, _png_bytes_per_pixel(bit_depth=head[24], colour_type=head[25]))
    orientation = 1
    # Chunks before the image data may hold an eXIf chunk (rare; honoured like a JPEG's EXIF).
    pos = 8
    while pos + 8 <= len(head):
        length, ctype = struct.unpack_from(">I4s", head, pos)
        if ctype in (b"IDAT", b"IEND"):
            break
        if ctype == b"eXIf":
            orientation = _exif_orientation(head[pos + 8 : pos + 8 + length])
            break
        pos += 12 + length
    _require_end(path, fd, size, max(33, size - _TAIL_BYTES), b"IEND", "PNG")
    return _oriented("PNG", width, height, orientation)


def _require_end(path: str, fd: int, size: int, start: int, marker: bytes, what: str) -> None:
    tail = os.pread(fd, size - start, start)
    if marker not in tail:
        raise _truncated(path, what)


def _oriented(fmt: str, width: int, height: int, orientation: int) -> ImageHeader:
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return ImageHeader(width=width, height=height, format=fmt, orientation=orientation)


def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block; 1 when absent or corrupt."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        ifd = struct.unpack_from(order + "I", tiff, 4)[0]
        count = struct.unpack_from(order + "H", tiff, ifd)[0]
        for i in range(count):
            tag, typ, _n = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * i)
            if tag == 0x0112:
                value = struct.unpack_from(order + "H", tiff, ifd + 2 + 12 * i + 8)[0]
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error):
        return 1
    return 1


def _pillow_header(path: str) -> ImageHeader:
    with _open_pil(path) as im:
        orientation = _pil_orientation(im)
        width, height = im.size
        return _oriented(im.format or "?", width, height, orientation)


def _pil_orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a corrupt EXIF block must not make a good image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _open_pil(path: str | os.PathLike) -> Image.Image:
    """Pillow's lazy open with our error kinds; the bomb guard fires before any decode."""
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise ImageError(path, "empty", "empty file (0 bytes); delete it or copy it again")
        im = Image.open(path)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(path, "bomb", f"{err}; not decoded") from err
    except UnidentifiedImageError as err:
        raise ImageError(path, "not_image", "not an image Pillow can read; remove it from the dataset") from err
    except (OSError, SyntaxError, ValueError, struct.error) as err:
        raise ImageError(path, "unreadable", f"cannot read the image header ({err})") from err
    try:
        _check_pixels(path, *im.size)
        _check_decoded_bytes(path, *im.size, _bytes_per_pixel(im.mode))
    except ImageError:
        im.close()
        raise
    return im


# ----------------------------------------------------------------------------------------------
# Decoding


def verify(path: str | os.PathLike) -> None:
    """Decode every pixel once; raises ImageError (truncated, undecodable, bomb, ...)."""
    read_header(path)
    with _open_pil(path) as im:
        _load(im, path)


def _load(im: Image.Image, path: str | os.PathLike) -> None:
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError) as err:
        text = str(err)
        kind = "truncated" if "truncated" in text or "broken data stream" in text else "unreadable"
        raise ImageError(os.fspath(path), kind, f"cannot decode the image ({text})") from err


def open_rgb(path: str | os.PathLike, min_size: tuple[int, int] | None = None) -> Image.Image:
    """The image as upright 8-bit RGB (see the module contract). ``min_size`` is (height, width)."""
    read_header(path)  # cheap, and refuses bombs and truncated files before Pillow sees them
    with _open_pil(path) as im:
        orientation = _pil_orientation(im)
        want = None
        if min_size is not None:
            want = (max(1, int(min_size[0])), max(1, int(min_size[1])))
            if orientation in _SWAPS_AXES:
                want = (want[1], want[0])
        if want is not None and im.format == "JPEG":
            # draft keeps both sides >= the request, picking libjpeg's smallest such 1/2, 1/4, 1/8 scale.
            im.draft("RGB", (want[1], want[0]))
        _load(im, path)
        if want is not None and im.mode in _HIGH_DEPTH_MODES:
            # Reduce while still 16/32-bit, so an 8000x8000 16-bit PNG's thumbnail converts a few
            # thousand pixels, not 64 million (its int64 conversion used to cost 1.6 GB and 11-16 s).
            rgb = to_rgb(_box_reduced(im, want))
        else:
            rgb = to_rgb(im)
    method = _TRANSPOSE.get(orientation)
    return rgb.transpose(method) if method is not None else rgb


def _box_reduced(im: Image.Image, want_hw: tuple[int, int]) -> Image.Image:
    """``im`` averaged over factor x factor boxes, the largest integer factor whose result still covers want."""
    width, height = im.size
    factor = min(width // want_hw[1], height // want_hw[0])
    if factor < 2:
        return im
    # Image.reduce refuses 16-bit modes; a BOX resize is the same average and accepts them all.
    return im.resize((width // factor, height // factor), Image.Resampling.BOX)


# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose does).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: high bit depths scaled, transparency composited on white."""
    mode = im.mode
    if mode == "RGB":
        return im.copy() if im.readonly else im
    if mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_gray(im).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _high_depth_to_gray(im: Image.Image) -> Image.Image:
    """16/32-bit gray or float -> 8-bit gray, a slice of rows at a time (never a whole-image int64 copy).

    16-bit sources are scaled 0..65535 -> 0..255 rather than clipped to white (so is a 32-bit one with
    values above 255); floats in 0..1 are scaled by 255.
    """
    high = im.getextrema()[1]
    if im.mode == "F":
        factor = 255.0 if high <= 1.0 else 1.0

        def scale(block: np.ndarray) -> np.ndarray:
            return np.clip(block * factor, 0, 255)
    else:
        top = 65535 if (im.mode.startswith("I;16") or high > 255) else 255

        def scale(block: np.ndarray) -> np.ndarray:
            # clipped first, so the product fits in int32 (65535 * 255 < 2**31)
            return np.clip(block, 0, top).astype(np.int32) * 255 // top

    width, height = im.size
    gray = np.empty((height, width), np.uint8)
    rows = max(1, _SLICE_PIXELS // width)
    for first in range(0, height, rows):
        block = np.asarray(im.crop((0, first, width, min(height, first + rows))))
        gray[first : first + block.shape[0]] = scale(block)
    return Image.fromarray(gray, "L")


def load_resized(path: str | os.PathLike, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 array HxWx3 at exactly ``size_hw`` (draft decode, then an antialiased bilinear resize)."""
    h, w = int(size_hw[0]), int(size_hw[1])
    im = open_rgb(path, min_size=(h, w))
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(im, dtype=np.uint8)
