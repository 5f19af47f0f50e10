"""Strict JSON encoding of the wire form, on the exporters' threads.

orjson (a dependency of the core where it has wheels) is about ten times faster than the
standard library for event-sized documents; the standard library is the fallback. Both refuse
NaN and Infinity, which the pipeline has already replaced.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "dumps_bytes", "loads"]


try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson has no wheel
    _orjson = None  # type: ignore[assignment]


def _unsupported(value: Any) -> str:
    """What a value JSON cannot hold becomes: its bounded repr.

    The pipeline hands exporters strict JSON, but a value it kept uncopied (see
    ``Sanitizer.share_clean``) may have been changed by the application since: one such value
    must not fail a whole batch.
    """
    from sightline.capture import safe_repr

    return safe_repr(value, 1000)


_std_encode = json.JSONEncoder(
    ensure_ascii=False,
    separators=(",", ":"),
    allow_nan=False,
    check_circular=False,
    default=_unsupported,
).encode


def dumps_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON bytes."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value, default=_unsupported)
        except TypeError:  # e.g. an int beyond 64 bits: the standard library handles it
            pass
    return _std_encode(value).encode()


def dumps(value: Any) -> str:
    """Compact JSON text."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value, default=_unsupported).decode()
        except TypeError:
            pass
    return _std_encode(value)


def loads(data: str | bytes) -> Any:
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)
