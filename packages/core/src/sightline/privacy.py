"""Privacy rules and detectors: opt-in redaction of personal data, after the built-in secret
scrubbing (:class:`sightline.processors.RedactionProcessor`).

- **Detectors** (``redact_detectors=["email", "card", "phone"]``) find personal data inside
  every string of an event's input, output and metadata (dict keys too), its error message and
  stack, its name and its tags. Ids, times, ``agent``, ``session_id`` and ``model`` are not
  scanned. What each finds:

  - ``email``: ``local@domain.tld`` (ASCII; the domain has a dot and a TLD of 2 or more
    letters: ``root@localhost`` is left);
  - ``card``: 13 to 19 digits, starting with 2 to 6 (the card networks' range: a 13-digit
    millisecond timestamp starts with 1), in one run or in groups split by single spaces or
    dashes, that pass the Luhn check; a number that fails it, or a longer run of digits, is left.
    Another number in the same groups, before or after the card (``2024 4111 1111 1111 1111``),
    is left as it is; when two overlapping numbers of the groups pass the check equally
    (``4321 4111 1111 1111 1111``), both are taken, as one;
  - ``phone``: ``+`` and 8 to 15 digits, in groups split by a space, dot or dash, a group
    possibly in parentheses (``+44 20 7946 0958``, ``+1 (202) 555-0143``, ``+12025550143``);
    or a North-American number split into 3-3-4 digits (``202-555-0143``, ``(202) 555-0143``,
    ``1-800-555-0199``, ``001-202-555-0143``; the area code and exchange start with 2 to 9).
    An extension is part of the number: ``x12``, ``ext12``, ``ext. 12`` or ``#12`` (1 to 6
    digits) right after it or after one space. Ten digits in one run without ``+`` are not
    taken for a phone number (an order id, a timestamp), nor are dates (``2024-05-15``), times,
    years or card numbers.

  ``redact_detector_mode`` says what becomes of what they find: ``mask`` (the default) writes
  ``<email>`` / ``<card>`` / ``<phone>``; ``hash`` writes ``<email:1f0c…>``, a keyed hash of the
  value, normalized first (an e-mail in lower case, a card or phone number as its digits, and
  a phone's extension as ``x`` and its digits) so that the same person correlates across
  events; ``remove`` deletes the text found. Dict keys that become equal (``{"a@b.co": 1,
  "c@d.co": 2}``) are numbered so that no value is lost: ``{"<email>": 1, "<email#2>": 2}``.

- **Rules** (``redact_rules={"$.input.customer.ssn": "hash", "$..password": "remove"}``) act on
  values found by a path in the event's dict form. The JSONPath subset:

  - ``$`` then one of ``.input``, ``.output``, ``.metadata`` (a rule on the whole metadata is
    refused: use ``$.metadata.key`` or ``$.metadata.*``), or ``..key`` (anywhere in the three);
  - ``.key`` or ``['key']`` / ``["key"]`` (any key, quotes escaped with ``\\``): a dict's key;
  - ``[n]``: a list's item (``[-1]`` the last);
  - ``[*]`` or ``.*``: every item of a list, every value of a dict;
  - ``..key`` (or ``..['key']``): the key at any depth below.

  Filters, slices, unions and ``..*`` are not supported (a :class:`ConfigError`). A path that
  finds nothing in an event does nothing. Actions: ``mask`` writes ``[REDACTED]`` in place of
  the value (whatever its type), ``hash`` writes ``<hash:1f0c…>`` (the keyed hash of a string,
  or of the canonical JSON of another value), ``remove`` removes the key from its dict, makes
  a list's item ``null``, or ``$.input`` / ``$.output`` as a whole ``null``. A ``None`` value is
  left as it is by ``mask`` and ``hash`` (nothing to hide).

The hash is HMAC-SHA256 keyed by ``redact_hash_key`` (``SIGHTLINE_REDACT_HASH_KEY``, at least
16 characters), cut to 16 hex digits: equal values give equal hashes in every process that
shares the key, and without the key a hash cannot be reversed by hashing a dictionary of
candidates. There is no default key: hashing without one is a :class:`ConfigError`.

Rules run first, then detectors. Values are never changed in place: a container that changes
is copied (the path to it too), the others are kept as they are, so that the application's
own objects, which an event may share, stay as they were.
"""

