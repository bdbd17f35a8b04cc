"""Lazy package exports: ``core.training.TrainConfig`` without importing torch until it is asked for.

Each sub-package ``__init__`` names its public API and the module that defines it; the module is
imported on first attribute access (PEP 562), so ``from core.data import datasets`` on a page does
not pull in torch through a sibling module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``{name: submodule}``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
