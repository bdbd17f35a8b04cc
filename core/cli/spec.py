"""CLI commands for this area (stub until its issue lands)."""

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this area's sub-commands on ``sub``."""