from __future__ import annotations

import hmac
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sightline.capture import MASK
from sightline.errors import ConfigError
from sightline.hookspecs import hookimpl

__all__ = [
    "ACTIONS",
    "DETECTORS",
    "HASH_KEY_MIN_LENGTH",
    "PrivacyProcessor",
    "check_rules",
    "parse_path",
    "rule_pairs",
]

DETECTORS = ("card", "email", "phone")
"""The detector names ``redact_detectors`` takes; they run in this order."""
ACTIONS = ("mask", "hash", "remove")
"""What a rule (or ``redact_detector_mode``) does with what it finds."""
HASH_KEY_MIN_LENGTH = 16
"""The shortest ``redact_hash_key`` accepted."""
ROOTS = ("input", "output", "metadata")
"""The event fields a rule's path may start with (``$..key`` looks in all three)."""

Segment = tuple[str, Any]  # ("key", name) | ("index", n) | ("all", None) | ("descend", name)

_SCALARS = frozenset((int, float, bool, type(None)))
_REMOVED = object()  # what an action returns for "remove": the parent drops the value
_NAME_MEMO = 4096  # event names remembered as scanned


def parse_path(path: str) -> tuple[str | None, tuple[Segment, ...]]:
    """Read a rule's path: the event field it starts at (``None`` for ``$..key``, which looks
    in input, output and metadata) and the segments below it.

    Raises :class:`ConfigError` saying what is wrong and what is supported::

        >>> parse_path("$.input.messages[*].content")
        ('input', (('key', 'messages'), ('all', None), ('key', 'content')))
        >>> parse_path("$..password")
        (None, (('descend', 'password'),))
    """
    if not isinstance(path, str):
        raise ConfigError(f"a redact_rules path must be a string, got {path!r}")
    segments = _segments(path)
    if not segments:
        _path_error(path, "it names nothing after '$'")
    kind, name = segments[0]
    if kind == "descend":
        return None, tuple(segments)
    if kind != "key" or name not in ROOTS:
        _path_error(path, "it must start with $.input, $.output, $.metadata or $..key")
    if name == "metadata" and len(segments) == 1:
        _path_error(
            path, "the metadata as a whole cannot be redacted; use $.metadata.key or $.metadata.*"
        )
    return name, tuple(segments[1:])


def rule_pairs(rules: Any) -> tuple[tuple[Any, Any], ...]:
    """``redact_rules`` as (path, action) pairs, in order: from a mapping, a JSON object given as
    text (as ``SIGHTLINE_REDACT_RULES`` is), or pairs. Raises :class:`ConfigError` for another
    shape; the paths and actions themselves are checked by :func:`check_rules`."""
    if isinstance(rules, str):
        try:
            rules = json.loads(rules)
        except ValueError as exc:
            raise ConfigError(
                "redact_rules must be a JSON object of path → action, such as "
                f'{{"$.input.ssn": "hash"}}: {exc}'
            ) from None
        if not isinstance(rules, dict):
            raise ConfigError(
                'redact_rules must be a JSON object of path → action, such as {"$.input.ssn": '
                f'"hash"}}, got {type(rules).__name__}'
            )
    if isinstance(rules, Mapping):
        return tuple(rules.items())
    if isinstance(rules, (bytes, bytearray)) or not isinstance(rules, Iterable):
        raise ConfigError(
            f"redact_rules must be a mapping of path → action, got {type(rules).__name__}"
        )
    pairs = []
    for pair in rules:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ConfigError(
                f"redact_rules must be a mapping of path → action (or (path, action) pairs), "
                f"got {pair!r} among them"
            )
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def check_rules(rules: Iterable[tuple[Any, Any]]) -> None:
    """Raise :class:`ConfigError` for a rule whose path cannot be read or whose action is not
    one of :data:`ACTIONS`."""
    for path, action in rules:
        parse_path(path)
        if action not in ACTIONS:
            raise ConfigError(
                f"redact_rules action for {path!r} must be one of {', '.join(ACTIONS)}, "
                f"got {action!r}"
            )


