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

__all__ = [
    "KEPT_ITEMS",
    "MASK",
    "TRUNCATED",
    "Sanitizer",
    "bounded_copy",
    "is_secret_key",
    "mask_text_secrets",
]

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
# "Basic " + 8 characters: no secret in text is shorter but name=value and a URL's password,
# which hold "=" or ":" and are looked for from _SHORTEST_KEY_VALUE ("pwd=x") on.
_SHORTEST_SECRET = 14
_SHORTEST_KEY_VALUE = 5
_SECRET_KEY_MEMO = 4096  # distinct key names remembered per Sanitizer

# Key names whose value is masked when they appear in text as `name=value` or `name: value`
# (db_password=..., "api_key": "...", X-Api-Key: ..., AWS_SECRET_ACCESS_KEY=...): the name
# ends the key (prefixes such as db_ or client_ are kept and need no listing).
_TEXT_SECRET_NAMES = (
    "password", "passwd", "pwd", "passphrase", "secret", "token", "api_key", "access_key",
    "secret_key", "private_key", "session_key", "credential", "credentials", "cookie",
    "authorization",
)  # fmt: skip
# Names whose value is read their own way, told by an empty group of this name: an
# authorization's value is a scheme and a credential (``Token abc``), both masked; a pwd's is
# left when it is a path (``PWD=/home/app`` is the shell's working folder, not a password).
_TEXT_SECRET_NAMES_OF_THEIR_OWN = {"authorization": "auth", "pwd": "pwd"}
_TEXT_SECRETS: tuple[re.Pattern[str], ...] | None = None  # compiled on first use
_SHORTEST_TOKEN = 19  # "sk-" + 16 characters
# Group name → how many characters before the group the masked text starts: the token's
# prefix, matched by a look-behind so that the pattern can start at a rare character.
_TOKEN_PREFIX = {"sk": 3, "xox": 5, "github": 4, "github_pat": 7, "aws": 1}


def is_secret_key(key: str, extra: frozenset[str] = frozenset()) -> bool:
    """True when a mapping key names a secret (``api_key``, ``Authorization``, ``password``...)."""
    lowered = key.lower()
    if lowered in extra:
        return True
    if _NOT_SECRET.search(key):
        return False
    return _SECRET_KEY.search(key) is not None


def mask_text_secrets(text: str) -> str:
    """``text`` with the secrets written inside it masked, or ``text`` itself (the same object)
    when it holds none:

    - the value of ``name=value`` / ``name: value`` for secret names (``password``, ``passwd``,
      ``pwd``, ``passphrase``, ``secret``, ``token``, ``api_key``/``api-key``/``apikey``,
      ``access_key``, ``secret_key``, ``private_key``, ``session_key``, ``credential(s)``,
      ``cookie``, ``authorization``; in any case, after any prefix such as ``db_`` or
      ``Proxy-``; the name may be quoted or followed by one space, as in JSON, a repr or
      ``name = value``). The value runs to the next space, quote, ``&``, ``,``, ``;``, ``<``,
      ``>`` or closing bracket, or to its closing quote when quoted; an authorization's value
      is its scheme and credential both (``Authorization: Token abc`` → ``Authorization:
      [REDACTED]``). Left as they are: ``None``, ``null``, a Bearer/Basic credential (masked
      on its own, its scheme kept), a ``pwd`` that is a path (``PWD=/home/app``, the shell's
      working folder), and prose after a colon: a word followed by more words (``No
      credentials: check config``);
    - the password of a URL's userinfo (``postgres://user:pw@host`` keeps ``user``);
    - API-key-shaped tokens: ``sk-…``/``sk_…`` (and ``sl``, ``pk``, ``rk``), Slack ``xoxb-…``,
      GitHub ``ghp_…``/``gho_…``/``ghu_…``/``ghs_…``/``ghr_…`` and ``github_pat_…``, AWS access
      key ids ``AKIA…``/``ASIA…``.

    Bearer and Basic credentials are masked by :class:`Sanitizer` before this runs::

        >>> mask_text_secrets("postgres://app:hunter2@db/main?password=x")
        'postgres://app:[REDACTED]@db/main?password=[REDACTED]'
    """
    equals, colon, dash, underscore, aws = _TEXT_SECRETS or _text_secrets()
    # One pattern per character it starts with, each run only when that character is there:
    # a pattern starting with one literal is searched for with a fast scan, while one of
    # several (a single combined pattern) costs the regex engine a test per position, 4x
    # the time on a 200-character text.
    if "=" in text:
        text = _mask_matches(equals, text)
    if ":" in text:
        text = _mask_matches(colon, text)
    if len(text) >= _SHORTEST_TOKEN:
        if "-" in text:
            text = _mask_matches(dash, text)
        if "_" in text:
            text = _mask_matches(underscore, text)
        if "A" in text and ("AKIA" in text or "ASIA" in text):
            text = _mask_matches(aws, text)
    return text


