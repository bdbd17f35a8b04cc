"""Known duplicates and quality issues planted into a generated demo dataset, listed in a truth file.

``plant_issues(root, seed, counts)`` changes training photos of a dataset made by
``core.data.demo.generate`` in place (the mask layout has exactly seven named photos per person, so
a plant replaces a photo rather than adding a file) and returns the truth rows, also written to
``plants.csv`` (path, kind, source; paths relative to the dataset root, "/"-separated):

    exact   person B's photo replaced by the bytes of person A's photo of the same slot (mask1, ...):
            one photo filed under two people, the competition's reused-id quirk. source = A's photo
    near    the same, but a re-encoded (JPEG quality 60), resized (75%) or slightly shifted (1% crop,
            resized back) copy. source = A's photo
    dark    the photo at a fifth of its brightness (ImageEnhance.Brightness 0.2). source = itself
    bright  the photo washed out: blended 85% with white. source = itself
    blurry  the photo through a Gaussian blur of radius 4 pixels (1% of its width). source = itself

Every touched photo (targets and sources) is a different file, so the kinds do not mix: a copy's
source is never darkened afterwards, and so on. Only ``.jpg`` photos are used (most of the demo's),
so a copy keeps its file name and extension. Same dataset, seed and counts: same plants.
"""

from __future__ import annotations

import csv
import io
import os
import random
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

from core.errors import DatasetError
from core.fsutil import atomic_write_bytes, atomic_write_text

KINDS = ("exact", "near", "dark", "bright", "blurry")
DEFAULT_COUNTS = {"exact": 10, "near": 10, "dark": 10, "bright": 10, "blurry": 10}
TRUTH_NAME = "plants.csv"
NEAR_VARIANTS = ("reencode", "resize", "shift")
_JPEG_QUALITY = 92  # the demo's own photos are saved about this way; a plant should not stand out by its encoding


def counts_for(photos: int) -> dict[str, int]:
    """Plants per kind for a dataset of ``photos`` training photos: one in twenty photos per kind at
    most, at least one, and DEFAULT_COUNTS from about 200 photos up (enough for precision/recall)."""
    return {kind: max(1, min(n, photos // 20)) for kind, n in DEFAULT_COUNTS.items()}


def plant_issues(
    dataset_root: str | os.PathLike,
    seed: int = 0,
    counts: dict[str, int] | None = None,
    truth: str | os.PathLike | None = None,
) -> list[dict[str, str]]:
    """Plant ``counts`` of each kind (default DEFAULT_COUNTS) into the demo dataset at ``dataset_root``.

    Writes the truth rows to ``truth`` (default ``<dataset_root>/plants.csv``) and returns them.
    Raises DatasetError when the folder is not a demo dataset or has too few photos for the counts.
    """
    root = Path(dataset_root).resolve()
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    unknown = set(counts) - set(KINDS)
    if unknown:
        raise DatasetError(f"plant counts: unknown kind(s) {', '.join(sorted(unknown))}; known: {', '.join(KINDS)}")
    people = _people(root)
    rng = random.Random(f"demo-plants/{seed}")
    used: set[Path] = set()
    rows: list[dict[str, str]] = []
    for kind in ("exact", "near"):
        for k in range(int(counts[kind])):
            source, target = _pick_pair(people, used, rng, root, kind)
            data = source.read_bytes() if kind == "exact" else _near_copy(source, NEAR_VARIANTS[k % len(NEAR_VARIANTS)])
            atomic_write_bytes(target, data)
            rows.append(_row(root, target, kind, source))
    edits = {"dark": _darken, "bright": _wash_out, "blurry": _blur}
    for kind, edit in edits.items():
        for _ in range(int(counts[kind])):
            target = _pick_single(people, used, rng, root, kind)
            atomic_write_bytes(target, _jpeg(edit(_open(target))))
            rows.append(_row(root, target, kind, target))
    write_truth(Path(truth) if truth is not None else root / TRUTH_NAME, rows)
    return rows


def write_truth(path: Path, rows: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["path", "kind", "source"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_truth(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---- choosing photos ----------------------------------------------------------------------------------


def _people(root: Path) -> dict[str, list[Path]]:
    """Person folder name -> its .jpg photos, sorted (AppleDouble ``._`` twins skipped)."""
    images_dir = root / "train" / "images"
    if not images_dir.is_dir():
        raise DatasetError(
            f"{root}: not a demo dataset (no train/images); generate one with `python -m core demo-data`"
        )
    people = {}
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p for p in folder.iterdir() if p.suffix == ".jpg" and not p.name.startswith("."))
        if photos:
            people[folder.name] = photos
    return people


def _pick_pair(
    people: dict[str, list[Path]], used: set[Path], rng: random.Random, root: Path, kind: str
) -> tuple[Path, Path]:
    """(source, target): unused .jpg photos of the same slot belonging to two different people."""
    names = list(people)
    for _ in range(200):
        a, b = rng.sample(names, 2) if len(names) >= 2 else (None, None)
        if a is None:
            break
        slots_b = {p.stem: p for p in people[b] if p not in used}
        shared = [p for p in people[a] if p not in used and p.stem in slots_b]
        if shared:
            source = rng.choice(shared)
            target = slots_b[source.stem]
            used.update((source, target))
            return source, target
    raise DatasetError(
        f"{root}: too few photos left to plant another {kind!r} duplicate; generate more people or plant fewer"
    )


def _pick_single(people: dict[str, list[Path]], used: set[Path], rng: random.Random, root: Path, kind: str) -> Path:
    free = [p for photos in people.values() for p in photos if p not in used]
    if not free:
        raise DatasetError(
            f"{root}: too few photos left to plant another {kind!r} photo; generate more people or plant fewer"
        )
    target = rng.choice(free)
    used.add(target)
    return target


def _row(root: Path, path: Path, kind: str, source: Path) -> dict[str, str]:
    return {"path": path.relative_to(root).as_posix(), "kind": kind, "source": source.relative_to(root).as_posix()}


# ---- edits ----------------------------------------------------------------------------------------------------


def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _jpeg(im: Image.Image, quality: int = _JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _near_copy(source: Path, variant: str) -> bytes:
    im = _open(source)
    w, h = im.size
    if variant == "reencode":
        return _jpeg(im, quality=60)
    if variant == "resize":
        return _jpeg(im.resize((round(w * 0.75), round(h * 0.75)), Image.Resampling.LANCZOS))
    dx, dy = max(1, round(w * 0.01)), max(1, round(h * 0.01))  # shift: drop 1% at the top left, scale back
    return _jpeg(im.crop((dx, dy, w, h)).resize((w, h), Image.Resampling.BILINEAR))


def _darken(im: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(im).enhance(0.2)


def _wash_out(im: Image.Image) -> Image.Image:
    return Image.blend(im, Image.new("RGB", im.size, (255, 255, 255)), 0.85)


def _blur(im: Image.Image) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(radius=max(1.0, im.width / 96)))
