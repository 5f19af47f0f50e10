"""Safe capture: turn any Python value into bounded, strict JSON, masking secrets on the way.

Runs on the background worker, never on the caller's thread. It never raises: a value that cannot
be read is recorded by a bounded, safe representation instead.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["KEPT_ITEMS", "MASK", "TRUNCATED", "Sanitizer", "bounded_copy", "is_secret_key"]

MASK = "[REDACTED]"
TRUNCATED = "…[truncated]"
KEPT_ITEMS = 500
"""Items of a list, dict or set a recorded value keeps (the sanitizer's default ``max_items``)."""


def bounded_copy(value: Any) -> Any:
    """A copy, one level deep, of a list, dict or set, of at most the items that are recorded:
    a longer one keeps its first 499 and a marker, as the sanitizer writes it
    (``…[truncated] N more items``, or a ``…[truncated]`` key: ``N more keys``).

    For integrations that snapshot a value on the application's thread, so that later changes
    do not show in what is recorded, without copying more than will be kept.
    """
    if len(value) <= KEPT_ITEMS:
        return value.copy()
    more = len(value) - (KEPT_ITEMS - 1)
    if isinstance(value, dict):
        out = dict(itertools.islice(value.items(), KEPT_ITEMS - 1))
        out[TRUNCATED] = f"{more} more keys"
        return out
    items = (
        value[: KEPT_ITEMS - 1]
        if isinstance(value, list)
        else list(itertools.islice(value, KEPT_ITEMS - 1))
    )
    items.append(f"{TRUNCATED} {more} more items")
    return items


# Key names that hold secrets: api_key, apiKey, x-api-key, access_token, password, passwd,
# authorization, secret, client_secret, private_key, cookie, credentials...
# "token" names a secret only as the last word of a key (token, access_token, X-Auth-Token,
# githubToken); keys that merely mention tokens (max_tokens, token_count,
# time_to_first_token_ms) are measurements, not secrets.
_SECRET_KEY = re.compile(
    r"(api[-_ ]?key|apikey|(^|[-_ .]|[a-z](?=T))token$|passw(or)?d|passwd|pwd|authorization|"
    r"secret|private[-_]?key|cookie|credential|session[-_]?key|bearer)",
    re.IGNORECASE,
)
_NOT_SECRET = re.compile(
    r"(tokens?_?(count|usage|used)|_tokens$|^tokens$|max_tokens|num_tokens)", re.I
)
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_KEY_LIKE = re.compile(r"\b(sk|sl|pk|rk|xox[abp])[-_][A-Za-z0-9_-]{16,}")
_SHORTEST_SECRET = 14
_SECRET_KEY_MEMO = 4096  # distinct key names remembered per Sanitizer


def is_secret_key(key: str, extra: frozenset[str] = frozenset()) -> bool:
    """True when a mapping key names a secret (``api_key``, ``Authorization``, ``password``...)."""
    lowered = key.lower()
    if lowered in extra:
        return True
    if _NOT_SECRET.search(key):
        return False
    return _SECRET_KEY.search(key) is not None


class Sanitizer:
    """Copies a value into strict JSON within limits.

    - strings longer than ``max_string`` are cut and marked with ``…[truncated]``;
    - containers deeper than ``max_depth`` or longer than ``max_items`` are cut with a marker;
    - cycles become ``"[cycle]"``;
    - NaN and infinities become strings, and so do integers outside the signed 64-bit range
      (``"<int with N bits>"`` past about 4200 digits); bytes become a short description;
    - other objects become their bounded ``repr`` (or ``<unrepresentable T>`` if that raises),
      except objects offering ``model_dump()`` / ``dict()`` / ``to_dict()`` or dataclasses,
      which are read as mappings;
    - values under secret-looking keys are replaced by ``[REDACTED]``, and bearer tokens or
      API-key-shaped strings inside text are masked.

    The result is a copy, unless ``share_clean`` is set: then a ``dict`` or ``list`` that is
    already strict JSON within every limit, with nothing to mask, is returned as it is (no
    allocation). Set it only when nothing will change the result in place afterwards, since
    it may be the caller's own object.
    """

    __slots__ = (
        "_secret_keys",
        "extra_keys",
        "max_depth",
        "max_items",
        "max_string",
        "scan_strings",
        "share_clean",
    )

    def __init__(
        self,
        max_string: int = 16_384,
        max_depth: int = 12,
        max_items: int = 500,
        redact_keys: Iterable[str] = (),
        scan_strings: bool = True,
        share_clean: bool = False,
    ) -> None:
        self.max_string = max_string
        self.max_depth = max_depth
        self.max_items = max_items
        self.extra_keys = frozenset(k.lower() for k in redact_keys)
        self.scan_strings = scan_strings
        self.share_clean = share_clean
        # Key name → is it a secret. The same few keys come back in every event; two regex
        # searches per key were most of the cost of a small event.
        self._secret_keys: dict[str, bool] = {}

    def __call__(self, value: Any) -> Any:
        try:
            cls = type(value)  # never raises, unlike value.__class__ on an unbound proxy
            if cls is str:
                return self._string(value)
            if self.share_clean and (cls is dict or cls is list) and self._clean(value, 0):
                return value
            return self._copy(value, 0, set())
        except Exception as exc:  # the walk itself must never fail the event
            return _unserializable(value, exc)

    def _string(self, text: str) -> str:
        if len(text) > self.max_string:
            text = text[: self.max_string] + TRUNCATED
        # 14: the shortest text a pattern can match ("Basic " + 8 characters); a shorter
        # threshold would let short header values such as "Bearer abcd1234" through.
        if self.scan_strings and len(text) >= _SHORTEST_SECRET:
            if "earer" in text or "asic" in text or "EARER" in text or "ASIC" in text:
                text = _BEARER.sub(lambda m: m.group(1) + " " + MASK, text)
            if "-" in text or "_" in text:
                text = _KEY_LIKE.sub(MASK, text)
        return text

    def _copy(self, value: Any, depth: int, seen: set[int]) -> Any:
        if value is None or value is True or value is False:
            return value
        kind = type(value)
        if kind is str:
            return self._string(value)
        if kind is int:
            # Beyond 64 bits a store's INTEGER and many JSON readers fail: the number as text.
            if -9223372036854775808 <= value <= 9223372036854775807:
                return value
            return self._string(_big_int_text(value))
        if kind is float:
            return value if math.isfinite(value) else str(value)
        if kind is dict or kind is list:  # the common containers, without the ABC check below
            if depth >= self.max_depth:
                return TRUNCATED
            ident = id(value)
            if ident in seen:
                return "[cycle]"
            seen.add(ident)
            try:
                if kind is dict:
                    return self._mapping(value, depth, seen)
                return self._sequence(value, depth, seen)
            finally:
                seen.discard(ident)
        if isinstance(value, (dict, list, tuple, set, frozenset, Mapping)):
            if depth >= self.max_depth:
                return TRUNCATED
            ident = id(value)
            if ident in seen:
                return "[cycle]"
            seen.add(ident)
            try:
                if isinstance(value, Mapping):
                    return self._mapping(value, depth, seen)
                return self._sequence(value, depth, seen)
            finally:
                seen.discard(ident)
        if isinstance(value, str):  # str subclasses (enums with str mixin, ...)
            return self._string(str.__str__(value))
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return self._copy(int(value), depth, seen)
        if isinstance(value, float):
            return self._copy(float(value), depth, seen)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"<{kind.__name__} len={len(value)}>"
        as_mapping = _as_mapping(value)
        if as_mapping is not None:
            if depth >= self.max_depth:
                return TRUNCATED
            ident = id(value)
            if ident in seen:
                return "[cycle]"
            seen.add(ident)
            try:
                return self._mapping(as_mapping, depth, seen)
            finally:
                seen.discard(ident)
        return self._string(safe_repr(value, self.max_string))

    def _clean(self, value: dict[Any, Any] | list[Any], depth: int) -> bool:
        """True when ``value`` (a dict or list) is strict JSON within every limit, with no
        secret to mask: then it can be kept as it is. A read-only walk, cheaper than a copy.

        No set of containers seen: a cycle runs into ``max_depth`` and is then found unclean,
        and the copying path marks it."""
        if depth >= self.max_depth or len(value) > self.max_items:
            return False
        # Strings this short are never cut or masked: no call for them.
        short = _SHORTEST_SECRET - 1 if self.max_string >= _SHORTEST_SECRET else self.max_string
        # type(x), not x.__class__: that one raises on a proxy whose target is unbound
        # (werkzeug's LocalProxy, Django's SimpleLazyObject), and may lie about the type.
        if type(value) is dict:
            memo = self._secret_keys
            for key, item in value.items():
                if type(key) is not str:
                    return False
                if item is None:
                    continue  # a None under a secret's key has nothing to mask
                secret = memo.get(key)
                if secret is None:
                    secret = self._judge_key(key)
                if secret:
                    return False
                cls = type(item)
                if cls is str:
                    if len(item) > short and self._string(item) is not item:
                        return False
                elif not self._clean_leaf(item, cls, depth):
                    return False
            return True
        for item in value:
            cls = type(item)
            if cls is str:
                if len(item) > short and self._string(item) is not item:
                    return False
            elif item is not None and not self._clean_leaf(item, cls, depth):
                return False
        return True

    def _clean_leaf(self, item: Any, cls: type, depth: int) -> bool:
        """``_clean`` for one item that is neither a string nor ``None``."""
        if cls is dict or cls is list:
            return self._clean(item, depth + 1)
        if cls is float:
            return math.isfinite(item)
        if cls is int:
            return -9223372036854775808 <= item <= 9223372036854775807
        return cls is bool

    def _judge_key(self, name: str) -> bool:
        """Is ``name`` a secret's key? Remembered: the same few names come back every event."""
        secret = is_secret_key(name, self.extra_keys)
        if len(self._secret_keys) < _SECRET_KEY_MEMO:
            self._secret_keys[name] = secret
        return secret

    def _mapping(self, value: Mapping[Any, Any], depth: int, seen: set[int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, (key, item) in enumerate(list(value.items())):
            if index >= self.max_items:
                out[TRUNCATED] = f"{len(value) - self.max_items} more keys"
                break
            name = key if isinstance(key, str) else safe_repr(key, 200)
            secret = self._secret_keys.get(name)
            if secret is None:
                secret = self._judge_key(name)
            if secret and item is not None:
                out[name] = MASK
            elif type(item) is str:  # the common leaf, without a call to _copy
                out[name] = self._string(item)
            else:
                try:
                    out[name] = self._copy(item, depth + 1, seen)
                except Exception as exc:  # one unreadable value loses itself, not its neighbours
                    out[name] = _unserializable(item, exc)
        return out

    def _sequence(self, value: Iterable[Any], depth: int, seen: set[int]) -> list[Any]:
        items = list(value)
        if isinstance(value, (set, frozenset)):
            try:
                items = sorted(items)
            except Exception:
                pass
        out: list[Any] = []
        append = out.append
        for item in items[: self.max_items]:
            if type(item) is str:
                append(self._string(item))
                continue
            try:
                append(self._copy(item, depth + 1, seen))
            except Exception as exc:  # one unreadable item loses itself, not the others
                append(_unserializable(item, exc))
        if len(items) > self.max_items:
            out.append(f"{TRUNCATED} {len(items) - self.max_items} more items")
        return out


def _unserializable(value: object, exc: BaseException) -> str:
    """The marker recorded for a value the walk failed on: its type and the error's."""
    return f"<unserializable {type(value).__name__}: {type(exc).__name__}>"


def _big_int_text(value: int) -> str:
    """The decimal text of an int; ``<int with N bits>`` for one too long to write quickly
    (Python refuses more than 4300 digits by default, and writing them is quadratic)."""
    bits = value.bit_length()
    if bits <= 14_000:  # about 4200 digits
        try:
            return str(value)
        except ValueError:  # sys.set_int_max_str_digits() set lower
            pass
    return f"<int with {bits} bits>"


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    """Read well-known record types (pydantic, dataclasses, attrs-like) as mappings."""
    try:
        dump = getattr(value, "model_dump", None)
        if callable(dump) and not isinstance(value, type):
            data = dump()
            return data if isinstance(data, Mapping) else None
        if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
            # fields(), not __dataclass_fields__: that one also lists ClassVar and InitVar
            # pseudo-fields (LangGraph's Command.PARENT), which are not the value's data.
            return {
                field.name: getattr(value, field.name, None) for field in dataclasses.fields(value)
            }
    except Exception:
        return None
    return None


def safe_repr(value: Any, limit: int = 1000) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises."""
    try:
        text = repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
    if not isinstance(text, str):
        return f"<unrepresentable {type(value).__name__}>"
    if len(text) > limit:
        text = text[:limit] + TRUNCATED
    return text