class PrivacyProcessor:
    """Applies ``redact_rules`` and ``redact_detectors`` to each event, on the worker, after the
    built-in redaction. Registered (as ``builtin-privacy``) only when one of them is configured.

    Like the built-in redaction, it is never disabled: an event it fails on is dropped and
    counted in ``stats()["processor_errors"]``, not exported half redacted.
    """

    def __init__(self, config: Any) -> None:
        self.capture_content = bool(config.capture_content)
        self.rules = tuple(
            (*parse_path(path), action) for path, action in rule_pairs(config.redact_rules)
        )
        key = config.redact_hash_key
        self._key = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else None
        self.mode = config.redact_detector_mode
        wanted = set(config.redact_detectors)
        self.detectors = tuple(
            (name, _FINDERS[name], _FEWEST_DIGITS[name]) for name in DETECTORS if name in wanted
        )
        self._names: dict[str, str] = {}  # event name → the name to export

    @hookimpl(tryfirst=True)
    def sightline_process_event(self, event: Any) -> None:
        content = self.capture_content
        for root, segments, action in self.rules:
            for field in (root,) if root is not None else ROOTS:
                if field != "metadata" and not content:
                    continue  # no input nor output is kept: nothing to do
                value = getattr(event, field)
                if value is None:
                    continue
                new = self._apply(value, segments, 0, action)
                if new is not value:
                    if new is _REMOVED:
                        new = {} if field == "metadata" else None
                    setattr(event, field, new)
        if not self.detectors:
            return None
        if content:
            if event.input is not None:
                event.input = self._scan(event.input)
            if event.output is not None:
                event.output = self._scan(event.output)
        event.metadata = self._scan(event.metadata)
        error = event.error
        if error is not None:
            if type(error.message) is str:
                error.message = self._text(error.message)
            if type(error.stack) is str:
                error.stack = self._text(error.stack)
        name = event.name
        if type(name) is str:
            clean = self._names.get(name)
            if clean is None:
                clean = self._text(name)
                if len(self._names) >= _NAME_MEMO:
                    self._names.clear()
                self._names[name] = clean
            event.name = clean
        tags = event.tags
        if type(tags) is list and tags:
            event.tags = self._scan(tags)
        return None

    # -- rules --------------------------------------------------------------------------------

    def _apply(self, node: Any, segments: tuple[Segment, ...], index: int, action: str) -> Any:
        """``node`` with the rule's action applied where ``segments[index:]`` lead: ``node``
        itself when nothing changes, a copy otherwise, or :data:`_REMOVED`."""
        if index == len(segments):
            return self._act(node, action)
        kind, arg = segments[index]
        if kind == "key":
            if not isinstance(node, dict) or arg not in node:
                return node
            return _replace_in_dict(
                node, {arg: self._apply(node[arg], segments, index + 1, action)}
            )
        if kind == "index":
            if not isinstance(node, list):
                return node
            position = arg if arg >= 0 else len(node) + arg
            if not 0 <= position < len(node):
                return node
            child = node[position]
            new = self._apply(child, segments, index + 1, action)
            if new is child:
                return node
            copy = list(node)
            copy[position] = None if new is _REMOVED else new
            return copy
        if kind == "all":
            if isinstance(node, dict):
                return _replace_in_dict(
                    node, {k: self._apply(v, segments, index + 1, action) for k, v in node.items()}
                )
            if isinstance(node, list):
                return _replace_in_list(
                    node, [self._apply(item, segments, index + 1, action) for item in node]
                )
            return node
        return self._descend(node, arg, segments, index + 1, action)

    def _descend(
        self, node: Any, name: str, segments: tuple[Segment, ...], index: int, action: str
    ) -> Any:
        """``..name``: apply the rest of the path to the value of every key ``name`` at any
        depth in ``node`` (deeper ones first, then the key's own value)."""
        # Containers only are descended into: a call per leaf was most of the cost.
        if isinstance(node, dict):
            changed: dict[Any, Any] | None = None
            for key, child in node.items():
                new = child
                if isinstance(child, (dict, list)):
                    new = self._descend(child, name, segments, index, action)
                if key == name:
                    new = self._apply(new, segments, index, action)
                if new is not child:
                    if changed is None:
                        changed = {}
                    changed[key] = new
            return node if changed is None else _replace_in_dict(node, changed)
        if isinstance(node, list):
            items: list[Any] | None = None
            for position, child in enumerate(node):
                if not isinstance(child, (dict, list)):
                    continue
                new = self._descend(child, name, segments, index, action)
                if new is not child:
                    if items is None:
                        items = list(node)
                    items[position] = new
            return node if items is None else items
        return node

    def _act(self, value: Any, action: str) -> Any:
        if action == "remove":
            return _REMOVED
        if value is None:
            return None
        if action == "mask":
            return MASK
        text = value if type(value) is str else _canonical_json(value)
        return f"<hash:{self._digest(text)}>"

    def _digest(self, text: str) -> str:
        """16 hex digits of HMAC-SHA256 of ``text`` under the configured key."""
        if self._key is None:  # config.check refuses this; a Config built by hand may not
            raise ConfigError("hashing needs redact_hash_key")
        data = text.encode("utf-8", "surrogatepass")
        return hmac.digest(self._key, data, "sha256")[:8].hex()

    # -- detectors ----------------------------------------------------------------------------

    def _scan(self, node: Any) -> Any:
        """``node`` with what the detectors find in its strings (dict keys too) replaced; the
        same object when nothing is found, else a copy of each container that changed."""
        # Written for speed (it visits every value): strings and numbers, the common leaves,
        # are handled without a call; after the redaction, values are JSON types.
        kind = type(node)
        if kind is dict:
            text = self._text
            copy: dict[Any, Any] | None = None
            for position, (key, child) in enumerate(node.items()):
                new_key = text(key) if isinstance(key, str) else key
                kind = type(child)
                if kind is str:
                    new = text(child)
                elif kind in _SCALARS:
                    new = child
                else:
                    new = self._scan(child)
                if copy is None:
                    if new_key is key and new is child:
                        continue
                    copy = dict(itertools.islice(node.items(), position))
                if new_key in copy:  # two keys masked alike: {"a@b.co": 1, "c@d.co": 2}
                    new_key = _numbered_key(new_key, copy, node)
                copy[new_key] = new
            return node if copy is None else copy
        if kind is list:
            text = self._text
            items: list[Any] | None = None
            for position, child in enumerate(node):
                kind = type(child)
                if kind is str:
                    new = text(child)
                elif kind in _SCALARS:
                    new = child
                else:
                    new = self._scan(child)
                if items is None:
                    if new is child:
                        continue
                    items = node[:position]
                items.append(new)
            return node if items is None else items
        if isinstance(node, str):
            return self._text(node)
        if isinstance(node, (dict, list)):  # a subclass: read as the plain type
            return self._scan(dict(node) if isinstance(node, dict) else list(node))
        return node

    def _text(self, text: str) -> str:
        """``text`` with what each detector finds replaced as ``redact_detector_mode`` says;
        ``text`` itself when nothing is found."""
        if len(text) < 6:  # "a@b.co"; a phone number or a card is longer still
            return text
        digits = -1  # counted once, when a detector needs digits
        for name, find, fewest_digits in self.detectors:
            if fewest_digits:
                if digits < 0:
                    digits = _digit_count(text)
                if digits < fewest_digits:
                    continue
            elif "@" not in text:
                continue
            found = find(text)
            if not found:
                continue
            pieces: list[str] = []
            last = 0
            for start, end, normalized in found:
                pieces.append(text[last:start])
                if self.mode == "mask":
                    pieces.append(f"<{name}>")
                elif self.mode == "hash":
                    pieces.append(f"<{name}:{self._digest(normalized)}>")
                last = end
            pieces.append(text[last:])
            text = "".join(pieces)
        return text


