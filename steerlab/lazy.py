"""Lazy package exports (PEP 562): ``import steerlab.train`` stays cheap until a name is used.

A package lists ``{name: module}`` and sets ``__getattr__ = lazy_exports(__name__, EXPORTS)``; the module
(absolute, or a submodule of the package with ``relative=True``) is imported on first access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], *, relative: bool = False) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` on first use; others raise AttributeError."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = f"{package}.{exports[name]}" if relative else exports[name]
        return getattr(importlib.import_module(module), name)

    return __getattr__
