"""Why the model is wrong, timed: embeddings + 2-D map, the quality pass against a naive one, duplicates, Grad-CAM.

    .venv/bin/python bench/explain.py                  # every photo of data/demo when present, else a
                                                       # generated 300-person demo set (2,100 photos)
    .venv/bin/python bench/explain.py --limit 1000 --data DIR

Prints:
- embeddings: images/s of a run's head-input features (small_cnn and resnet18, random weights: the
  speed does not depend on them) and the 2-D map's time (UMAP; numba's one-off compile timed apart);
- quality: images/s of ``core.data.quality.image_stats`` (draft decode at 1/4 scale, threads) against
  a naive loop computing the same statistics from a full decode, and how often the two flag the same
  (goal: >= 3x);
- duplicates: seconds for hashing, fingerprints and the all-pairs comparison;
- Grad-CAM: ms per card (one photo, one class, uncached) and per cached card.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from core import runs  # noqa: E402
from core.data import duplicates, quality  # noqa: E402
from core.evaluation import embeddings, gradcam, infer  # noqa: E402
from core.specs import transforms  # noqa: E402
from core.training import models  # noqa: E402

DEMO = REPO_ROOT / "data" / "demo"
GENERATED = REPO_ROOT / ".cache" / "bench-explain-demo"
IMG_SIZE = (128, 96)


def photos(args: argparse.Namespace) -> list[str]:
    root = Path(args.data) if args.data else DEMO if (DEMO / "train").is_dir() else GENERATED
    if not args.data and root == GENERATED and not (GENERATED / "train").is_dir():
        from core.data import demo

        print(f"{DEMO} not found: generating a {args.people}-person demo set in {GENERATED}", flush=True)
        demo.generate(GENERATED, people=args.people, eval_people=2, seed=0)
    found = sorted(
        str(p) for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.name.startswith(".")
    )
    found = [p for p in found if "/eval/" not in p] or found  # the training photos: what a run validates on
    print(f"data: {root} ({len(found)} photos{f', first {args.limit} used' if args.limit else ''})")
    return found[: args.limit] if args.limit else found


def make_run(parent: Path, model: str) -> Path:
    """A run folder as training writes it (random weights)."""
    _, spec = transforms.preset("baseline", img_size=IMG_SIZE)
    classes = [f"c{k}" for k in range(18)]
    net = models.build_model(model, len(classes))
    folder = runs.create_run_folder(parent, run_id=model)
    meta = {"model": model, "task": "class", "classes": classes, "img_size": list(IMG_SIZE), "eval_spec": spec}
    runs.write_config(folder, {"kind": "imported", **meta, "train_spec": spec, "source": "bench"})
    keys = ("task", "classes", "img_size", "eval_spec")
    ckpt = {"model": net.state_dict(), "model_name": model, **{k: meta[k] for k in keys}, "config": meta}
    runs.save_checkpoint(folder.best_checkpoint, ckpt)
    runs.write_status(folder, state="completed")
    return folder.root


def bench_embeddings(paths: list[str], run_dirs: dict[str, Path]) -> None:
    print("\n== embeddings + 2-D map")
    feats = None
    for name, run in run_dirs.items():
        member = infer.load_run(run, "cpu")
        started = time.perf_counter()
        result = embeddings.compute_embeddings(member, paths)
        seconds = time.perf_counter() - started
        print(
            f"{name:>10}: {len(paths)} images x {result.features.shape[1]} features in {seconds:.1f}s "
            f"({len(paths) / seconds:.0f} images/s)"
        )
        feats = result.features if feats is None else feats
    half = feats.astype(np.float16)
    if embeddings.umap_available():
        started = time.perf_counter()
        embeddings.project_2d(np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32), method="umap")
        print(f"UMAP first call (numba compiles, once per process): {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    xy = embeddings.project_2d(half)
    method = "UMAP" if len(half) >= embeddings.PCA_BELOW and embeddings.umap_available() else "PCA"
    print(f"2-D map ({method}) of {len(half)} points: {time.perf_counter() - started:.1f}s  -> {xy.shape}")
    started = time.perf_counter()
    for i in range(20):
        embeddings.nearest_neighbours(half, i, k=12)
    print(f"nearest neighbours: {(time.perf_counter() - started) / 20 * 1000:.1f} ms per query")


def naive_stats(path: str, full_resolution: bool = False) -> dict:
    """The same statistics from a full decode, no draft, no threads: what a plain script does.

    ``full_resolution``: measured on the whole photo (a script that never shrinks it; the blur
    statistic then reads another scale, so its flags differ). Otherwise box-shrunk to the working
    size first: the same numbers as ours, so the ratio is the draft decode and the threads alone.
    """
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    scale = quality.WORK_SIDE / max(rgb.size)
    if scale < 1 and not full_resolution:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.BOX)
    return {
        "path": path,
        **quality.image_statistics(np.asarray(rgb, dtype=np.uint8)),
        "width": rgb.width,
        "height": rgb.height,
    }


def _timed(work) -> tuple[object, float, float]:
    cpu, started = time.process_time(), time.perf_counter()
    result = work()
    return result, time.perf_counter() - started, time.process_time() - cpu


def bench_quality(paths: list[str]) -> None:
    import pandas as pd

    print("\n== quality pass")
    quality.image_stats(paths[:32])  # warm the thread pool and numpy
    ours, ours_s, ours_cpu = _timed(lambda: quality.image_stats(paths))
    n = len(paths)
    ours_ms = ours_cpu / n * 1000
    print(f"ours (1/4 draft, {quality.THREADS} threads): {n / ours_s:6.0f} images/s  ({ours_ms:.2f} ms CPU per image)")
    for label, full in (("naive, shrunk to the working size", False), ("naive, statistics at full size", True)):
        naive, naive_s, naive_cpu = _timed(lambda full=full: pd.DataFrame([naive_stats(p, full) for p in paths]))
        print(
            f"{label}: {n / naive_s:6.0f} images/s  ({naive_cpu / n * 1000:.2f} ms CPU per image)  "
            f"-> ours is {naive_s / ours_s:.1f}x wall, {naive_cpu / ours_cpu:.1f}x CPU (goal >= 3x)"
        )
        if not full:
            naive[["width", "height"]] = ours[["width", "height"]].to_numpy()  # sizes from the headers in both
            a = {tuple(r) for r in quality.flag_issues(ours)[["path", "issue"]].itertuples(index=False)}
            b = {tuple(r) for r in quality.flag_issues(naive)[["path", "issue"]].itertuples(index=False)}
            print(f"  flags: ours {len(a)}, this naive pass {len(b)}, in both {len(a & b)}")
    for issue, count in quality.flag_issues(ours)["issue"].value_counts().items():
        print(f"  {issue}: {count}")


def bench_duplicates(paths: list[str]) -> None:
    print("\n== duplicates")
    started = time.perf_counter()
    hashes = duplicates.content_hashes(paths)
    hashed = time.perf_counter()
    prints = duplicates.fingerprints(paths)
    printed = time.perf_counter()
    pairs = duplicates.near_pairs(prints)
    done = time.perf_counter()
    exact = duplicates.exact_pairs(paths, hashes)
    print(
        f"hashes {hashed - started:.2f}s, fingerprints {printed - hashed:.2f}s, all-pairs {done - printed:.2f}s "
        f"for {len(paths)} photos: {len(exact)} exact and {len(pairs)} pairs within the near distance"
    )


def bench_gradcam(paths: list[str], run_dirs: dict[str, Path], cards: int) -> None:
    print("\n== Grad-CAM per card (128x96, CPU)")
    for name, run in run_dirs.items():
        member = infer.load_run(run, "cpu")
        gradcam.gradcam(member, paths[0], 0)  # captum import and layer search: once per process and run
        gradcam.clear_cache()
        started = time.perf_counter()
        for i, path in enumerate(paths[1 : cards + 1]):
            gradcam.gradcam(member, path, i % 18)
        uncached = (time.perf_counter() - started) / cards
        started = time.perf_counter()
        for i, path in enumerate(paths[1 : cards + 1]):
            gradcam.gradcam(member, path, i % 18)
        cached = (time.perf_counter() - started) / cards
        started = time.perf_counter()
        for path in paths[1 : min(cards, 5) + 1]:
            gradcam.overlay_for(member, path, 0)
        overlay = (time.perf_counter() - started) / min(cards, 5)
        print(
            f"{name:>10}: {uncached * 1000:.0f} ms per card, {cached * 1000:.2f} ms cached, "
            f"{overlay * 1000:.0f} ms for the overlay at the photo's size (cached map)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder of photos (default: data/demo, else a generated set)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    parser.add_argument("--people", type=int, default=300, help="people in the generated demo set (default 300)")
    parser.add_argument("--cards", type=int, default=20, help="Grad-CAM cards to time per model (default 20)")
    args = parser.parse_args()
    paths = photos(args)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        run_dirs = {name: make_run(Path(tmp), name) for name in ("small_cnn", "resnet18")}
        bench_quality(paths)
        bench_duplicates(paths)
        bench_embeddings(paths, run_dirs)
        bench_gradcam(paths, run_dirs, args.cards)
    return 0


if __name__ == "__main__":
    sys.exit(main())
