"""core.data.images: headers without decoding, every odd file a dataset holds, bombs, thumbnails."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.data import images, thumbnails
from core.errors import ImageError
from tests.imagefactory import (
    corrupt_png_data,
    jpeg_bytes,
    jpeg_declaring,
    marked_jpeg,
    png16_gray,
    png16_rgb,
    png_bytes,
    raw_png,
    write,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    thumbnails.clear_thumbnail_memory()


def kind_of(fn, *args) -> str:
    with pytest.raises(ImageError) as info:
        fn(*args)
    return info.value.kind


# --- names ---------------------------------------------------------------------------------


def test_junk_and_image_names():
    for junk in ["._mask1.jpg", ".DS_Store", "Thumbs.db", "desktop.ini", "._000001_female_Asian_45"]:
        assert images.is_junk(junk)
        assert not images.is_image_name(junk)
    for name in ["a.jpg", "B.JPEG", "c.png", "d.webp", "é 写真 (1).Jpg"]:
        assert images.is_image_name(name)
    assert not images.is_image_name("notes.txt")


# --- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
def test_header_matches_pillow_for_each_format(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    Image.new("RGB", (37, 21), (10, 20, 30)).save(path, fmt)
    header = images.read_header(path)
    assert (header.width, header.height) == (37, 21)
    assert header.format == fmt


def test_header_reads_no_pixels(tmp_path, monkeypatch):
    path = write(tmp_path / "a.jpg", jpeg_bytes((30, 40)))
    png = write(tmp_path / "b.png", png_bytes(Image.new("RGB", (5, 6))))
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("header read decoded pixels"))
    assert images.read_header(path).width == 30
    assert images.read_header(png).height == 6


def test_zero_byte_file(tmp_path):
    path = write(tmp_path / "empty.jpg", b"")
    assert kind_of(images.read_header, path) == "empty"
    assert kind_of(images.open_rgb, path) == "empty"


def test_truncated_jpeg_told_by_missing_end_marker(tmp_path):
    data = jpeg_bytes((64, 64), quality=95)
    path = write(tmp_path / "cut.jpg", data[: len(data) * 2 // 3])
    assert kind_of(images.read_header, path) == "truncated"
    assert kind_of(images.verify, path) == "truncated"
    with pytest.raises(ImageError):
        images.open_rgb(path)


def test_truncated_jpeg_inside_its_header(tmp_path):
    path = write(tmp_path / "cut.jpg", jpeg_bytes()[:100])
    assert kind_of(images.read_header, path) in {"truncated", "unreadable"}


def test_truncated_png(tmp_path):
    data = png_bytes(Image.new("RGB", (50, 50), (1, 2, 3)))
    path = write(tmp_path / "cut.png", data[:-20])
    assert kind_of(images.read_header, path) == "truncated"


def test_jpeg_with_trailing_padding_is_fine(tmp_path):
    path = write(tmp_path / "pad.jpg", jpeg_bytes() + b"\x00" * 300)
    assert images.read_header(path).width == 24


def test_png_named_jpg_is_read_by_content(tmp_path):
    path = write(tmp_path / "really_png.jpg", png_bytes(Image.new("RGB", (9, 7), (0, 255, 0))))
    header = images.read_header(path)
    assert (header.width, header.height, header.format) == (9, 7, "PNG")
    assert images.open_rgb(path).getpixel((3, 3)) == (0, 255, 0)


def test_non_image_file(tmp_path):
    path = write(tmp_path / "notes.jpg", b"these are my notes, not a photo\n" * 10)
    assert kind_of(images.read_header, path) == "not_image"
    assert kind_of(images.open_rgb, path) == "not_image"
    assert kind_of(thumbnails.thumbnail_jpeg, path) == "not_image"


def test_corrupt_data_passes_header_but_fails_verify(tmp_path):
    path = write(tmp_path / "bad.png", corrupt_png_data(png_bytes(Image.new("RGB", (20, 20), (9, 9, 9)))))
    images.read_header(path)  # header and end marker are intact
    with pytest.raises(ImageError):
        images.verify(path)


# --- bombs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,data",
    [
        ("bomb.png", raw_png(30000, 30000, 8, 2)),
        ("bomb.jpg", jpeg_declaring(60000, 60000)),
        ("edge.png", raw_png(9000, 8000, 8, 0)),  # 72 MP: over MAX_PIXELS, under Pillow's hard 2x limit
    ],
)
def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch, name, data):
    path = write(tmp_path / name, data)
    assert len(data) < 5000
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self, *a: decoded.append(1))
    for fn in (images.read_header, images.open_rgb, images.verify, thumbnails.thumbnail_jpeg):
        assert kind_of(fn, path) == "bomb"
    with pytest.raises(ImageError):
        images.load_resized(path, (10, 10))
    assert decoded == []
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS


# --- modes ---------------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = write(tmp_path / "cmyk.jpg", jpeg_bytes((16, 16), color=(0, 255, 255, 0), mode="CMYK"))
    im = images.open_rgb(path)
    assert im.mode == "RGB"
    r, g, b = im.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_grayscale_becomes_rgb(tmp_path):
    path = write(tmp_path / "gray.jpg", jpeg_bytes((16, 16), color=100, mode="L"))
    im = images.open_rgb(path)
    assert im.mode == "RGB"
    r, g, b = im.getpixel((5, 5))
    assert r == g == b and abs(r - 100) <= 2


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 32768, np.uint16)
    path = write(tmp_path / "deep.png", png16_gray(arr))
    px = np.asarray(images.open_rgb(path))
    assert px.shape == (8, 8, 3)
    assert abs(int(px.mean()) - 127) <= 1


def test_16bit_rgb_png_is_scaled(tmp_path):
    arr = np.zeros((6, 6, 3), np.uint16)
    arr[..., 0], arr[..., 1], arr[..., 2] = 65535, 16384, 0
    path = write(tmp_path / "deep_rgb.png", png16_rgb(arr))
    r, g, b = images.open_rgb(path).getpixel((2, 2))
    assert r == 255 and abs(g - 64) <= 1 and b == 0


def test_rgba_composited_on_white_hides_colour_under_transparency(tmp_path):
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[..., 0] = 255  # red everywhere ...
    arr[:, :5, 3] = 0  # ... but fully transparent on the left
    arr[:, 5:, 3] = 255
    path = write(tmp_path / "alpha.png", png_bytes(Image.fromarray(arr, "RGBA")))
    im = images.open_rgb(path)
    assert im.mode == "RGB"
    assert im.getpixel((1, 1)) == (255, 255, 255)
    assert im.getpixel((8, 8)) == (255, 0, 0)


def test_la_and_palette_transparency_composited(tmp_path):
    la = Image.new("LA", (4, 4), (0, 0))
    assert images.open_rgb(write(tmp_path / "la.png", png_bytes(la))).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 1
    assert images.open_rgb(write(tmp_path / "p.png", png_bytes(pal))).getpixel((0, 0)) == (255, 255, 255)


# --- EXIF orientation ----------------------------------------------------------------------


@pytest.mark.parametrize("orientation,size", [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_exif_orientation_upright_in_header_open_and_thumbnail(tmp_path, orientation, size):
    path = write(tmp_path / f"o{orientation}.jpg", marked_jpeg((40, 20), orientation))
    header = images.read_header(path)
    assert (header.width, header.height) == size
    assert header.orientation == orientation
    im = images.open_rgb(path)
    assert im.size == size
    thumb = Image.open(io.BytesIO(thumbnails.thumbnail_jpeg(path, max_side=40)))
    assert thumb.size == size
    reference = Image.open(path)
    from PIL import ImageOps

    expected = np.asarray(ImageOps.exif_transpose(reference).convert("RGB"), dtype=np.int16)
    assert np.abs(np.asarray(im, dtype=np.int16) - expected).max() <= 2


def test_orientation_6_moves_the_corner_mark(tmp_path):
    # Orientation 6: the stored top-left ends at the displayed top-right.
    path = write(tmp_path / "o6.jpg", marked_jpeg((40, 20), 6))
    arr = np.asarray(images.open_rgb(path))
    assert arr[2, -3].mean() < 60 and arr[2, 2].mean() > 200


# --- draft decode and resizing ---------------------------------------------------------------


def test_draft_decode_covers_min_size(tmp_path):
    path = write(tmp_path / "big.jpg", jpeg_bytes((384, 512)))
    im = images.open_rgb(path, min_size=(128, 96))
    assert im.size[0] >= 96 and im.size[1] >= 128
    assert im.size[0] < 384  # decoded at reduced scale
    arr = images.load_resized(path, (128, 96))
    assert arr.shape == (128, 96, 3) and arr.dtype == np.uint8


def test_draft_respects_exif_rotation(tmp_path):
    path = write(tmp_path / "rot.jpg", jpeg_bytes((512, 384), orientation=6))  # displayed 384 wide x 512 high
    im = images.open_rgb(path, min_size=(256, 192))
    assert im.size[0] >= 192 and im.size[1] >= 256 and im.size[1] > im.size[0]


# --- thumbnails ------------------------------------------------------------------------------


def test_thumbnail_small_cached_in_memory_and_on_disk(tmp_path, monkeypatch):
    arr = (np.random.default_rng(0).random((512, 384, 3)) * 255).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    thumb = thumbnails.thumbnail_jpeg(path)
    assert len(thumb) < 20_000
    assert 128 <= max(Image.open(io.BytesIO(thumb)).size) <= 160
    assert (tmp_path / "cache" / "thumbs" / "thumbs.sqlite3").is_file()

    monkeypatch.setattr(thumbnails, "_make_thumbnail", lambda *a: pytest.fail("memory cache missed"))
    assert thumbnails.thumbnail_jpeg(path) == thumb
    thumbnails.clear_thumbnail_memory()
    assert thumbnails.thumbnail_jpeg(path) == thumb  # from disk


def test_thumbnail_of_a_large_png_is_reduced(tmp_path):
    path = write(tmp_path / "big.png", png_bytes(Image.new("RGB", (800, 400), (10, 200, 30))))
    thumb = Image.open(io.BytesIO(thumbnails.thumbnail_jpeg(path, max_side=160)))
    assert thumb.size == (160, 80)


def test_thumbnail_follows_file_changes(tmp_path):
    path = write(tmp_path / "a.jpg", jpeg_bytes((100, 50), color=(255, 0, 0)))
    first = thumbnails.thumbnail_jpeg(path)
    write(path, jpeg_bytes((50, 100), color=(0, 0, 255)))
    second = thumbnails.thumbnail_jpeg(path)
    assert first != second
    assert Image.open(io.BytesIO(second)).size == (50, 100)  # never enlarged


def test_unicode_and_spaces_in_names(tmp_path):
    path = write(tmp_path / "dossier é" / "写真 (1) copy.jpg", jpeg_bytes((30, 20)))
    assert images.read_header(path).width == 30
    assert images.open_rgb(path).size == (30, 20)
    assert thumbnails.thumbnail_jpeg(path)[:2] == b"\xff\xd8"


def test_placeholder_and_fallback(tmp_path):
    ph = thumbnails.placeholder_jpeg(120, "truncated")
    assert Image.open(io.BytesIO(ph)).size == (120, 120)
    bad = write(tmp_path / "bad.jpg", b"")
    assert thumbnails.thumbnail_or_placeholder(bad, 120) == thumbnails.placeholder_jpeg(120, "empty")


def test_unreadable_cache_dir_still_gives_thumbnail(tmp_path, monkeypatch):
    blocker = write(tmp_path / "not_a_dir", b"x")
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(blocker))
    path = write(tmp_path / "a.jpg", jpeg_bytes((60, 40)))
    assert thumbnails.thumbnail_jpeg(path)[:2] == b"\xff\xd8"
