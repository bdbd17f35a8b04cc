"""Benchmark: one Review/Dataset gallery page of 24 thumbnails, cold and warm, against the naive way.

    .venv/bin/python bench/gallery.py [--photos DIR] [--repeats N]

- naive: open each full photo, decode it whole, resize to 160 px and encode a JPEG, every time
  (what showing full photos scaled down costs on each rerun);
- cold: core.data.thumbnails.thumbnail_jpeg with empty memory and disk caches (draft decode + encode +
  disk write), one after another; "cold threads": core.evaluation.review.thumbnails, as the Review page makes
  a page (a few threads: Pillow decodes without holding the GIL);
- warm (disk): memory cache cleared, thumbnails read back from the disk cache (a new app process);
- warm (memory): the in-memory LRU hit of a rerun or a page visited again.

Photos: 24 demo-size 384x512 JPEGs from data/demo when present, else generated with core.data.demo.
Goals (issue 5): warm page <= 50 ms, cold page >= 3x faster than naive.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

PAGE = 24
SIDE = 160


def find_photos(given: str | None, scratch: Path) -> list[str]:
    from core.data import images

    roots = [Path(given)] if given else [Path("data/demo/train/images")]
    for root in roots:
        if root.is_dir():
            found = sorted(
                str(p) for p in root.rglob("*") if images.is_image_name(p.name) and p.suffix.lower() != ".png"
            )
            if len(found) >= PAGE:
                return found[:PAGE]
    from core.data import demo

    out = demo.generate(scratch / "demo", people=4, eval_people=1, seed=0, workers=1)
    return sorted(str(p) for p in (out / "train" / "images").rglob("*") if images.is_image_name(p.name))[:PAGE]


def naive_page(paths: list[str]) -> int:
    total = 0
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("RGB")  # full decode
            scale = SIDE / max(im.size)
            small = im.resize((round(im.width * scale), round(im.height * scale)))
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=80)
        total += buf.tell()
    return total


def timed(fn, *args) -> tuple[float, float]:
    """(wall ms, CPU ms of this process): on a shared machine the CPU time is the steadier figure."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", help="folder of photos (default data/demo/train/images, else generated)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-gallery-") as tmp:
        scratch = Path(tmp)
        paths = find_photos(args.photos, scratch)
        from core.data import thumbnails

        sizes = {Image.open(p).size for p in paths}
        print(f"{len(paths)} photos, sizes {sorted(sizes)}, thumbnails at {SIDE} px, median of {args.repeats} runs")

        from core.evaluation import review

        def page() -> list[bytes]:
            return [thumbnails.thumbnail_jpeg(p, SIDE) for p in paths]

        def threaded_page() -> list[bytes]:  # what the Review page does
            return review.thumbnails(paths, SIDE)

        naive_page(paths)  # warm the OS file cache for everyone alike
        naive, cold, cold_threads, disk, memory = [], [], [], [], []
        for i in range(args.repeats):
            naive.append(timed(naive_page, paths))
            os.environ["WORKBENCH_CACHE_DIR"] = str(scratch / f"cache-t{i}")  # empty disk cache
            thumbnails.clear_thumbnail_memory()
            cold_threads.append(timed(threaded_page))
            os.environ["WORKBENCH_CACHE_DIR"] = str(scratch / f"cache-{i}")
            thumbnails.clear_thumbnail_memory()
            cold.append(timed(page))
            thumbnails.clear_thumbnail_memory()
            disk.append(timed(page))
            memory.append(timed(page))
        thumb_kb = sum(len(b) for b in page()) / len(paths) / 1024

    series = (("naive", naive), ("cold", cold), ("cold threads", cold_threads), ("warm disk", disk),
              ("warm memory", memory))  # fmt: skip
    med = {name: statistics.median(w for w, _ in v) for name, v in series}
    cpu = {name: statistics.median(c for _, c in v) for name, v in series}
    print(f"  {'':12s} {'wall ms/page':>13s} {'x naive':>8s} {'CPU ms/page':>12s} {'x naive':>8s}")
    for name, ms in med.items():
        print(
            f"  {name:12s} {ms:13.2f} {med['naive'] / ms:8.1f} {cpu[name]:12.2f} {cpu['naive'] / max(cpu[name], 1e-3):8.1f}"
        )
    print(f"  thumbnail size {thumb_kb:.1f} KB on average")
    ok_warm = med["warm disk"] <= 50 and med["warm memory"] <= 50
    best_cold = min(med["cold"], med["cold threads"])
    ok_cold = med["naive"] / best_cold >= 3
    print(
        f"goal warm page <= 50 ms: {'met' if ok_warm else 'MISSED'}; "
        f"goal cold >= 3x naive: {'met' if ok_cold else 'MISSED'} ({med['naive'] / best_cold:.1f}x wall, "
        f"{cpu['naive'] / cpu['cold']:.1f}x CPU; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
