"""Backbone speed on this machine: training and inference images/s, channels_last against contiguous, one run.

    .venv/bin/python bench/backbones.py                         # the default set below, batch 16, CPU
    .venv/bin/python bench/backbones.py --models resnet18 timm:resnet10t --steps 5 --device cuda
    .venv/bin/python bench/backbones.py --threads 1             # on a machine shared with other work

For each backbone (random weights, random images; core.training.zoo.measure_speed, uncached): one
warm-up step, then ``--steps`` timed steps of training (forward, backward, SGD step) and of inference
(inference_mode), first in the contiguous layout (the naive baseline), then channels_last. Prints
images/s and the channels_last ratio. The default set runs in a few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from core.training import zoo  # noqa: E402

DEFAULT = [
    ("small_cnn", (128, 96)),
    ("resnet18", (224, 224)),
    ("resnet50", (224, 224)),
    ("vgg11", (224, 224)),
    ("efficientnet_b0", (224, 224)),
    ("convnext_tiny", (224, 224)),
    ("timm:resnet10t", (224, 224)),
    ("timm:efficientnet_b0", (224, 224)),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="backbones (at 224x224; small_cnn at 128x96)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # on a busy machine one thread is steadier than two fighting
    todo = [(m, (128, 96) if m == "small_cnn" else (224, 224)) for m in args.models] if args.models else DEFAULT
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"batch {args.batch_size}, {args.steps} timed steps",
        flush=True,
    )
    header = f"{'backbone':22} {'size':8} {'train contig':>12} {'train CL':>9} {'ratio':>6} {'infer contig':>12} {'infer CL':>9} {'ratio':>6}"
    rows = [header, "-" * len(header)]
    start = time.perf_counter()
    for name, size in todo:
        contig, cl = (
            zoo.measure_speed(
                name, size, args.batch_size, args.steps, channels_last=layout, device=args.device, use_cache=False
            )
            for layout in (False, True)
        )
        rows.append(
            f"{name:22} {size[0]}x{size[1]:<5} {contig['train_images_per_s']:12.1f} {cl['train_images_per_s']:9.1f} "
            f"{cl['train_images_per_s'] / contig['train_images_per_s']:6.2f} {contig['infer_images_per_s']:12.1f} "
            f"{cl['infer_images_per_s']:9.1f} {cl['infer_images_per_s'] / contig['infer_images_per_s']:6.2f}"
        )
        print(rows[-1], flush=True)
    print("\nimages/s; CL = channels_last; ratio = channels_last / contiguous (>1: channels_last is faster)")
    print("\n".join(rows))
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
