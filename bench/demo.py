"""Demo-data generation speed: the process pool against a single process, measured in the same run.

    .venv/bin/python bench/demo.py [--people 60] [--workers N]

Prints images/s for each and the ratio, and checks that both wrote the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import demo  # noqa: E402


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def timed(out: Path, people: int, workers: int) -> tuple[float, str]:
    start = time.perf_counter()
    demo.generate(out, people=people, eval_people=0, seed=0, workers=workers)
    return time.perf_counter() - start, digest(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    images = args.people * len(demo.PHOTOS)
    with tempfile.TemporaryDirectory() as tmp:
        single, single_digest = timed(Path(tmp) / "single", args.people, 1)
        pooled, pooled_digest = timed(Path(tmp) / "pool", args.people, args.workers)
    print(f"demo data, {args.people} people ({images} images of 384x512), {os.cpu_count()} CPUs")
    print(f"  single process : {images / single:7.1f} images/s  ({single:.2f} s)")
    print(f"  pool of {args.workers:<7d}: {images / pooled:7.1f} images/s  ({pooled:.2f} s)")
    print(f"  ratio pool/single: {single / pooled:.2f}x; same bytes: {single_digest == pooled_digest}")
    full = 500 * len(demo.PHOTOS)
    print(f"  projected default set (300 + 200 people, {full} images): {full / (images / pooled):.1f} s with the pool")
    return 0 if single_digest == pooled_digest else 1


if __name__ == "__main__":
    sys.exit(main())
