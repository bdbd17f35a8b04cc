"""CLI: ``python -m core label-issues --run RUN [--kfold K] --out FILE.csv``."""

from __future__ import annotations

import argparse
import sys


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this area's sub-commands on ``sub``."""
    cmd = sub.add_parser(
        "label-issues",
        help="rank images by how strongly out-of-sample predictions disagree with their labels",
        description=(
            "Write suspected label errors of a run as CSV (path,label,suggested,score first, most "
            "suspicious first). Without --kfold the run's validation predictions are used; with "
            "--kfold K, K models are trained (in RUN/folds/fold-i) so every training image gets an "
            "out-of-sample prediction."
        ),
    )
    cmd.add_argument("--run", required=True, help="run folder (holds config.json and val_predictions.parquet)")
    cmd.add_argument("--kfold", type=int, default=None, metavar="K", help="train K fold models first (K >= 2)")
    cmd.add_argument("--out", required=True, help="CSV file to write (atomically)")
    cmd.add_argument("--top", type=int, default=None, help="print the N most suspicious rows")
    cmd.set_defaults(func=label_issues_command)


def label_issues_command(args: argparse.Namespace) -> int:
    from core.evaluation import review

    def progress(done: int, total: int, message: str) -> None:
        print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)

    issues = review.label_issues(args.run, kfold=args.kfold, progress=progress)
    review.write_issues_csv(issues, args.out)
    confident = int(issues["confident"].sum()) if "confident" in issues else 0
    print(f"wrote {len(issues)} rows to {args.out} ({confident} with a confident suggestion)")
    if args.top:
        shown = issues.head(args.top)[["path", "label_name", "suggested_name", "score", "kind", "attribute"]]
        print(shown.to_string(index=False))
    return 0
