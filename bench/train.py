"""Training input pipeline and epoch time: the competition baseline's naive loop against ours, same run.

    .venv/bin/python bench/train.py [--data data/bench-full] [--people 100] [--images 700] [--resnet-images 192]

Uses data/bench-full (the full-size demo) when present, else generates a demo of ``--people`` people
under .cache/bench-train/. Measures, on the same images at 128x96:

- input pipeline, images/s: naive (PIL full decode + torchvision Resize/ToTensor/Normalize, as the
  baseline's Dataset does), draft decode (core.training.loader.DecodeSource), the uint8 memmap cache
  (core.training.loader.CachedSource, built beforehand; its build time is printed too), with and without a
  per-sample random flip;
- one training epoch (wall time) of small_cnn and of resnet18 (on a subsample): the naive loop
  (naive loader in a DataLoader, contiguous tensors) against ours (cache + channels_last where it helps).

Goals: draft >= 2x naive; cached >= 20x naive; small_cnn epoch >= 2x faster than the naive loop.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from core.data import (
    datasets,  # noqa: E402
    demo,
)
from core.specs.pipeline import PrefixThenRest  # noqa: E402
from core.specs.presets import preset_pair  # noqa: E402
from core.specs.spec import TransformSpec  # noqa: E402
from core.training import models  # noqa: E402
from core.training.loader import CachedSource, DecodeSource, one_thread, open_or_build_cache  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIZE = (128, 96)
MEAN, STD = (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)


class NaiveDataset(torch.utils.data.Dataset):
    """What the competition baseline does per image: full decode, resize, to tensor, normalise."""

    def __init__(self, paths: list[str], labels: np.ndarray):
        from torchvision import transforms as T

        self.paths, self.labels = paths, labels
        self.transform = T.Compose([T.Resize(SIZE, Image.BILINEAR), T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # One thread, as in a DataLoader worker (and as our loader does): fair to the baseline.
        with one_thread():
            return self.transform(Image.open(self.paths[i]).convert("RGB")), int(self.labels[i])


def dataset_root(args) -> Path:
    if args.data and Path(args.data).is_dir():
        return Path(args.data)
    root = REPO / ".cache" / "bench-train" / f"demo-{args.people}"
    if not (root / "train").is_dir():
        print(f"generating a {args.people}-person demo under {root} (data/bench-full not found)", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        demo.generate(root, people=args.people, eval_people=0, seed=0)
    return root


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:9.1f} images/s ({seconds:6.2f} s)"


def time_naive_loader(paths, labels) -> float:
    ds = NaiveDataset(paths, labels)
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return time.perf_counter() - start


def time_source(source, positions: np.ndarray | int, seeds: np.ndarray | None = None) -> float:
    positions = np.arange(positions) if isinstance(positions, int) else positions
    seeds = np.zeros(len(positions), np.int64) if seeds is None else seeds
    start = time.perf_counter()
    for _ in source.batches(positions, seeds, 64):
        pass
    return time.perf_counter() - start


def train_epoch(model, batches, channels_last: bool) -> tuple[float, int]:
    """One pass over ``batches`` of (images, labels); returns (seconds, images)."""
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.train()
    seen = 0
    start = time.perf_counter()
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=fmt)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    return time.perf_counter() - start, seen


def naive_batches(paths, labels):
    loader = torch.utils.data.DataLoader(NaiveDataset(paths, labels), batch_size=64, shuffle=True, num_workers=0)
    return ((x, y) for x, y in loader)


def our_batches(source: CachedSource, labels: torch.Tensor, positions: np.ndarray):
    order = positions[torch.randperm(len(positions)).numpy()]
    return ((b.images, labels[b.positions]) for b in source.batches(order, np.zeros(len(order), np.int64), 64))


def compare_epochs(name: str, paths, labels, source, warm: int) -> float:
    y = torch.as_tensor(labels)
    torch.manual_seed(0)
    naive_model = models.build_model(name, int(labels.max()) + 1)
    ours_model = models.build_model(name, int(labels.max()) + 1)
    ours_model.load_state_dict(naive_model.state_dict())
    cl = models.prefers_channels_last(name)
    ours_model = ours_model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    # One warm-up step each (oneDNN picks its kernels on the first call).
    train_epoch(naive_model, naive_batches(paths[:warm], labels[:warm]), False)
    train_epoch(ours_model, our_batches(source, y, np.arange(warm)), cl)
    # The epoch in two halves, in the order naive, ours, ours, naive: load drift hits both alike.
    half = len(paths) // 2
    naive_s = ours_s = 0.0
    for lo, hi, naive_first in ((0, half, True), (half, len(paths), False)):
        for which in ("naive", "ours") if naive_first else ("ours", "naive"):
            if which == "naive":
                naive_s += train_epoch(naive_model, naive_batches(paths[lo:hi], labels[lo:hi]), False)[0]
            else:
                ours_s += train_epoch(ours_model, our_batches(source, y, np.arange(lo, hi)), cl)[0]
    n = len(paths)
    print(
        f"  {name:<10} naive loop {naive_s:7.2f} s | ours {ours_s:7.2f} s ({'channels_last' if cl else 'contiguous'})"
        f" | {n} images | ratio {naive_s / ours_s:.2f}x"
    )
    return naive_s / ours_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=str(REPO / "data" / "bench-full"), help="dataset root (default data/bench-full)"
    )
    parser.add_argument("--people", type=int, default=100, help="people to generate when --data is missing")
    parser.add_argument("--images", type=int, default=700, help="images for throughput and the small_cnn epoch")
    parser.add_argument("--resnet-images", type=int, default=192, help="images for the resnet18 epoch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    root = dataset_root(args)
    index = datasets.scan(root)
    frame = index.frame.sample(frac=1.0, random_state=0).head(args.images).reset_index(drop=True)
    paths = frame["path"].astype(str).tolist()
    labels, _ = index.task_labels("class")
    labels = index.frame.set_index("path").loc[paths, "label"].to_numpy(np.int64)
    n = len(paths)
    train_spec, _ = preset_pair("baseline", SIZE)
    flip_spec = TransformSpec.parse([train_spec[0], {"op": "RandomHorizontalFlip", "p": 0.5}, *train_spec[1:]])
    steps, flip_steps = PrefixThenRest(train_spec), PrefixThenRest(flip_spec)  # both cache the same Resize
    print(
        f"data: {root} ({len(index.frame)} images, using {n}); input {SIZE[0]}x{SIZE[1]}; "
        f"torch threads {torch.get_num_threads()}"
    )

    print("input pipeline (one process; the methods take turns on chunks of 100 images so load drift hits all):")
    draft_source = DecodeSource(paths, steps, workers=0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache, skipped, _ = open_or_build_cache(paths, steps.prefix_spec, SIZE, tmp)
        build = time.perf_counter() - start
        source = CachedSource(cache, steps, skipped)
        flip_source = CachedSource(cache, flip_steps, skipped)
        time_source(source, min(n, 128))  # page the memmap in, as every epoch after the first finds it
        naive = draft = cached = flipped = 0.0
        for lo in range(0, n, 100):
            chunk = np.arange(lo, min(lo + 100, n))
            naive += time_naive_loader([paths[i] for i in chunk], labels[chunk])
            draft += time_source(draft_source, chunk)
            cached += time_source(source, chunk)
            flipped += time_source(flip_source, chunk, chunk)
        print(f"  naive (PIL full decode + torchvision) {rate(n, naive)}")
        print(f"  draft decode (core.training.loader)           {rate(n, draft)}   {naive / draft:5.2f}x naive")
        print(f"  cache build (draft decode + write)   {rate(n, build)}")
        print(f"  cached (memmap, batch transform)     {rate(n, cached)}   {naive / cached:5.1f}x naive")
        print(f"  cached + per-sample random flip      {rate(n, flipped)}   {naive / flipped:5.1f}x naive")

        print("one training epoch at 128x96 (naive loop: naive loader, contiguous; ours: cache):")
        small = compare_epochs("small_cnn", paths, labels, source, warm=64)
        k = min(args.resnet_images, n)
        cache_k = CachedSource(cache[:k], steps, skipped)
        resnet = compare_epochs("resnet18", paths[:k], labels[:k], cache_k, warm=64)
        del cache, source, flip_source, cache_k

    print("summary:")
    print(
        f"  draft/naive {naive / draft:.2f}x (goal >= 2)   cached/naive {naive / cached:.1f}x (goal >= 20)   "
        f"small_cnn epoch {small:.2f}x (goal >= 2)   resnet18 epoch {resnet:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
