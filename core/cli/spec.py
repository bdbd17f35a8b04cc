"""``python -m core check-spec TRAIN.json EVAL.json``: the train/eval pair check for scripts."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``check-spec``."""
    parser = sub.add_parser(
        "check-spec",
        help="report how evaluation images would differ from training (exit 1 if they do)",
        description=(
            'Check a train/eval pair of transform specs (JSON lists of {"op": ..., params}). Prints one '
            "finding per line and exits 1 when there is any, 0 when the pair matches, 2 when a file is "
            "not a valid spec."
        ),
    )
    parser.add_argument("train", help="the training spec (JSON file), or a saved pair file when EVAL is left out")
    parser.add_argument("eval", nargs="?", help="the evaluation/inference spec (JSON file)")
    parser.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        default=[512, 384],
        metavar=("H", "W"),
        help="size of the input photos the crops are simulated on (default 512 384)",
    )
    parser.set_defaults(func=run_check_spec)


def run_check_spec(args: argparse.Namespace) -> int:
    from core.specs.paircheck import check_pair
    from core.specs.saved import load_spec_pair

    # one file: a pair saved by the Augmentations page ({"train": [...], "eval": [...]}); each spec validated once
    train, eval_ = load_spec_pair(args.train, args.eval)
    findings = check_pair(train, eval_, input_hw=(args.input_size[0], args.input_size[1]))
    for finding in findings:
        print(finding)
    return 1 if findings else 0
