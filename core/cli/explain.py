"""CLI: why a model is wrong, and what is wrong with the data.

    python -m core gradcam --run RUN --image PATH --out heat.png [--class K]
    python -m core embed --run RUN [--data DATA]
    python -m core duplicates DATA --out duplicates.csv
    python -m core quality DATA --out quality.csv

``duplicates`` and ``quality`` take every image under DATA (any layout; AppleDouble and other junk
skipped) and write paths relative to DATA, spreadsheet-safe.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``gradcam``, ``embed``, ``duplicates`` and ``quality`` on ``sub``."""
    cam = sub.add_parser(
        "gradcam",
        help="write a photo with a run's Grad-CAM heat map on top",
        description="Overlay the Grad-CAM heat map of a class (default: the class the run predicts) on the photo, "
        "at the photo's own size. The map is computed at the run's eval size through its eval spec.",
    )
    cam.add_argument("--run", required=True, help="run folder (or run id under the models folder)")
    cam.add_argument("--image", required=True, help="the photo to explain")
    cam.add_argument("--out", required=True, help="image file to write (PNG or JPEG, by extension)")
    cam.add_argument("--class", dest="target_class", type=int, default=None, metavar="K", help="class index to explain")
    cam.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    cam.set_defaults(func=gradcam_command)

    embed = sub.add_parser(
        "embed",
        help="save a run's penultimate-layer features (embeddings) of its validation images or a folder",
        description="Compute the input of the run's classifier head for each image and save them float16 in the "
        "run folder (embeddings.npy + embeddings.parquet; with --data, embeddings-<folder>-<hash>.*).",
    )
    embed.add_argument("--run", required=True, help="run folder (or run id under the models folder)")
    embed.add_argument("--data", default=None, help="images to embed instead of the run's validation images")
    embed.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    embed.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    embed.set_defaults(func=embed_command)

    dups = sub.add_parser(
        "duplicates",
        help="find exact and near-duplicate images (CSV path_a,path_b,kind,distance; closest first)",
        description="Exact duplicates by content hash; near duplicates (re-encoded, resized, slightly shifted "
        "copies) by the distance between small colour thumbnails.",
    )
    dups.add_argument("data", metavar="DATA", help="folder of images (any layout)")
    dups.add_argument("--out", required=True, help="CSV file to write (atomically)")
    dups.add_argument(
        "--near-distance",
        type=float,
        default=None,
        metavar="D",
        help="largest thumbnail distance still called near (default 5; 0 lists exact duplicates only)",
    )
    dups.set_defaults(func=duplicates_command)

    quality = sub.add_parser(
        "quality",
        help="flag dark, bright, blurry, low-information, grayscale, odd-aspect and odd-size images",
        description="One row per flagged image and issue (CSV path,issue,score; worst first). Thresholds are "
        "relative to the dataset (robust z-score beyond 3.5) and past a visible absolute bound; see README.",
    )
    quality.add_argument("data", metavar="DATA", help="folder of images (any layout)")
    quality.add_argument("--out", required=True, help="CSV file to write (atomically)")
    quality.set_defaults(func=quality_command)


# ---- commands ----------------------------------------------------------------------------------------


def gradcam_command(args: argparse.Namespace) -> int:
    from core.errors import ImageError
    from core.evaluation import gradcam, infer

    image = Path(args.image)
    if not image.is_file():
        raise ImageError(image, "missing", "file not found; give the path of a photo")
    member = infer.load_run(args.run, args.device)
    target = args.target_class if args.target_class is not None else gradcam.predicted_class(member, image)
    picture = gradcam.overlay_for(member, image, target)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_picture(picture, out)
    name = member.classes[target] if 0 <= target < len(member.classes) else str(target)
    print(f"wrote {out} ({picture.width}x{picture.height}): Grad-CAM of class {target} ({name}), run {member.run_id}")
    return 0


def embed_command(args: argparse.Namespace) -> int:
    from core.evaluation import embeddings

    path, result = embeddings.embed_run(
        args.run, data=args.data, progress=_progress("embedding"), batch_size=args.batch_size, device=args.device
    )
    dims = result.features.shape[1] if result.features.ndim == 2 else 0
    print(
        f"wrote {path} and {path.with_suffix('.parquet').name}: {len(result.frame)} images x {dims} features (float16)"
    )
    if result.failures:
        print(
            f"left out {len(result.failures)} unreadable image(s): " + "; ".join(result.failures[:5]), file=sys.stderr
        )
    return 0


def duplicates_command(args: argparse.Namespace) -> int:
    from core.data import duplicates

    root, paths = image_files(args.data)
    near = duplicates.NEAR_DISTANCE if args.near_distance is None else max(0.0, args.near_distance)
    found = duplicates.find_duplicates(paths, near_distance=near, progress=_progress("hashing and fingerprinting"))
    table = found.copy()
    for column in ("path_a", "path_b"):
        table[column] = [_relative_cell(root, p) for p in table[column]]
    _write_csv(table, args.out)
    exact = int((found["kind"] == "exact").sum())
    print(f"wrote {args.out}: {exact} exact and {len(found) - exact} near-duplicate pairs among {len(paths)} images")
    return 0


def quality_command(args: argparse.Namespace) -> int:
    from core.data import quality

    root, paths = image_files(args.data)
    stats = quality.image_stats(paths, progress=_progress("measuring"))
    flags = quality.flag_issues(stats)
    table = flags.copy()
    table["path"] = [_relative_cell(root, p) for p in table["path"]]
    _write_csv(table, args.out)
    counts = flags["issue"].value_counts()
    summary = ", ".join(f"{issue} {int(counts.get(issue, 0))}" for issue in quality.ISSUES)
    unread = len(paths) - len(stats)
    print(f"wrote {args.out}: {flags['path'].nunique()} of {len(stats)} images flagged ({summary})")
    if unread:
        print(f"{unread} image(s) could not be read and were skipped (see `python -m core scan`)", file=sys.stderr)
    return 0


# ---- helpers --------------------------------------------------------------------------------------------


def image_files(data: str | os.PathLike) -> tuple[Path, list[str]]:
    """(resolved root, every image file under it, sorted); junk files and folders skipped."""
    from core.data import images
    from core.errors import DatasetError

    root = Path(data).resolve()
    if not root.is_dir():
        raise DatasetError(f"{data}: folder not found; give a folder of images")
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not images.is_junk(d))
        found.extend(os.path.join(folder, f) for f in sorted(files) if images.is_image_name(f))
    if not found:
        raise DatasetError(f"{data}: no images found (looked for {', '.join(sorted(images.IMAGE_EXTENSIONS))})")
    return root, found


def _relative_cell(root: Path, path: str) -> str:
    from core.fsutil import spreadsheet_safe

    try:
        text = Path(path).relative_to(root).as_posix()
    except ValueError:
        text = str(path)
    return spreadsheet_safe(text)


def _write_csv(table, out: str | os.PathLike) -> None:
    from core.fsutil import atomic_write_text

    atomic_write_text(out, table.to_csv(index=False))


def _save_picture(picture, out: Path) -> None:
    import io

    from core.errors import ConfigError
    from core.fsutil import atomic_write_bytes

    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--out {out}: use a .png, .jpg or .webp file name")
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    atomic_write_bytes(out, buffer.getvalue())


def _progress(what: str):
    """progress(done, total) printing one updating line on a terminal, a line per 10% otherwise."""
    last = [-1]

    def show(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{what} {done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)
            return
        tenth = (10 * done) // max(1, total)
        if tenth != last[0]:
            last[0] = tenth
            print(f"{what} {done}/{total}", file=sys.stderr, flush=True)

    return show
