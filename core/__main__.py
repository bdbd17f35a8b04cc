"""CLI: ``python -m core {demo-data,scan,check-spec,train,label-issues,predict,validate-submission,...}``.

Each ``core/cli/<area>.py`` registers its sub-commands with ``add_commands(subparsers)`` and imports
heavy libraries (torch) inside the command function, so ``--help`` stays quick. A user mistake is
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from core import settings
from core.errors import WorkbenchError

COMMAND_MODULES = (
    "core.cli.demo",
    "core.cli.data",
    "core.cli.spec",
    "core.cli.train",
    "core.cli.jobs",
    "core.cli.review",
    "core.cli.infer",
    "core.cli.leaderboard",
    "core.cli.sweep",
    "core.cli.models",
    "core.cli.explain",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Image-classification workbench CLI")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings.keep_freed_memory()  # predictions and training allocate the same big blocks batch after batch
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
