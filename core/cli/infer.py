"""CLI: ``predict`` (foreground or as a background job), ``validate-submission``, ``import-checkpoint``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this area's sub-commands on ``sub``."""
    p = sub.add_parser(
        "predict",
        help="predict a dataset with one run or an ensemble; write submission.csv for an eval folder",
        description="Predict with each run's own eval transforms. With an eval folder (info.csv + images/) "
        "the output is submission.csv (ImageID,ans); probabilities and a summary are written beside it.",
    )
    p.add_argument(
        "--run", action="append", default=[], metavar="RUN", help="run folder or run id (repeat for an ensemble)"
    )
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--data", help="eval folder with info.csv, a folder of images, or a dataset")
    p.add_argument("--out", help="output CSV (submission.csv for an eval folder)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--job", metavar="DIR", help="run the prediction job described by DIR/config.json (background form)")
    p.set_defaults(func=cmd_predict)

    v = sub.add_parser("validate-submission", help="check a submission.csv against info.csv (exit 0 valid, 1 not)")
    v.add_argument("file")
    v.add_argument("--info", required=True, metavar="INFO_CSV")
    v.set_defaults(func=cmd_validate)

    i = sub.add_parser("import-checkpoint", help="turn a state_dict file (.pt/.pth/.safetensors) into a run")
    i.add_argument("file")
    i.add_argument("--model", required=True, help="architecture name (see core.training.models.MODEL_NAMES)")
    i.add_argument("--task", required=True, help="class, mask, gender or age")
    i.add_argument("--run", required=True, metavar="DIR", help="the new run folder (must not exist)")
    i.add_argument("--img-size", type=int, nargs=2, default=(128, 96), metavar=("H", "W"))
    i.set_defaults(func=cmd_import)


def _tqdm_progress():
    from tqdm import tqdm

    bar = tqdm(unit="img", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


def cmd_predict(args: argparse.Namespace) -> int:
    from core.errors import ConfigError

    if args.job:
        if args.run or args.data or args.out:
            raise ConfigError("--job takes its runs, data and output from DIR/config.json: drop --run/--data/--out")
        return _predict_job(Path(args.job), args.batch_size, args.device)
    if not args.run or not args.data or not args.out:
        raise ConfigError("predict needs --run RUN (one or more), --data EVAL_ROOT and --out FILE (or --job DIR)")
    from core.evaluation import infer

    bar, progress = _tqdm_progress()
    try:
        summary = infer.predict_to_files(
            args.run,
            args.data,
            args.out,
            tta=args.tta,
            batch_size=args.batch_size,
            device=args.device,
            progress=progress,
        )
    finally:
        bar.close()
    print(
        f"wrote {args.out}: {summary['images']} images, {summary['images_per_s']} images/s, "
        f"validator: {'valid' if summary['validator']['valid'] else 'INVALID'}"
    )
    return 0


def _predict_job(folder: Path, batch_size: int, device: str | None) -> int:
    from core.evaluation import infer, predjobs
    from core.fsutil import atomic_write_json
    from core.runs import jobs

    config = predjobs.read_prediction_job(folder)

    def work(ctx) -> None:
        def progress(done: int, total: int) -> None:
            ctx.heartbeat(step=done, total_steps=total, message=f"predicted {done}/{total} images")
            if ctx.cancel_requested():
                raise jobs.JobCancelled()

        try:
            summary = infer.predict_to_files(
                config["runs"],
                config["data"],
                folder / predjobs.SUBMISSION_FILE,
                tta=config["tta"],
                batch_size=batch_size,
                device=device,
                progress=progress,
            )
        except infer.EvalImagesError as err:
            # status.json keeps one line; the page lists every image from this file
            atomic_write_json(folder / predjobs.IMAGE_PROBLEMS_FILE, {"images": err.images})
            raise
        ctx.heartbeat(message=f"wrote {predjobs.SUBMISSION_FILE}: {summary['images']} images", force=True)

    jobs.run_job(folder, work)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from core.evaluation.submission import submission_warnings, validate_submission

    problems = validate_submission(args.file, args.info)
    warnings = submission_warnings(args.file)
    if problems:
        print(f"{args.file}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"- {problem}")
    else:
        print(f"{args.file}: valid")
    for warning in warnings:  # the file stays valid: a warning never changes the exit status
        print(f"warning: {warning}")
    return 1 if problems else 0


def cmd_import(args: argparse.Namespace) -> int:
    from core.evaluation.checkpoints import import_checkpoint

    folder = import_checkpoint(args.file, args.model, args.task, args.run, img_size=tuple(args.img_size))
    print(f"imported {args.file} as run {folder.root}")
    return 0
