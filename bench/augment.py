"""Augmentations page redraw: 8 samples from each of two pipelines on one 384×512 photo.

    .venv/bin/python bench/augment.py [--samples 8] [--repeats 5] [--pairs baseline,light center-crop,strong]

"page" is the page's core call, ``core.specs.preview_samples`` on an image decoded once: the
deterministic prefix (the resize) runs once, the random rest per sample, torch on one thread.
"naive" is the obvious loop: per sample, decode the file again, build the Compose, run it on the
full photo and de-normalise. Both run the same specs under the same seeds in the same process;
prints ms per redraw (both pipelines) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.data import images  # noqa: E402
from core.specs.pipeline import build_pipeline  # noqa: E402
from core.specs.presets import preset  # noqa: E402
from core.specs.preview import denormalize, preview_samples  # noqa: E402


def demo_photo(folder: Path) -> Path:
    """One photo of the embedded demo data (a 384×512 JPEG/PNG, like the competition's)."""
    from core.data import demo

    demo.generate(folder / "demo", people=1, eval_people=0, seed=0)
    photos = sorted(p for p in (folder / "demo").rglob("*") if p.is_file() and images.is_image_name(p.name))
    return next((p for p in photos if p.suffix.lower() in (".jpg", ".jpeg")), photos[0])


def page_redraw(image: np.ndarray, specs: list[list[dict]], n: int, seed: int) -> list[np.ndarray]:
    return [img for spec in specs for img in preview_samples(image, spec, n, seed)]


def naive_redraw(path: Path, specs: list[list[dict]], n: int, seed: int) -> list[np.ndarray]:
    out = []
    for spec in specs:
        torch.manual_seed(seed)
        for _ in range(n):
            pipeline = build_pipeline(spec)
            out.append(denormalize(pipeline(images.open_rgb(path)), spec))
    return out


def best_ms(func, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--pairs",
        nargs="+",
        default=["baseline,light", "center-crop,strong"],
        help="comma-separated preset names whose training specs are A and B",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = demo_photo(Path(tmp))
        image = np.asarray(images.open_rgb(path))
        print(f"photo {path.name}: {image.shape[1]}×{image.shape[0]}, torch threads {torch.get_num_threads()}")
        for pair in args.pairs:
            names = pair.split(",")
            specs = [preset(name)[0] for name in names]
            page_redraw(image, specs, 1, 0)  # warm up kernels and imports
            naive_redraw(path, specs, 1, 0)
            seed = 0
            page_best, page_med = best_ms(lambda: page_redraw(image, specs, args.samples, seed), args.repeats)  # noqa: B023
            naive_best, naive_med = best_ms(lambda: naive_redraw(path, specs, args.samples, seed), args.repeats)  # noqa: B023
            print(
                f"{' + '.join(names):>22}: {2 * args.samples} samples  page {page_best:7.1f} ms (median {page_med:7.1f})"
                f"  naive {naive_best:7.1f} ms (median {naive_med:7.1f})  ratio {naive_best / page_best:5.1f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
