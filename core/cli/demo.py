"""``python -m core demo-data OUT``: write the synthetic demo dataset in the competition layout."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``demo-data`` on ``sub``."""
    cmd = sub.add_parser(
        "demo-data",
        help="write the synthetic demo dataset (competition layout) into a new folder",
        description="Write synthetic portraits in the mask-status competition layout into the new folder OUT. "
        "Same seed, same bytes.",
    )
    cmd.add_argument("out", metavar="OUT", help="folder to create (must not exist, or be empty)")
    cmd.add_argument("--people", type=int, default=300, help="training people, 7 photos each (default 300)")
    cmd.add_argument("--eval-people", type=int, default=200, help="eval people, 7 photos each (default 200)")
    cmd.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    cmd.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of training photos given a wrong label, e.g. 0.01 (default 0)",
    )
    cmd.add_argument(
        "--truth",
        metavar="FILE",
        help="write the planted label errors here (CSV), and the eval set's labels to FILE's <stem>_eval.csv",
    )
    cmd.add_argument(
        "--plant-issues",
        action="store_true",
        help="also plant known duplicates, near duplicates, dark, bright and blurred photos (listed in OUT/plants.csv)",
    )
    cmd.add_argument("--workers", type=int, default=None, help="drawing processes (default: CPU count)")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    cmd.set_defaults(func=run_demo_data)


def run_demo_data(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.data import demo

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="img", desc="demo data", disable=args.quiet)
        bar.update(done - bar.n)

    try:
        out = demo.generate(
            args.out,
            people=args.people,
            eval_people=args.eval_people,
            seed=args.seed,
            label_noise=args.label_noise,
            truth=args.truth,
            progress=progress,
            workers=args.workers,
        )
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {out}")
    if args.plant_issues:
        from core.data import demo_plants

        rows = demo_plants.plant_issues(out, seed=args.seed, counts=demo_plants.counts_for(7 * args.people))
        print(f"planted {len(rows)} image issues, listed in {Path(out) / demo_plants.TRUTH_NAME}")
    if args.truth:
        print(f"truth: {args.truth} and {demo.eval_truth_path(args.truth)}")
    return 0
