"""Lazy package exports (PEP 562), shared by the core and every adapter package.

A package's ``__init__`` names what it exports and where each name lives; the module holding a
name is imported the first time the name is read, so importing the package stays cheap::

    __getattr__, __dir__ = lazy_exports(__name__, {"SightlineCallbackHandler": "pkg.handler"})
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping
    from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], submodules: Collection[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the ``__getattr__`` and ``__dir__`` of ``package`` for the names in ``exports``.

    ``exports`` maps each public name to the module defining it. A resolved name is cached in
    the package's namespace, so later reads cost nothing. ``submodules`` are modules of the
    package reachable as its attributes (``package.testing.capture()``) without importing them
    first: one is imported the first time it is read.
    """

    def __getattr__(name: str) -> Any:
        import importlib

        if name in submodules:
            # Importing a submodule sets it as an attribute of its package.
            return importlib.import_module(f"{package}.{name}")
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports) | set(submodules))

    return __getattr__, __dir__
