"""``python -m core leaderboard {record,show}``: leaderboard scores kept beside each submission."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("leaderboard", help="record leaderboard scores of submissions; compare with validation")
    lb_sub = parser.add_subparsers(dest="leaderboard_command", required=True, metavar="ACTION")

    p = lb_sub.add_parser("record", help="record the public and/or private leaderboard score of a submission")
    p.add_argument("submission", help="submission folder (submissions/<name>/) or its name")
    p.add_argument("--public", type=float, help="public leaderboard score (macro F1, 0-1)")
    p.add_argument("--private", type=float, help="private leaderboard score (macro F1, 0-1)")
    p.add_argument("--note", help="a short note kept with the scores")
    p.add_argument("--submissions-dir", help="folder of submissions (default: WORKBENCH_SUBMISSIONS_DIR)")
    p.set_defaults(func=_record)

    p = lb_sub.add_parser("show", help="each submission's runs, their best validation F1 and the leaderboard scores")
    p.add_argument("--csv", metavar="OUT", help="also write the joined table as a CSV file")
    p.add_argument("--submissions-dir", help="folder of submissions (default: WORKBENCH_SUBMISSIONS_DIR)")
    p.set_defaults(func=_show)


def _record(args: argparse.Namespace) -> int:
    from core.evaluation import leaderboard

    scores = leaderboard.record_scores(
        args.submission, public=args.public, private=args.private, note=args.note, submissions_dir=args.submissions_dir
    )
    shown = ", ".join(f"{k} {scores[k]:.4f}" for k in ("public", "private") if scores.get(k) is not None)
    print(f"{args.submission}: {shown}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from core.evaluation import leaderboard

    table = leaderboard.joined_table(args.submissions_dir)
    if args.csv:
        leaderboard.export_csv(args.csv, table=table)
        print(f"wrote {args.csv}")
    if table.empty:
        print("no submissions")
        return 0
    columns = ["submission", "run", "model", "run_state", "val_f1", "submission_val_f1", "public", "private"]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0
