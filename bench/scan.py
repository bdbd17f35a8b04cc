"""Benchmark: scanning the full-size demo set (18,900 training photos) against a naive full-decode scan.

    .venv/bin/python bench/scan.py [--root data/bench-full] [--naive-limit N]

Builds the set once with ``python -m core demo-data data/bench-full --people 2700 --eval-people 1800``
(several minutes) and reuses it afterwards. The naive baseline walks the same tree and opens and fully
decodes every image (what a scan that trusts nothing but Pillow's decode would do). Both run in this
process, page cache warm. Goals: our scan < 2 s and >= 20x faster than the naive one.

Also times a gallery page of 24 thumbnails: cold (empty caches) against opening and resizing the full
photos, and warm (in-memory cache), the Review gallery's budget being <= 50 ms per warm page.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from PIL import Image  # noqa: E402

from core.data import datasets, images, thumbnails  # noqa: E402


def ensure_dataset(root: Path) -> None:
    if (root / "train" / "images").is_dir():
        return
    print(f"building the full-size demo set in {root} (takes minutes, done once)...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "core", "demo-data", str(root), "--people", "2700", "--eval-people", "1800"],
        cwd=REPO_ROOT,
        check=True,
    )


def naive_scan(images_dir: Path, limit: int | None) -> tuple[int, float]:
    """Open and fully decode every image file under images_dir (junk skipped); returns (count, seconds)."""
    paths = [
        os.path.join(folder, name)
        for folder, _dirs, files in os.walk(images_dir)
        for name in files
        if images.is_image_name(name)
    ]
    paths.sort()
    if limit:
        paths = paths[:limit]
    start = time.perf_counter()
    sizes = []
    for path in paths:
        with Image.open(path) as im:
            sizes.append(im.convert("RGB").size)
    return len(paths), time.perf_counter() - start


def time_scan(root: Path, repeats: int) -> tuple[float, float, int]:
    """(first run, best of ``repeats``, images) for datasets.scan."""
    times = []
    n = 0
    for _ in range(repeats):
        start = time.perf_counter()
        index = datasets.scan(root)
        times.append(time.perf_counter() - start)
        n = len(index.frame)
    return times[0], min(times), n


def bench_thumbnails(pages: list[list[str]], warmup: str) -> dict[str, float]:
    """Median seconds per page of 24: naive, cold (empty caches), warm (memory) and disk-cache hits."""

    def naive_page(paths):
        # The same output (JPEG bytes of a 160 px thumbnail) from a full decode and a plain resize.
        for path in paths:
            with Image.open(path) as im:
                im = im.convert("RGB")
                scale = 160 / max(im.size)
                im = im.resize((round(im.width * scale), round(im.height * scale)))
                im.save(io.BytesIO(), "JPEG", quality=80)

    def pillow_thumbnail_page(paths):
        # A better baseline: full decode, then Pillow's thumbnail() (integer reduction first).
        for path in paths:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((160, 160))
                im.save(io.BytesIO(), "JPEG", quality=80)

    def ours(paths):
        for path in paths:
            thumbnails.thumbnail_jpeg(path)

    times: dict[str, list[float]] = {"naive": [], "pil": [], "cold": [], "warm": [], "disk": []}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["WORKBENCH_CACHE_DIR"] = cache
        thumbnails.thumbnail_jpeg(warmup)  # creates the cache database once, as any first visit does
        for paths in pages:
            for name, fn in (("naive", naive_page), ("pil", pillow_thumbnail_page), ("cold", ours), ("warm", ours)):
                start = time.perf_counter()
                fn(paths)
                times[name].append(time.perf_counter() - start)
            thumbnails.clear_thumbnail_memory()
            start = time.perf_counter()
            ours(paths)
            times["disk"].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT / "data" / "bench-full")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-limit", type=int, default=None, help="decode only the first N images (and scale)")
    args = parser.parse_args()

    ensure_dataset(args.root)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cpu_start = time.process_time()
    first, best, n = time_scan(args.root, args.repeats)
    cpu = (time.process_time() - cpu_start) / args.repeats
    print(
        f"our scan:   {n} images in {best:.3f} s (best of {args.repeats}; first run {first:.3f} s)"
        f" = {n / best:,.0f} images/s; CPU time {cpu:.3f} s per scan"
    )
    count, naive = naive_scan(args.root / "train" / "images", args.naive_limit)
    naive_full = naive * n / count
    note = "" if count == n else f" (measured on {count}, scaled to {n})"
    print(f"naive scan: {count} images decoded in {naive:.2f} s{note} = {count / naive:,.0f} images/s")
    print(
        f"ratio:      {naive_full / best:.1f}x faster than the naive full-decode scan "
        f"(goal >= 20x; full scan goal < 2 s: {'met' if best < 2 else 'NOT met'})"
    )

    paths = list(datasets.scan(args.root).frame["path"])
    pages = [paths[start : start + 24] for start in range(1000, 1000 + 24 * 5 * 37, 24 * 37)]
    thumbs = bench_thumbnails(pages, paths[0])
    print(
        f"thumbnails (median of {len(pages)} pages of 24): naive open+resize+encode {thumbs['naive'] * 1000:.0f} ms, "
        f"open+Image.thumbnail+encode {thumbs['pil'] * 1000:.0f} ms, "
        f"ours cold {thumbs['cold'] * 1000:.0f} ms ({thumbs['naive'] / thumbs['cold']:.1f}x naive, "
        f"{thumbs['pil'] / thumbs['cold']:.1f}x Image.thumbnail), "
        f"warm {thumbs['warm'] * 1000:.1f} ms, from disk cache {thumbs['disk'] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