def _numbered_key(key: str, *taken: dict[Any, Any]) -> str:
    """``key`` numbered so that it is in none of ``taken``: the second ``<email>`` of a dict is
    ``<email#2>``, the third ``<email#3>`` (a key not ending with ``>`` gets ``#2`` at its
    end), so that keys masked alike keep their values apart."""
    head, tail = (key[:-1], ">") if key.endswith(">") else (key, "")
    number = 2
    while True:
        numbered = f"{head}#{number}{tail}"
        if not any(numbered in keys for keys in taken):
            return numbered
        number += 1


def _replace_in_dict(node: dict[Any, Any], changes: dict[Any, Any]) -> dict[Any, Any]:
    """``node`` when no value in ``changes`` differs from its own, else a copy with them (a
    key whose new value is :data:`_REMOVED` left out), in the same order."""
    if all(node[key] is new for key, new in changes.items()):
        return node
    copy: dict[Any, Any] = {}
    for key, child in node.items():
        new = changes.get(key, child)
        if new is not _REMOVED:
            copy[key] = new
    return copy


def _replace_in_list(node: list[Any], items: list[Any]) -> list[Any]:
    """``node`` when ``items`` are its own, else ``items`` (a :data:`_REMOVED` one as null)."""
    if all(new is old for new, old in zip(items, node, strict=True)):
        return node
    return [None if item is _REMOVED else item for item in items]


