"""Lazy package exports (PEP 562), shared by the core and every adapter package.

A package's ``__init__`` names what it exports and where each name lives; the module holding a
name is imported the first time the name is read, so importing the package stays cheap::

    __getattr__, __dir__ = lazy_exports(__name__, {"SightlineCallbackHandler": "pkg.handler"})
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the ``__getattr__`` and ``__dir__`` of ``package`` for the names in ``exports``.

    ``exports`` maps each public name to the module defining it. A resolved name is cached in
    the package's namespace, so later reads cost nothing.
    """

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module_name), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
