"""Sightline's own logging: the ``sightline`` logger, and :func:`log_safely` for every message
Sightline logs from the application's threads or its own."""

from __future__ import annotations

import logging

__all__ = ["log_safely", "logger"]

logger = logging.getLogger("sightline")


def log_safely(level: int, message: str, *args: object, exc_info: bool = False) -> None:
    """Log on the ``sightline`` logger, swallowing what the application's logging handlers
    raise: Sightline logs on the application's threads (an import hook, ``track()``, ``close()``)
    and on its own (the worker, exporter threads), and a failing handler must neither raise
    into the caller nor end a background thread or count a delivered batch as failed."""
    try:
        logger.log(level, message, *args, exc_info=exc_info)
    except Exception:
        pass