def _canonical_json(value: Any) -> str:
    """One text per value, whatever its dicts' order: what ``hash`` hashes of a non-string."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- paths ------------------------------------------------------------------------------------

_NAME = re.compile(r"[^.\[\]\s'\"*]+")


def _path_error(path: str, problem: str) -> None:
    raise ConfigError(
        f"redact_rules path {path!r} is not supported: {problem}. Paths are JSONPath: $ then "
        ".input, .output, .metadata or ..key, then .key, ['key'], [n], [*], .* or ..key"
    )


def _segments(path: str) -> list[Segment]:
    if not path.startswith("$"):
        _path_error(path, "it must start with '$'")
    segments: list[Segment] = []
    position = 1
    while position < len(path):
        if path.startswith("..", position):
            position += 2
            if path.startswith("[", position):
                name, position = _bracket(path, position)
                if not isinstance(name, str):
                    _path_error(path, "'..' must be followed by a key, not [*] or [n]")
            else:
                name, position = _bare_name(path, position)
            segments.append(("descend", name))
        elif path[position] == ".":
            position += 1
            if path.startswith("*", position):
                segments.append(("all", None))
                position += 1
            else:
                name, position = _bare_name(path, position)
                segments.append(("key", name))
        elif path[position] == "[":
            selector, position = _bracket(path, position)
            if selector is None:
                segments.append(("all", None))
            elif isinstance(selector, int):
                segments.append(("index", selector))
            else:
                segments.append(("key", selector))
        else:
            _path_error(path, f"unexpected {path[position]!r} at character {position}")
    return segments


def _bare_name(path: str, position: int) -> tuple[str, int]:
    match = _NAME.match(path, position)
    if match is None:
        _path_error(path, f"a key name is expected at character {position}")
        raise AssertionError  # unreachable: for type checkers
    return match.group(), match.end()


def _bracket(path: str, position: int) -> tuple[str | int | None, int]:
    """Read ``[*]`` (None), ``[n]`` (an int) or ``['key']`` / ``["key"]`` (a str) at
    ``position``; return it and the position after the closing bracket."""
    end = path.find("]", position)
    inner = path[position + 1 : end] if end != -1 else ""
    if inner == "*":
        return None, end + 1
    if re.fullmatch(r"-?[0-9]+", inner):
        return int(inner), end + 1
    quote = path[position + 1 : position + 2]
    if quote in ("'", '"'):
        chars: list[str] = []
        cursor = position + 2
        while cursor < len(path):
            char = path[cursor]
            if char == "\\" and cursor + 1 < len(path):
                chars.append(path[cursor + 1])
                cursor += 2
                continue
            if char == quote:
                if path[cursor + 1 : cursor + 2] != "]":
                    break
                return "".join(chars), cursor + 2
            chars.append(char)
            cursor += 1
    _path_error(
        path,
        f"at character {position}, a bracket holds * , a whole number or a quoted key "
        "(filters, slices and unions are not supported)",
    )
    raise AssertionError  # unreachable: for type checkers


# -- detectors --------------------------------------------------------------------------------
# Each finder returns the (start, end, normalized value) of what it finds in a text, in order.
# Patterns are compiled on first use: this module is imported only when detectors or rules
# are configured, and then pays for the patterns it uses only.

_PATTERNS: dict[str, re.Pattern[str]] = {}
# A phone number's extension, right after it or after one space: x12, ext12, ext 12, ext. 12,
# #12; 1 to 6 digits.
_EXTENSION = r"[ ]?(?:[xX]|(?i:ext)\.?[ ]?|#)(?P<ext>[0-9]{1,6})"
_PATTERN_SOURCES = {
    # The local part (its start found by the look-behind), an @, labels with dots, a TLD.
    "email": r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9-])",
    # A run of digit groups split by single spaces or dashes, its first group of 4 digits or
    # more from 2-6 (_find_cards finds the cards in it); first character first (a fast scan
    # for the class), then the look-behind for what precedes it.
    "card": r"[2-6](?<![\w-][2-6])[0-9]{3,}(?:[ -][0-9]+)*",
    # +, a country code, then groups split by one space, dot or dash (one in parentheses);
    # then, maybe, an extension (x12, ext. 12, #12).
    "international": r"\+(?<![\w+]\+)[1-9][0-9]{0,2}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}"
    r"(?![0-9])(?:" + _EXTENSION + r"(?![0-9]))?",
    # North America: [001 or 1-] (NXX) NXX-XXXX or NXX-NXX-XXXX, maybe with an extension;
    # not inside a longer run of digits, an id (ORD-202-555-0143) or a version
    # (1.202.555.0143.7). The first character is consumed first (a fast scan for the class),
    # then what it was is looked back at.
    "nanp": r"[(0-9](?<![\w.+-][(0-9])"
    r"(?:(?<=0)01[ .-]?(?:\([2-9][0-9]{2}\)[ .-]?|[2-9][0-9]{2}[ .-])"
    r"|(?<=1)[ .-]?(?:\([2-9][0-9]{2}\)[ .-]?|[2-9][0-9]{2}[ .-])"
    r"|(?<=\()[2-9][0-9]{2}\)[ .-]?"
    r"|(?<=[2-9])[0-9]{2}[ .-])"
    r"[2-9][0-9]{2}[ .-][0-9]{4}(?:" + _EXTENSION + r")?(?![\w-]|\.[0-9])",
}


def _pattern(name: str) -> re.Pattern[str]:
    pattern = _PATTERNS.get(name)
    if pattern is None:
        pattern = _PATTERNS[name] = re.compile(_PATTERN_SOURCES[name])
    return pattern


def _find_emails(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group().lower()) for m in _pattern("email").finditer(text)]


def _find_cards(text: str) -> list[tuple[int, int, str]]:
    found = []
    for match in _pattern("card").finditer(text):
        run = match.group()
        if len(run) < 13:
            continue
        if "-" not in run and " " not in run:  # one group: the common case
            if len(run) <= 19 and _luhn(run):
                found.append((match.start(), match.end(), run))
            continue
        groups = run.replace("-", " ").split(" ")
        starts = []
        position = match.start()
        for group in groups:
            starts.append(position)
            position += len(group) + 1
        for first, last in _cards_in_run(groups):
            end = starts[last - 1] + len(groups[last - 1])
            found.append((starts[first], end, "".join(groups[first:last])))
    return found


def _cards_in_run(groups: list[str]) -> list[tuple[int, int]]:
    """The card numbers in a run of digit groups, as (first, last + 1) group indexes, in order.

    A card starts at a group of 4 digits or more whose first is 2 to 6, holds 13 to 19 digits
    in whole groups and passes the Luhn check: a number before or after it in the same run (a
    year, an amount, a PIN) is left out. Of the cards a stretch holds, those with the most
    digits win; two of them that overlap (``4321 4111 1111 1111 1111``: either 16 digits pass)
    are masked as one, since which is the card cannot be told; the stretches left on either
    side are searched again.
    """
    chosen: list[tuple[int, int]] = []
    stretches = [(0, len(groups))]
    while stretches:  # each pass finds cards shorter than the last: at most 7 passes deep
        low, high = stretches.pop()
        most = 0
        best: list[tuple[int, int]] = []
        for first in range(low, high):
            head = groups[first]
            if len(head) < 4 or not "2" <= head[0] <= "6":
                continue
            digits = head
            for last in range(first + 1, high + 1):
                if last > first + 1:
                    digits += groups[last - 1]
                count = len(digits)
                if count > 19:
                    break
                if count >= 13 and count >= most and _luhn(digits):
                    if count > most:
                        most, best = count, []
                    best.append((first, last))
        merged: list[tuple[int, int]] = []
        for first, last in best:  # in order of their first group
            if merged and first < merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        previous = low
        for first, last in merged:
            if first > previous:
                stretches.append((previous, first))
            chosen.append((first, last))
            previous = last
        if merged and previous < high:
            stretches.append((previous, high))
    chosen.sort()
    return chosen


def _find_phones(text: str) -> list[tuple[int, int, str]]:
    found = []
    if "+" in text:
        for match in _pattern("international").finditer(text):
            number, extension = _phone_parts(match)
            if 8 <= len(number) <= 15:
                found.append((match.start(), match.end(), "+" + number + extension))
    if len(text) >= 12:
        for match in _pattern("nanp").finditer(text):
            number, extension = _phone_parts(match)
            # As +1 and ten digits, to hash as the + form does.
            found.append((match.start(), match.end(), "+" + ("1" + number)[-11:] + extension))
        if len(found) > 1:
            found.sort()
            kept = [found[0]]
            for span in found[1:]:
                if span[0] >= kept[-1][1]:  # an overlap: the first found wins
                    kept.append(span)
            found = kept
    return found


def _phone_parts(match: re.Match[str]) -> tuple[str, str]:
    """A phone number's digits and its extension as ``x`` and digits (``""`` without one):
    ``202-555-0143 ext. 12`` and ``(202) 555-0143x12`` hash alike."""
    start = match.start("ext")
    if start < 0:
        return _digits(match.group()), ""
    return _digits(match.string[match.start() : start]), "x" + match.group("ext")


_FINDERS: dict[str, Callable[[str], list[tuple[int, int, str]]]] = {
    "card": _find_cards,
    "email": _find_emails,
    "phone": _find_phones,
}
# The fewest digits a text holds for each detector to find something (0: the email detector
# needs an "@" instead). Regex scans cost several ns per character; counting digits, a tenth.
_FEWEST_DIGITS = {"card": 13, "email": 0, "phone": 8}
_DIGIT_BYTES = b"0123456789"


def _digit_count(text: str) -> int:
    """How many ASCII digits ``text`` holds (bytes.translate: a table lookup per byte)."""
    data = text.encode("utf-8", "surrogatepass")
    return len(data) - len(data.translate(None, _DIGIT_BYTES))


def _digits(text: str) -> str:
    return "".join(char for char in text if "0" <= char <= "9")


def _luhn(digits: str) -> bool:
    """The Luhn checksum of a card number: every second digit from the right doubled."""
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0
