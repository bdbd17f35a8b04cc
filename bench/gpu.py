"""GPU throughput of the training and inference paths, against the goals, written to one JSON file.

    python bench/gpu.py                    # on a CUDA machine: $OUT/gpu.json (gpu.json without OUT), printed too
    python bench/gpu.py --out gpu.json     # another place
    python bench/gpu.py --cpu-smoke        # a tiny version on the CPU: tests this script, measures nothing useful

Makes its own data (core.data.demo.generate into a temp folder: --people x 7 photos of 384x512), so it
runs on a bare machine. For small_cnn at 128x96, resnet50 and efficientnet_b0 at 224x224 and, when timm
is installed, timm:resnet50, with the training loop's own pieces (core.training: make_source,
prefetched, build_parts, train_step, evaluate's autocast):

- cache: seconds to decode every photo once into the uint8 memmap cache;
- loader: images/s the cache delivers to the GPU (uint8 batches, pinned, prefetched, normalised on the
  GPU) and images/s from JPEG decoding (DataLoader workers sized to the machine);
- train: images/s with AMP (bfloat16 where supported) and in float32, channels_last; resnet50 also
  with AMP in the contiguous layout; ``data_wait`` is the share of step time the loop (and so the GPU,
  which each step's loss read synchronises) waits for the next batch; peak GPU memory;
- infer: images/s of the eval model (BatchNorm fused, channels_last, inference_mode) with AMP and without;
- ratios: AMP against float32, the cache against JPEG decoding, channels_last against contiguous.

Goals (one H200): resnet50 AMP training >= 3,000 images/s, inference >= 10,000 images/s, data wait
< 10% with the cache; small_cnn training >= 20,000 images/s. The whole run takes a few minutes and
prints progress; without CUDA (and without --cpu-smoke) it prints "no CUDA: skipped" and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

GOALS = [
    ("resnet50", "train", "amp", "images_per_s", ">=", 3000.0, "resnet50 224x224 AMP training images/s"),
    ("resnet50", "infer", "amp", "images_per_s", ">=", 10000.0, "resnet50 224x224 AMP inference images/s"),
    ("resnet50", "train", "amp", "data_wait", "<", 0.10, "resnet50 share of step time waiting for data (cache)"),
    ("small_cnn", "train", "amp", "images_per_s", ">=", 20000.0, "small_cnn 128x96 AMP training images/s"),
]
STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


def plan(args: argparse.Namespace) -> list[dict]:
    """(model, size, batch) to measure; the smoke run is one tiny model on the CPU."""
    if args.cpu_smoke:
        return [{"model": "small_cnn", "size": (32, 24), "batch": 8}]
    todo = [
        {"model": "small_cnn", "size": (128, 96), "batch": 512},
        {"model": "resnet50", "size": (224, 224), "batch": 256, "contiguous_too": True},
        {"model": "efficientnet_b0", "size": (224, 224), "batch": 256},
    ]
    try:
        import timm  # noqa: F401

        todo.append({"model": "timm:resnet50", "size": (224, 224), "batch": 256})
    except ImportError:
        say("timm is not installed: no timm model")
    return [t for t in todo if not args.models or t["model"] in args.models]


# ---- data ----------------------------------------------------------------------------------------------


def make_dataset(folder: Path, people: int) -> tuple[list[str], list[tuple[int, int]], np.ndarray]:
    from core.data import datasets, demo

    started = time.perf_counter()
    root = demo.generate(folder / "demo", people=people, eval_people=0, seed=0)
    index = datasets.scan(root)
    labels, _ = index.task_labels("class")
    frame = index.frame.reset_index(drop=True)
    say(f"demo data: {len(frame)} photos in {time.perf_counter() - started:.1f} s")
    sizes = list(zip(frame["height"].astype(int), frame["width"].astype(int), strict=True))
    return frame["path"].astype(str).tolist(), sizes, np.asarray(labels, dtype=np.int64)


def sources(paths, sizes, size, cache_dir: Path, device: torch.device) -> tuple[object, object, float]:
    """(cached source, JPEG-decoding source, seconds to build the cache)."""
    from core.specs import transforms
    from core.training.loader import DecodeSource, make_source, resolve_workers

    spec, _ = transforms.preset("baseline", size)
    workers = resolve_workers(-1, device.type)
    cuda = device.type == "cuda"
    started = time.perf_counter()
    cached = make_source(paths, sizes, spec, "memmap", cache_dir, workers, log=say, device_finish=cuda)
    built = time.perf_counter() - started
    return cached, DecodeSource(paths, spec, workers, pin_memory=cuda), built


def epochs_of(n_images: int, images: int, seed: int = 0) -> np.ndarray:
    """Positions for ``images`` samples: shuffled passes over the dataset, one after another."""
    rng = np.random.default_rng(seed)
    passes = -(-images // n_images)
    return np.concatenate([rng.permutation(n_images) for _ in range(passes)])[:images]


# ---- measurements ------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def loader_rate(source, n_images: int, batch: int, steps: int, device: torch.device) -> float:
    """Images/s a source delivers to the device, ready for the model (normalised there or on the CPU);
    timed from the second batch on (worker processes and the prefetch thread start during the first)."""
    from core.training.loader import prefetched

    positions = epochs_of(n_images, batch * (steps + 1), seed=1)
    stream = source.batches(positions, np.arange(len(positions), dtype=np.int64), batch)
    if device.type == "cuda":
        stream = prefetched(stream)
    seen, started = 0, None
    for b in stream:
        x = b.to(device, channels_last=True)
        if started is None:
            sync(device)
            started = time.perf_counter()
            continue
        seen += len(b.positions)
    sync(device)
    del x
    return seen / (time.perf_counter() - started)


def train_rate(
    model_name: str,
    size,
    batch: int,
    source,
    labels: np.ndarray,
    device,
    amp: str,
    channels_last: bool,
    warmup: int,
    steps: int,
) -> dict:
    """Images/s of the training step on batches from ``source`` and the share of time waiting for them."""
    from core.training import models
    from core.training.config import TrainConfig
    from core.training.loader import prefetched
    from core.training.parts import build_parts
    from core.training.state import TrainState
    from core.training.steps import train_step

    num_classes = int(labels.max()) + 1
    cfg = TrainConfig(
        model=model_name,
        amp=amp,
        channels_last=channels_last,
        batch_size=batch,
        warmup_steps=0,
        device=device.type,
        **_specs(size),
    )
    torch.manual_seed(0)
    model = models.build_model(model_name, num_classes)
    total = warmup + steps
    parts = build_parts(cfg, model, device, labels, num_classes, spe=total, total_steps=total, log=say)
    parts.model.train()
    labels_t = torch.as_tensor(labels)
    positions = epochs_of(len(labels), batch * total, seed=2)
    stream = source.batches(positions, np.arange(len(positions), dtype=np.int64), batch)
    stream = iter(prefetched(stream) if device.type == "cuda" else stream)
    state = TrainState()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    waited = 0.0
    for i in range(total):
        if i == warmup:  # cuDNN's autotuning and the first allocations are done
            sync(device)
            started, waited = time.perf_counter(), 0.0
        before = time.perf_counter()
        b = next(stream)
        waited += time.perf_counter() - before
        train_step(parts, state, b, labels_t)  # ends reading the loss: the GPU has finished the step
    elapsed = time.perf_counter() - started
    if hasattr(stream, "close"):
        stream.close()  # stops the prefetching thread
    out = {"images_per_s": round(steps * batch / elapsed, 1), "data_wait": round(waited / elapsed, 4),
           "amp_dtype": str(parts.amp_dtype).removeprefix("torch.") if parts.amp_dtype else None,
           "channels_last": parts.channels_last, "steps": steps, "batch": batch}  # fmt: skip
    if device.type == "cuda":
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def infer_rate(
    model_name: str,
    size,
    batch: int,
    source,
    n_images: int,
    num_classes: int,
    device,
    amp: str,
    warmup: int,
    steps: int,
) -> dict:
    """Images/s of the eval model (as core.evaluation.infer runs it) on batches from ``source``."""
    from core.training import models
    from core.training.loader import prefetched
    from core.training.parts import amp_dtype, autocast

    torch.manual_seed(0)
    model = models.build_model(model_name, num_classes).to(device).eval()
    net = models.fuse_for_inference(model).to(memory_format=torch.channels_last)
    dtype = amp_dtype(amp, device)
    positions = epochs_of(n_images, batch * (warmup + steps), seed=3)
    stream = source.batches(positions, np.zeros(len(positions), dtype=np.int64), batch)
    stream = iter(prefetched(stream) if device.type == "cuda" else stream)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode(), autocast(device, dtype):
        for i in range(warmup + steps):
            if i == warmup:
                sync(device)
                started = time.perf_counter()
            x = next(stream).to(device, channels_last=True)
            out = net(x).float().softmax(1)
        out.cpu()  # waits for the last batch
    elapsed = time.perf_counter() - started
    result = {
        "images_per_s": round(steps * batch / elapsed, 1),
        "amp_dtype": str(dtype).removeprefix("torch.") if dtype else None,
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def _specs(size) -> dict:
    from core.specs import transforms

    train, eval_ = transforms.preset("baseline", size)
    return {"train_spec": train, "eval_spec": eval_, "img_size": list(size)}


# ---- one model ---------------------------------------------------------------------------------------


def measure_model(item: dict, paths, sizes, labels, cache_dir: Path, device, args) -> dict:
    name, size, batch = item["model"], item["size"], item["batch"]
    out: dict = {"size": list(size), "batch": batch}
    say(f"{name} at {size[0]}x{size[1]}, batch {batch}: building sources")
    cached, decoded, built = sources(paths, sizes, size, cache_dir, device)
    out["cache_build_s"] = round(built, 2)
    loader_steps = 3 if args.cpu_smoke else 20
    out["loader"] = {
        "cache_images_per_s": round(loader_rate(cached, len(paths), batch, loader_steps, device), 1),
        "jpeg_images_per_s": round(loader_rate(decoded, len(paths), batch, max(2, loader_steps // 4), device), 1),
        "jpeg_workers": decoded.workers,
    }
    say(f"{name}: loader {out['loader']}")
    warmup, steps = (1, 2) if args.cpu_smoke else (args.warmup, args.steps)
    amp_on = "bf16" if args.cpu_smoke else "auto"
    runs = [("amp", amp_on, True), ("fp32", "off", True)]
    if item.get("contiguous_too"):
        runs.append(("amp_contiguous", amp_on, False))
    out["train"] = {}
    for key, amp, channels_last in runs:
        out["train"][key] = train_rate(name, size, batch, cached, labels, device, amp, channels_last, warmup, steps)
        say(f"{name}: train {key} {out['train'][key]}")
    out["infer"] = {}
    infer_batch = batch * (1 if args.cpu_smoke else 2)
    for key, amp in (("amp", amp_on), ("fp32", "off")):
        out["infer"][key] = infer_rate(
            name, size, infer_batch, cached, len(paths), int(labels.max()) + 1, device, amp, warmup, steps
        )
        say(f"{name}: infer {key} {out['infer'][key]}")
    out["ratios"] = ratios(out)
    say(f"{name}: ratios {out['ratios']}")
    return out


def ratios(out: dict) -> dict:
    """Each speed-up against its naive baseline, measured in the same run."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    train, infer, load = out["train"], out["infer"], out["loader"]
    found = {
        "train_amp_vs_fp32": ratio(train["amp"]["images_per_s"], train["fp32"]["images_per_s"]),
        "infer_amp_vs_fp32": ratio(infer["amp"]["images_per_s"], infer["fp32"]["images_per_s"]),
        "loader_cache_vs_jpeg": ratio(load["cache_images_per_s"], load["jpeg_images_per_s"]),
    }
    if "amp_contiguous" in train:
        found["train_channels_last_vs_contiguous"] = ratio(
            train["amp"]["images_per_s"], train["amp_contiguous"]["images_per_s"]
        )
    return found


