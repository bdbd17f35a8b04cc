"""Inference throughput: core.evaluation.infer.predict against the baseline notebook's way, same run, same images.

Baseline (the competition notebook): for each image, PIL open + full decode, the eval transforms,
``model(x.unsqueeze(0))`` — batch 1. Ours: ``core.evaluation.infer.predict`` (threaded draft decode, batches,
channels_last, inference_mode). Both use the same run (its eval spec and weights), so the ratio is
the loading and batching, not the model.

    .venv/bin/python bench/infer.py                       # data/bench-full/eval when present, else a
                                                          # generated 1,400-photo demo eval set
    .venv/bin/python bench/infer.py --data DIR --baseline-limit 1000 --model mobilenet_v3_small --threads 1

The baseline is timed with torch's default thread count (what the notebook gets) and with one
thread: on a busy machine, batch-1 inference with several threads is very slow (threads wait for
each other on tiny ops), so the one-thread ratio is the conservative figure.

Prints images/s for both and their ratio (goal: >= 5x), CPU time per image (steadier than wall
time on a shared machine), and how often the two agree on the class (draft decoding changes pixels
slightly, never the geometry).
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

from core import runs, settings  # noqa: E402
from core.data import tasks  # noqa: E402
from core.evaluation import infer  # noqa: E402
from core.specs import transforms  # noqa: E402
from core.training import models  # noqa: E402

FULL_SET = REPO_ROOT / "data" / "bench-full" / "eval"
GENERATED = REPO_ROOT / ".cache" / "bench-infer-demo"


def eval_folder(args: argparse.Namespace) -> Path:
    if args.data:
        return Path(args.data)
    if FULL_SET.joinpath("info.csv").is_file():
        return FULL_SET
    if not GENERATED.joinpath("eval", "info.csv").is_file():
        from core.data import demo

        print(
            f"{FULL_SET} not found: generating a {args.eval_people * 7}-photo demo eval set in {GENERATED}", flush=True
        )
        demo.generate(GENERATED, people=2, eval_people=args.eval_people, seed=0)
    return GENERATED / "eval"


def make_run(parent: Path, model: str, img_size: tuple[int, int]) -> Path:
    """A run folder as training writes it (random weights: throughput does not depend on them)."""
    torch.manual_seed(0)
    classes = tasks.task_classes("class")
    net = models.build_model(model, len(classes), pretrained=False)
    train_spec, eval_spec = transforms.preset("baseline", img_size=img_size)
    folder = runs.create_run_folder(parent, run_id=f"bench-{model}")
    meta = {"model": model, "task": "class", "classes": classes, "img_size": list(img_size), "eval_spec": eval_spec}
    runs.write_config(folder, {"kind": "imported", **meta, "train_spec": train_spec, "source": "bench"})
    runs.save_checkpoint(
        folder.best_checkpoint,
        {
            "model": net.state_dict(),
            "model_name": model,
            "task": "class",
            "classes": classes,
            "img_size": list(img_size),
            "eval_spec": eval_spec,
            "config": meta,
        },
    )
    return folder.root


def baseline(run: infer.RunModel, paths: list[str]) -> tuple[float, np.ndarray]:
    """The notebook's loop: open, full decode, transform, batch of one."""
    pipeline = transforms.build_pipeline(run.eval_spec)
    model = run.model  # as loaded: the notebook neither fuses layers nor sets channels_last
    preds = np.empty(len(paths), dtype=np.int64)
    start = time.perf_counter()
    with torch.no_grad():
        for i, path in enumerate(paths):
            image = Image.open(path).convert("RGB")
            x = pipeline(image).unsqueeze(0).to(run.device)
            preds[i] = int(model(x).argmax(1).item())
    seconds = time.perf_counter() - start
    return seconds, preds


def loading_only(run: infer.RunModel, paths: list[str]) -> tuple[float, float]:
    """Seconds to turn ``paths`` into model input: the notebook's way, and core.evaluation.infer's (no model)."""
    pipeline = transforms.build_pipeline(run.eval_spec)
    start = time.perf_counter()
    for path in paths:
        pipeline(Image.open(path).convert("RGB"))
    naive = time.perf_counter() - start
    ours = infer.InputPipeline(run.eval_spec)
    start = time.perf_counter()
    for _, items in infer.iter_batches(paths, ours.load_uint8, infer.DEFAULT_BATCH_SIZE):
        ours.finish(torch.stack(items))
    return naive, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="eval folder (info.csv + images/)")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--img-size", type=int, nargs=2, default=(128, 96), metavar=("H", "W"))
    parser.add_argument("--limit", type=int, default=0, help="predict only the first N images (0: all)")
    parser.add_argument("--baseline-limit", type=int, default=500, help="time the slow baseline on the first N")
    parser.add_argument("--eval-people", type=int, default=200, help="size of the generated set (7 photos each)")
    parser.add_argument("--batch-size", type=int, default=infer.DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both ways (0: torch's default)")
    args = parser.parse_args()
    settings.keep_freed_memory()  # as `python -m core predict` and every prediction job do
    if args.threads:
        torch.set_num_threads(args.threads)

    data = eval_folder(args)
    items = infer.collect_items(data)
    if args.limit:
        items.frame = items.frame.iloc[: args.limit].reset_index(drop=True)
    paths = items.frame["path"].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        run = infer.load_run(make_run(Path(tmp), args.model, tuple(args.img_size)))
        print(
            f"data: {data} ({len(paths)} images), model: {args.model} at {tuple(args.img_size)}, "
            f"device: {run.device}, torch threads: {torch.get_num_threads()}",
            flush=True,
        )
        infer.predict([run], infer.Items(items.root, "images", items.frame.iloc[:64]))  # warm-up

        cpu = time.process_time()
        result = infer.predict([run], items, batch_size=args.batch_size)
        ours, ours_cpu = len(paths) / result.seconds, (time.process_time() - cpu) / len(paths)
        print(
            f"core.evaluation.infer.predict: {len(paths)} images in {result.seconds:.1f} s = {ours:.0f} images/s, "
            f"{1000 * ours_cpu:.1f} CPU ms/image",
            flush=True,
        )

        n = min(len(paths), args.baseline_limit) if args.baseline_limit else len(paths)
        default_threads = torch.get_num_threads()
        fastest = 0.0
        for threads in sorted({default_threads, 1}, reverse=True):
            torch.set_num_threads(threads)
            cpu = time.process_time()
            seconds, base_preds = baseline(run, paths[:n])
            base, base_cpu = n / seconds, (time.process_time() - cpu) / n
            fastest = max(fastest, base)
            agree = float((result.frame["pred"].to_numpy()[:n] == base_preds).mean())
            print(
                f"baseline (batch 1, full decode + resize, {threads} torch thread(s)): {n} images in {seconds:.1f} s "
                f"= {base:.1f} images/s, {1000 * base_cpu:.1f} CPU ms/image; ratio {ours / base:.1f}x wall "
                f"(goal >= 5x), {base_cpu / ours_cpu:.1f}x CPU; same class on {agree:.1%}"
            )
        torch.set_num_threads(default_threads)
        print(f"RATIO against the faster baseline: {ours / fastest:.1f}x (goal >= 5x)")
        naive, fast = loading_only(run, paths[:n])
        print(
            f"loading only (decode + eval transforms, no model), {n} images: notebook {n / naive:.0f} images/s, "
            f"core.evaluation.infer {n / fast:.0f} images/s = {naive / fast:.1f}x"
        )


if __name__ == "__main__":
    main()
