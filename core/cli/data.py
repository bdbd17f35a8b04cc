"""CLI: ``python -m core scan ROOT [--json] [--verify] [--rescan]``: index a dataset and print what it holds.

The scan keeps a persisted index (core.data.index_store, under the cache folder): a second scan of an
unchanged dataset reads no image header, and one of a changed dataset reads only the changed folders.
``--rescan`` ignores the stored index (a full scan) and stores a fresh one; ``--verify`` always reads
everything (it decodes every image) and leaves the index as it is.
"""

from __future__ import annotations

import argparse
import json
import sys

MAX_PROBLEMS_SHOWN = 20


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``scan``."""
    scan = sub.add_parser(
        "scan",
        help="index a dataset folder (or CSV manifest) and report its classes and problems",
        description="Index a dataset: the mask-status layout (its top folder, train/ or train/images/), "
        "class folders, or a CSV manifest (path,label). Reads image headers only unless --verify.",
    )
    scan.add_argument("root", help="dataset folder, or a path,label CSV manifest")
    scan.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    scan.add_argument("--verify", action="store_true", help="also decode every image fully (slower; shows progress)")
    scan.add_argument(
        "--rescan",
        action="store_true",
        help="ignore the stored index and read every folder again (after files were replaced in place)",
    )
    scan.set_defaults(func=run_scan)


def run_scan(args: argparse.Namespace) -> int:
    from core.data import datasets, stats

    progress = _progress_printer() if args.verify else None
    index = datasets.scan(args.root, verify=args.verify, progress=progress, use_index=True, rescan=args.rescan)
    summary = index.summary()
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        print(format_summary(summary, stats.imbalance_ratio(index)))
    return 0


def _progress_printer():
    def show(done: int, total: int) -> None:
        if sys.stderr.isatty():
            end = "\n" if done == total else ""
            print(f"\rverifying {done}/{total} images", end=end, file=sys.stderr, flush=True)
        elif done == total:
            print(f"verified {total} images", file=sys.stderr)

    return show


def format_summary(summary: dict, imbalance: float) -> str:
    """The human-readable summary of a ``scan`` object."""
    lines = [
        f"{summary['root']}  ({summary['format']})",
        f"images: {summary['n_images']}   groups: {summary['n_groups']}   classes: {len(summary['classes'])}"
        f"   imbalance (largest/smallest class): {imbalance:.1f}x",
        "",
        "class counts:",
    ]
    width = max(len(name) for name in summary["classes"])
    for i, name in enumerate(summary["classes"]):
        lines.append(f"  {i:>3}  {name:<{width}}  {summary['class_counts'][str(i)]:>7}")
    for attribute, counts in summary["attribute_counts"].items():
        lines.append(f"{attribute}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    if summary["eval"] is not None:
        ev = summary["eval"]
        lines.append(f"eval: {ev['rows']} rows, {len(ev['missing'])} missing files")
    problems = summary["problems"]
    more = int(summary.get("more_problems", 0))  # found beyond the WORKBENCH_MAX_PROBLEMS kept
    lines.append(f"problems: {len(problems) + more}")
    shown = problems[:MAX_PROBLEMS_SHOWN]
    for problem in shown:
        lines.append(f"  [{problem['kind']}] {problem['path']}: {problem['message']}")
    rest = len(problems) - len(shown) + more
    if rest:
        kept = f"; only the first {len(problems)} are kept, see WORKBENCH_MAX_PROBLEMS" if more else ""
        lines.append(f"  ... and {rest} more problems (use --json for the list{kept})")
    return "\n".join(lines)