def _mask_matches(pattern: re.Pattern[str], text: str) -> str:
    """``text`` with each match of ``pattern`` masked: the span of its last group (the value,
    the password), extended back over a token's prefix (:data:`_TOKEN_PREFIX`); ``text``
    itself when nothing matches."""
    match = pattern.search(text)  # half the cost of finditer() when nothing matches
    if match is None:
        return text
    pieces: list[str] = []
    last = 0
    while match is not None:
        group = match.lastgroup or 0
        start, end = match.span(group)
        back = _TOKEN_PREFIX.get(group) if type(group) is str else None
        if back is not None:
            start = max(start - back, last)
        pieces.append(text[last:start])
        pieces.append(MASK)
        last = end
        match = pattern.search(text, max(end, match.end()))
    pieces.append(text[last:])
    return "".join(pieces)


def _text_secrets() -> tuple[re.Pattern[str], ...]:
    """The patterns of :func:`mask_text_secrets` (starting with ``=``, ``:``, ``-``, ``_`` and
    ``A``), compiled on first use: ``import sightline`` compiles nothing.

    Each starts with the one character it is searched for; what stands before that character
    (a key name, a token's prefix) is checked by look-behinds, which must have a fixed width:
    one per length of name."""
    global _TEXT_SECRETS
    # Last letter → name length → the names (escaped): the last letter is tested first, so
    # that a separator after any other character is turned down at once.
    by_last: dict[str, dict[int, set[str]]] = {}
    for name in _TEXT_SECRET_NAMES:
        for variant in {name, name.replace("_", "-"), name.replace("_", "")}:
            by_length = by_last.setdefault(variant[-1], {})
            by_length.setdefault(len(variant), set()).add(re.escape(variant))

    def key_value(separator: str) -> str:
        # The name right before the separator, or with one quote or space between.
        branches = []
        for between in ("", "[\"' ]"):
            for last, by_length in sorted(by_last.items()):
                names = "|".join(
                    f"(?<=(?i:{'|'.join(sorted(group))}){between}{separator})"
                    for _, group in sorted(by_length.items())
                )
                letter = f"[{last}{last.upper()}]"
                branches.append(f"(?<={letter}{between}{separator})(?:{names})")
        # Which of the names of their own it was, if one: looked at once a name was found
        # only, so that a separator after no secret's name costs no more. (The last branch,
        # none of them, excludes them: no backtracking into it past a check that failed.)
        own = {
            group: "|".join(f"(?<=(?i:{name}){between}{separator})" for between in ("", "[\"' ]"))
            for name, group in _TEXT_SECRET_NAMES_OF_THEIR_OWN.items()
        }
        which = "|".join(f"(?P<{group}>{found})" for group, found in own.items())
        which += f"|(?!{'|'.join(own.values())})"
        return (
            f"{separator}(?:{'|'.join(branches)})(?:{which})"
            r"[ \t]*(?![\"']?(?:\[REDACTED\]|(?i:bearer|basic)\s|(?:None|null)\b))"
            r"(?(pwd)(?![\"']?(?:[/~]|[A-Za-z]:[\\/])))"  # PWD=/home/app: a folder
            # An authorization's value is a scheme and a credential (Token [REDACTED]: done).
            # Otherwise, after a colon, a word followed by more words is prose, not a secret
            # ("No credentials: check config").
            + r"(?(auth)(?![A-Za-z][\w.-]*[ \t]+\[REDACTED\])"
            + (r"|(?![A-Za-z]+[ \t]+[A-Za-z]))" if separator == ":" else ")")
            + r"(?:\"(?P<quoted>(?:[^\"\\\r\n]|\\.)+)"
            r"|'(?P<single>[^'\r\n]+)"
            r"|(?P<value>(?(auth)(?:[A-Za-z][\w.-]*[ \t]+(?=[^\s\"'&,;)\]}<>]))?)"
            r"[^\s\"'&,;)\]}<>]+))"
        )

    compiled = _TEXT_SECRETS = (
        re.compile(key_value("=")),
        re.compile(key_value(":") + r"|://[^\s:/?#]*:(?!\[REDACTED\])(?P<password>[^\s/?#]+)@"),
        re.compile(
            r"-(?:(?<=\b(?:sk|sl|pk|rk)-)(?P<sk>[A-Za-z0-9_-]{16,})"
            r"|(?<=\bxox[abp]-)(?P<xox>[A-Za-z0-9_-]{16,}))"
        ),
        re.compile(
            r"_(?:(?<=\b(?:sk|sl|pk|rk)_)(?P<sk>[A-Za-z0-9_-]{16,})"
            r"|(?<=\bxox[abp]_)(?P<xox>[A-Za-z0-9_-]{16,})"
            r"|(?<=\bgh[pousr]_)(?P<github>[A-Za-z0-9]{30,})"
            r"|(?<=\bgithub_)(?P<github_pat>pat_[A-Za-z0-9_]{22,}))"
        ),
        re.compile(r"A(?<![A-Za-z0-9]A)(?P<aws>[KS]IA[0-9A-Z]{16})(?![A-Za-z0-9])"),
    )
    return compiled


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
    - values under secret-looking keys are replaced by ``[REDACTED]``, and so are secrets
      written inside text: bearer/basic credentials, ``password=…``-style pairs, a URL's
      password, API-key-shaped tokens (see :func:`mask_text_secrets`).

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
        if self.scan_strings:
            # 14: the shortest text the patterns but key=value can match ("Basic " + 8
            # characters); a shorter threshold would let "Bearer abcd1234" through. Cheap
            # membership tests first: most text holds none of what a secret needs.
            size = len(text)
            if size >= _SHORTEST_SECRET:
                if "earer" in text or "asic" in text or "EARER" in text or "ASIC" in text:
                    text = _BEARER.sub(lambda m: m.group(1) + " " + MASK, text)
                if (
                    "=" in text
                    or ":" in text
                    or (size >= _SHORTEST_TOKEN and ("-" in text or "_" in text or "A" in text))
                ):
                    text = mask_text_secrets(text)
            elif size >= _SHORTEST_KEY_VALUE and ("=" in text or ":" in text):
                text = mask_text_secrets(text)
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
        # Strings this short are never cut, nor masked unless they hold "=" or ":" (pwd=x,
        # a URL's password): no call for the others.
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
                    if (
                        len(item) > short or (len(item) > 4 and ("=" in item or ":" in item))
                    ) and self._string(item) is not item:
                        return False
                elif not self._clean_leaf(item, cls, depth):
                    return False
            return True
        for item in value:
            cls = type(item)
            if cls is str:
                if (
                    len(item) > short or (len(item) > 4 and ("=" in item or ":" in item))
                ) and self._string(item) is not item:
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
        # A str subclass is not remembered: its __eq__ would then run on every lookup of
        # the same name, and one that raises would fail every later event holding that name.
        if len(self._secret_keys) < _SECRET_KEY_MEMO and type(name) is str:
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