def check_goals(models: dict) -> list[dict]:
    rows = []
    for model, part, key, metric, op, goal, what in GOALS:
        got = models.get(model, {}).get(part, {}).get(key, {}).get(metric)
        met = None if got is None else (got >= goal if op == ">=" else got < goal)
        rows.append({"goal": f"{what} {op} {goal:g}", "got": got, "met": met})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = str(Path(os.environ["OUT"]) / "gpu.json") if os.environ.get("OUT") else "gpu.json"
    parser.add_argument("--out", default=default_out, help="the JSON file to write (default: %(default)s)")
    parser.add_argument("--cpu-smoke", action="store_true", help="a tiny run on the CPU (tests the script)")
    parser.add_argument("--people", type=int, default=500, help="demo people to generate (7 photos each)")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps before each measurement")
    parser.add_argument("--steps", type=int, default=25, help="timed steps per measurement")
    parser.add_argument("--models", nargs="+", help="only these (small_cnn resnet50 efficientnet_b0 timm:resnet50)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("no CUDA: skipped", flush=True)
        return 0
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    report: dict = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({platform.processor() or 'unknown'})",
        "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
        "bf16_supported": bool(device.type == "cuda" and torch.cuda.is_bf16_supported()), "cpu_smoke": args.cpu_smoke,
    }  # fmt: skip
    say(f"{report['device']}, torch {report['torch']}, {report['cpu_count']} CPUs")
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        os.environ["WORKBENCH_CACHE_DIR"] = str(Path(tmp) / "cache")  # the cache's size budget reads settings
        paths, sizes, labels = make_dataset(Path(tmp), 3 if args.cpu_smoke else args.people)
        report["photos"] = len(paths)
        report["models"] = {}
        for item in plan(args):
            try:
                report["models"][item["model"]] = measure_model(
                    item, paths, sizes, labels, Path(tmp) / "cache", device, args
                )
            except Exception as err:  # noqa: BLE001 - one model failing (out of memory...) must not lose the others
                traceback.print_exc()
                report["models"][item["model"]] = {"error": f"{type(err).__name__}: {err}"[:500]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["goals"] = check_goals(report["models"])
    report["seconds"] = round(time.perf_counter() - STARTED, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2), flush=True)
    for row in report["goals"]:
        mark = {True: "MET", False: "NOT MET", None: "n/a"}[row["met"]]
        print(f"{mark:8} {row['goal']}: {row['got']}", flush=True)
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
