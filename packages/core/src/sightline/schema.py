"""Validation of wire events against schema_version 1, without a JSON Schema dependency.

The JSON Schema itself ships in the package (:func:`schema_path`); :func:`validate_event` checks the
same rules by hand so that the core, the collector and the CLI need nothing else. The conformance
tests check that both agree on a fixture of valid and invalid events.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from sightline.event import ERROR_KINDS, EVENT_TYPES

__all__ = ["load_schema", "schema_path", "validate_event"]

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
# [0-9], not \d: \d also matches non-ASCII digits, which no RFC 3339 parser reads.
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}(Z|[+-]00:00)"
)
_FIELDS = frozenset(
    {
        "schema_version", "id", "trace_id", "span_id", "parent_span_id", "type", "name",
        "status", "start_time", "end_time", "duration_ms", "agent", "session_id", "framework",
        "input", "output", "model", "usage", "cost_usd", "error", "metadata", "tags",
    }
)  # fmt: skip
_REQUIRED = ("id", "trace_id", "span_id", "type", "name", "status", "start_time", "end_time")


def schema_path() -> Path:
    """Path of the JSON Schema file shipped inside the package."""
    return Path(__file__).with_name("schemas") / "event.schema.json"


def load_schema() -> dict[str, Any]:
    """The event JSON Schema as a dict."""
    return json.loads(schema_path().read_text(encoding="utf-8"))


def validate_event(data: Any) -> list[str]:
    """Return the problems of one wire event; an empty list means it is valid."""
    if not isinstance(data, dict):
        return ["event must be a JSON object"]
    problems: list[str] = []
    for key in _REQUIRED:
        if key not in data:
            problems.append(f"{key}: required")
    extra = sorted(set(data) - _FIELDS)
    if extra:
        problems.append("unknown fields: " + ", ".join(extra))
    if problems:
        return problems

    def check(cond: bool, message: str) -> None:
        if not cond:
            problems.append(message)

    version = data.get("schema_version", 1)
    check(_is_number(version) and version == 1, "schema_version: must be 1")
    check(_is_str(data["id"]) and 0 < len(data["id"]) <= 128, "id: 1 to 128 characters")
    check(_is_str(data["trace_id"]) and _full(_TRACE_ID, data["trace_id"]),
          "trace_id: 32 lowercase hex")  # fmt: skip
    check(_is_str(data["span_id"]) and _full(_SPAN_ID, data["span_id"]),
          "span_id: 16 lowercase hex")  # fmt: skip
    parent = data.get("parent_span_id")
    check(parent is None or (_is_str(parent) and _full(_SPAN_ID, parent)),
          "parent_span_id: null or 16 lowercase hex")  # fmt: skip
    check(_is_str(data["type"]) and data["type"] in EVENT_TYPES,
          f"type: unknown event type {data['type']!r}")  # fmt: skip
    check(_is_str(data["name"]) and len(data["name"]) <= 1024, "name: string of at most 1024")
    check(data["status"] in ("ok", "error"), "status: 'ok' or 'error'")
    for key in ("start_time", "end_time"):
        check(_is_str(data[key]) and _full(_TIMESTAMP, data[key]),
              f"{key}: RFC 3339 UTC with microseconds")  # fmt: skip
    if "duration_ms" in data:
        value = data["duration_ms"]
        check(_is_number(value) and value >= 0, "duration_ms: a number >= 0")
    for key in ("agent", "session_id", "framework", "model"):
        check(data.get(key) is None or _is_str(data[key]), f"{key}: string or null")
    cost = data.get("cost_usd")
    check(cost is None or (_is_number(cost) and cost >= 0), "cost_usd: a number >= 0 or null")
    usage = data.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            problems.append("usage: object or null")
        else:
            extra_usage = set(usage) - {"input_tokens", "output_tokens", "total_tokens"}
            check(not extra_usage, f"usage: unknown fields {sorted(extra_usage)}")
            for key, value in usage.items():
                check(value is None or (_is_int(value) and value >= 0),
                      f"usage.{key}: integer >= 0 or null")  # fmt: skip
    error = data.get("error")
    if error is not None:
        if not isinstance(error, dict):
            problems.append("error: object or null")
        else:
            for key in ("type", "message", "kind"):
                check(key in error, f"error.{key}: required")
            check(set(error) <= {"type", "message", "stack", "kind"}, "error: unknown fields")
            check(_is_str(error.get("type")), "error.type: string")
            check(_is_str(error.get("message")), "error.message: string")
            check(error.get("stack") is None or _is_str(error["stack"]), "error.stack: string")
            kind = error.get("kind")
            check(_is_str(kind) and kind in ERROR_KINDS, "error.kind: unknown kind")
    metadata = data.get("metadata", {})
    check(isinstance(metadata, dict), "metadata: object")
    tags = data.get("tags", [])
    check(isinstance(tags, list) and all(_is_str(t) for t in tags), "tags: array of strings")
    for key in ("input", "output", "metadata"):
        if key in data and not _strict_json(data[key]):
            problems.append(f"{key}: not strict JSON (NaN, Infinity or a non-JSON value)")
    return problems


def _full(pattern: re.Pattern[str], value: str) -> bool:
    return pattern.fullmatch(value) is not None


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    # JSON Schema counts 3.0 as an integer: so do we, to agree with the shipped schema.
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


class _Leave:
    """Marks, on the walk's stack, the end of a container's children."""

    __slots__ = ("ident",)

    def __init__(self, ident: int) -> None:
        self.ident = ident


def _strict_json(value: Any) -> bool:
    """True when ``value`` is strict JSON. Iterative, so any depth the JSON Schema accepts is
    accepted here too; a cycle (which JSON cannot hold) is rejected."""
    path: set[int] = set()
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (str, bool, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
            continue
        if isinstance(item, _Leave):
            path.discard(item.ident)
            continue
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                return False
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            return False
        ident = id(item)
        if ident in path:
            return False
        path.add(ident)
        stack.append(_Leave(ident))
        stack.extend(children)
    return True
