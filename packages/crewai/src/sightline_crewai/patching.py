"""Methods of CrewAI's classes wrapped by the adapter, and put back: one place for both patchers
(the kickoff watcher, :mod:`sightline_crewai.kickoff`, and tool governance,
:mod:`sightline_crewai.governance`)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from sightline.logs import log_safely

__all__ = ["ORIGINAL", "MethodPatches"]

ORIGINAL = "__sightline_original__"
"""The attribute of a wrapper that holds the method it wraps (a method already wrapped by
Sightline is not wrapped again)."""


class MethodPatches:
    """Methods wrapped on classes found by module and class name, remembered to be put back.

    Not thread-safe by itself: the patchers call it under their own lock. ``what`` says what
    the wrapping is for, in the debug messages ("watch", "govern").
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._patched: list[tuple[type, str, Any]] = []  # (class, method name, original)

    def __bool__(self) -> bool:
        return bool(self._patched)

    def wrap(
        self,
        module_name: str,
        class_name: str,
        names: Iterable[str],
        wrapper: Callable[[Callable[..., Any]], Callable[..., Any]],
    ) -> None:
        """Replace each method ``name`` defined on the class by ``wrapper(original)``
        (which sets :data:`ORIGINAL` on what it returns). A class or method that is missing, or
        a method already wrapped, is left as it is; never raises."""
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except Exception:
            log_safely(
                logging.DEBUG,
                "sightline: crewai: no %s.%s to %s",
                module_name,
                class_name,
                self.what,
            )
            return
        for name in names:
            original = cls.__dict__.get(name)
            if original is None or not callable(original) or hasattr(original, ORIGINAL):
                continue
            try:
                setattr(cls, name, wrapper(original))
            except Exception:
                log_safely(
                    logging.DEBUG, "sightline: crewai: cannot %s %s.%s", self.what, class_name, name
                )
                continue
            self._patched.append((cls, name, original))

    def restore(self) -> None:
        """Put the original methods back (those nobody replaced since). Idempotent."""
        while self._patched:
            cls, name, original = self._patched.pop()
            if getattr(cls.__dict__.get(name), ORIGINAL, None) is original:
                try:
                    setattr(cls, name, original)
                except Exception:
                    log_safely(
                        logging.DEBUG, "sightline: crewai: cannot restore %s.%s", cls.__name__, name
                    )

    def names(self) -> list[str]:
        """``Class.method`` of each method wrapped now."""
        return sorted(f"{cls.__name__}.{name}" for cls, name, _ in self._patched)
