"""Configuration: a frozen dataclass built once from arguments, then environment, then defaults."""

from __future__ import annotations

import importlib
import math
import numbers
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn

from sightline.errors import ConfigError

__all__ = [
    "API_KEY_PATTERN",
    "Config",
    "endpoint_url",
    "redact_url",
    "redacted_endpoint_url",
    "require_bool",
    "strip_userinfo",
    "userinfo_ignored",
    "validate_api_key",
]

API_KEY_PATTERN = re.compile(r"sl_[A-Za-z0-9_-]{32,}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# Seconds settings end up as timeouts of threading waits, which refuse longer ones.
MAX_SECONDS = threading.TIMEOUT_MAX
_INT_SETTINGS = (
    "queue_size",
    "batch_size",
    "max_string",
    "spool_max_bytes",
    "http_max_batch_bytes",
)
_SECONDS_SETTINGS = ("flush_interval", "http_timeout", "http_backoff_max")
# True or False, never a value that merely looks like one ("false" is a true string).
_BOOL_SETTINGS = (
    "instrument",
    "enabled",
    "capture_content",
    "trace_plugins",
    "handle_signals",
    "estimate_cost",
)
# Mappings given as pairs, as a mapping or (as their variables are) as JSON text: the function
# of the module, imported only when the option is set, that reads them into pairs.
_PAIR_SETTINGS = (
    ("redact_rules", "sightline.privacy", "rule_pairs"),
    ("model_prices", "sightline.pricing", "price_pairs"),
)
# Lists that may also be given as one comma-separated string, as their variables are.
_NAME_LIST_SETTINGS = ("redact_keys", "redact_detectors", "disable_plugins", "plugins")

# Every environment variable Sightline reads, with the Config field it sets.
ENVIRONMENT = {
    "SIGHTLINE_ENDPOINT": "endpoint",
    "SIGHTLINE_API_KEY": "api_key",
    "SIGHTLINE_PROJECT": "project",
    "SIGHTLINE_AGENT": "agent",
    "SIGHTLINE_DB": "db",
    "SIGHTLINE_ENABLED": "enabled",
    "SIGHTLINE_EXPORTERS": "exporters",
    "SIGHTLINE_CAPTURE_CONTENT": "capture_content",
    "SIGHTLINE_DISABLE_PLUGINS": "disable_plugins",
    "SIGHTLINE_TRACE_PLUGINS": "trace_plugins",
    "SIGHTLINE_SAMPLE_RATE": "sample_rate",
    "SIGHTLINE_QUEUE_SIZE": "queue_size",
    "SIGHTLINE_BATCH_SIZE": "batch_size",
    "SIGHTLINE_FLUSH_INTERVAL": "flush_interval",
    "SIGHTLINE_REDACT_KEYS": "redact_keys",
    "SIGHTLINE_REDACT_DETECTORS": "redact_detectors",
    "SIGHTLINE_REDACT_DETECTOR_MODE": "redact_detector_mode",
    "SIGHTLINE_REDACT_RULES": "redact_rules",
    "SIGHTLINE_REDACT_HASH_KEY": "redact_hash_key",
    "SIGHTLINE_ESTIMATE_COST": "estimate_cost",
    "SIGHTLINE_MODEL_PRICES": "model_prices",
    "SIGHTLINE_MAX_STRING": "max_string",
    "SIGHTLINE_SPOOL_DIR": "spool_dir",
    "SIGHTLINE_SPOOL_MAX_BYTES": "spool_max_bytes",
    "SIGHTLINE_HANDLE_SIGNALS": "handle_signals",
    "SIGHTLINE_HTTP_TIMEOUT": "http_timeout",
    "SIGHTLINE_HTTP_BACKOFF_MAX": "http_backoff_max",
    "SIGHTLINE_HTTP_MAX_BATCH_BYTES": "http_max_batch_bytes",
}


def validate_api_key(key: str) -> None:
    """Raise :class:`ConfigError` unless ``key`` has the shape ``sl_`` + 32 or more of [A-Za-z0-9_-]."""
    if not isinstance(key, str) or API_KEY_PATTERN.fullmatch(key) is None:
        shown = f"{key[:3]}…" if isinstance(key, str) and key else repr(key)
        raise ConfigError(
            f"invalid Sightline API key ({shown}, {len(key) if isinstance(key, str) else 0} "
            "characters): a key is 'sl_' followed by at least 32 characters of A-Z, a-z, 0-9, "
            "'_' or '-'. Get one from the collector's operator."
        )


def redact_url(url: str) -> str:
    """``url`` as it may be shown in logs, errors and stats: no credentials in it.

    The userinfo (``user:password@``) becomes ``***@``, and each query value (and a fragment)
    becomes ``***``; requests still go to the real URL::

        >>> redact_url("https://svc:pw@collector.example/x?token=abc&v=1")
        'https://***@collector.example/x?token=***&v=***'
    """
    text = str(url)
    scheme, separator, rest = text.partition("://")
    if not separator:  # not a URL we know how to read: mask it all the same
        scheme, rest = "", text
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    tail, hash_mark, fragment = tail.partition("#")
    path, question_mark, query = tail.partition("?")
    if query:
        query = "&".join(
            f"{part.partition('=')[0]}=***" if "=" in part else "***" if part else ""
            for part in query.split("&")
        )
    shown = authority + path + question_mark + query + ("#***" if fragment else hash_mark)
    return f"{scheme}://{shown}" if separator else shown


def strip_userinfo(url: str) -> tuple[str, bool]:
    """``url`` without the ``user:password@`` of its authority, and whether it had one.

    The last ``@`` before the path ends the userinfo, as in :func:`redact_url`::

        >>> strip_userinfo("https://svc:pw@collector.example/x")
        ('https://collector.example/x', True)
    """
    text = str(url)
    scheme, separator, rest = text.partition("://")
    if not separator:
        return text, False
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:cut]
    if "@" not in authority:
        return text, False
    return f"{scheme}://{authority.rpartition('@')[2]}{rest[cut:]}", True


def userinfo_ignored(endpoint: str) -> str:
    """What is said of an endpoint holding ``user:password@``: that it is not sent. The
    endpoint is named as :func:`redact_url` shows it, never with the password."""
    return (
        f"the endpoint {redact_url(endpoint)!r} holds credentials (user:password@), which "
        "Sightline does not send: the collector authenticates with the API key, sent as "
        "'Authorization: Bearer <key>'"
    )


def endpoint_url(endpoint: str, path: str) -> str:
    """The URL of ``path`` (``"/api/v1/events"``) on the collector at ``endpoint``: the path is
    appended to the endpoint's own path, before its query, which is kept (a collector behind a
    gateway taking ``?token=...``)::

        >>> endpoint_url("https://gw.example/sightline/?token=abc", "/health")
        'https://gw.example/sightline/health?token=abc'

    Credentials in the endpoint (``https://user:password@host``) are left out: given to httpx,
    they would become a Basic ``Authorization`` header in place of the API key's Bearer one.
    The exporter and ``sightline doctor`` both post to this URL, with the key.
    """
    return _join(strip_userinfo(str(endpoint))[0], path)


def redacted_endpoint_url(endpoint: str, path: str) -> str:
    """:func:`endpoint_url` as logs, errors and stats show it: :func:`redact_url` of the URL, in
    which configured credentials still stand, masked (``https://***@host/...``), to tell which
    endpoint is meant, though they are not sent."""
    return redact_url(_join(str(endpoint), path))


def _join(endpoint: str, path: str) -> str:
    base = endpoint.partition("#")[0]
    base, question_mark, query = base.partition("?")
    return base.rstrip("/") + path + question_mark + query


@dataclass(frozen=True)
class Config:
    """Everything a :class:`~sightline.Client` is configured with.

    Build it with :meth:`Config.resolve`, which applies explicit arguments first, then the
    ``SIGHTLINE_*`` environment variables, then these defaults.
    """

    endpoint: str | None = None
    api_key: str | None = field(default=None, repr=False)
    project: str = "default"
    agent: str | None = None
    db: str = os.path.join(".sightline", "sightline.db")
    instrument: bool = True
    enabled: bool = True
    exporters: tuple[Any, ...] = ()
    capture_content: bool = True
    plugins: tuple[str, ...] | None = None
    disable_plugins: tuple[str, ...] = ()
    trace_plugins: bool = False
    sample_rate: float = 1.0
    queue_size: int = 100_000
    batch_size: int = 512
    flush_interval: float = 1.0
    redact_keys: tuple[str, ...] = ()
    redact_detectors: tuple[str, ...] = ()
    """Detectors of personal data in text: ``email``, ``card``, ``phone`` (see
    :mod:`sightline.privacy`)."""
    redact_detector_mode: str = "mask"
    """What becomes of what the detectors find: ``mask``, ``hash`` or ``remove``."""
    redact_rules: tuple[tuple[str, str], ...] = ()
    """(JSONPath, action) pairs, in order; given as a mapping ``{path: action}``."""
    redact_hash_key: str | None = field(default=None, repr=False)
    """The HMAC key of the ``hash`` action (at least 16 characters)."""
    estimate_cost: bool = True
    """Fill ``cost_usd`` of model calls from their tokens and list prices (see
    :mod:`sightline.pricing`)."""
    model_prices: tuple[tuple[str, tuple[float, float, float, float] | None], ...] = ()
    """Prices added to, or replacing, the built-in table: given as a mapping of model name to
    ``(input, output)`` or ``(input, output, cache_read, cache_write)`` US dollars per million
    tokens, ``None`` to remove a model."""
    max_string: int = 16_384
    spool_dir: str | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    handle_signals: bool | None = None
    http_timeout: float = 10.0
    http_backoff_max: float = 30.0
    http_max_batch_bytes: int = 4 * 1024 * 1024
    on_error: Callable[[BaseException, Sequence[Any]], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **arguments: Any) -> Config:
        """Arguments that are not ``None`` win, then ``SIGHTLINE_*`` variables, then defaults.

        A variable set to nothing (``SIGHTLINE_DB=``, or only spaces) counts as not set. The
        list options (``exporters``, ``redact_keys``, ``redact_detectors``, ``disable_plugins``,
        ``plugins``) take a list or, as their variables do, one comma-separated string
        (``redact_keys="ssn, iban"``); ``exporters`` also takes a single exporter object.
        ``redact_rules`` takes a mapping of path → action or, as ``SIGHTLINE_REDACT_RULES``
        does, a JSON object as text; ``model_prices`` a mapping of model → price, or (as
        ``SIGHTLINE_MODEL_PRICES``) JSON text or the path of a JSON file::

            >>> Config.resolve(environ={}, redact_keys="ssn, iban").redact_keys
            ('ssn', 'iban')
        """
        env = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(arguments) - known)
        if unknown:
            raise TypeError(f"unknown Sightline option(s): {_with_suggestions(unknown, known)}")
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}  # field -> the variable it was read from
        for variable, name in ENVIRONMENT.items():
            raw = env.get(variable)
            # `export SIGHTLINE_DB=` (or a blank value in an .env file) means "not set": never
            # an empty path, project name or list, nor "false".
            if raw is None or not raw.strip():
                continue
            values[name] = _parse(name, variable, raw)
            sources[name] = variable
        for name, value in arguments.items():
            if value is not None:
                values[name] = value
                sources.pop(name, None)
        for name in ("exporters", *_NAME_LIST_SETTINGS):
            if values.get(name) is not None:
                values[name] = _as_tuple(name, values[name])
        for name, module, reader in _PAIR_SETTINGS:
            if values.get(name) is not None:
                try:
                    values[name] = getattr(importlib.import_module(module), reader)(values[name])
                except ConfigError as exc:
                    where = f" (set by {sources[name]})" if name in sources else ""
                    raise ConfigError(f"{exc}{where}") from None
        config = cls(**values)
        config.check(sources)
        return config

    def check(self, sources: Mapping[str, str] | None = None) -> None:
        """Raise :class:`ConfigError` for values that cannot work.

        ``sources`` maps a field to the environment variable it was read from, so that the
        message names the variable to fix.
        """

        def fail(message: str, *names: str) -> NoReturn:
            variables = [sources[n] for n in names if sources and n in sources]
            if variables:
                message += f" (set by {', '.join(variables)})"
            raise ConfigError(message)

        for name in _BOOL_SETTINGS:
            problem = _not_bool(name, getattr(self, name), allow_none=name == "handle_signals")
            if problem:
                fail(problem, name)
        for name in _NAME_LIST_SETTINGS:
            names = getattr(self, name)
            if names is None and name == "plugins":
                continue  # every installed plugin
            if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
                fail(f"{name} must be a list of names (strings), got {names!r}", name)
        if not isinstance(self.exporters, (tuple, list)):
            fail(f"exporters must be a list, got {self.exporters!r}", "exporters")
        for item in self.exporters:
            if not isinstance(item, str) and not callable(getattr(item, "export", None)):
                fail(
                    f"exporter {item!r} is neither a name (such as 'sqlite') nor an object "
                    "with export() and shutdown()",
                    "exporters",
                )
        if self.endpoint:
            if not self.endpoint.startswith(("http://", "https://")):
                fail(
                    f"endpoint must be an http(s) URL such as http://127.0.0.1:7878, "
                    f"got {redact_url(self.endpoint)!r}",
                    "endpoint",
                )
            if self.enabled:
                if not self.api_key and strip_userinfo(self.endpoint)[1]:
                    fail(
                        userinfo_ignored(self.endpoint)
                        + ". Remove them from the URL and pass api_key=... or set "
                        "SIGHTLINE_API_KEY instead",
                        "endpoint",
                    )
                if not self.api_key:
                    fail(
                        "a remote endpoint needs an API key: pass api_key=... or set "
                        "SIGHTLINE_API_KEY",
                        "endpoint",
                    )
                try:
                    validate_api_key(self.api_key)
                except ConfigError as exc:
                    fail(str(exc), "api_key")
        for name in _INT_SETTINGS:
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                fail(f"{name} must be a whole number, got {value!r}", name)
        for name in ("sample_rate", *_SECONDS_SETTINGS):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                fail(f"{name} must be a number, got {value!r}", name)
            if not math.isfinite(value):
                fail(f"{name} must be a finite number, got {value!r}", name)
        if not 0.0 <= self.sample_rate <= 1.0:
            fail(f"sample_rate must be between 0 and 1, got {self.sample_rate}", "sample_rate")
        if self.queue_size < 1 or self.batch_size < 1:
            fail("queue_size and batch_size must be at least 1", "queue_size", "batch_size")
        if not 0 < self.flush_interval <= MAX_SECONDS:
            fail(
                f"flush_interval must be positive and at most {MAX_SECONDS:.0f} seconds, "
                f"got {self.flush_interval!r}",
                "flush_interval",
            )
        if self.max_string < 1:
            fail("max_string must be at least 1", "max_string")
        if not (0 < self.http_timeout <= MAX_SECONDS and 0 < self.http_backoff_max <= MAX_SECONDS):
            fail(
                f"http_timeout and http_backoff_max must be positive and at most "
                f"{MAX_SECONDS:.0f} seconds",
                "http_timeout",
                "http_backoff_max",
            )
        if self.spool_max_bytes < 0:
            fail("spool_max_bytes must not be negative (0 disables the spool)", "spool_max_bytes")
        if self.http_max_batch_bytes < 1024:
            fail("http_max_batch_bytes must be at least 1024", "http_max_batch_bytes")
        if (
            self.redact_detectors
            or self.redact_rules
            or self.redact_hash_key is not None
            or self.redact_detector_mode != "mask"
        ):
            self._check_privacy(fail)

    def _check_privacy(self, fail: Callable[..., NoReturn]) -> None:
        """The privacy options: known detectors and modes, readable rules, a hash key when
        something hashes."""
        from sightline.privacy import (
            ACTIONS,
            DETECTORS,
            HASH_KEY_MIN_LENGTH,
            check_rules,
            rule_pairs,
        )

        unknown = [n for n in self.redact_detectors if n not in DETECTORS]
        if unknown:
            fail(
                f"unknown redact_detectors {', '.join(map(repr, unknown))}; the known "
                f"detectors are {', '.join(DETECTORS)}",
                "redact_detectors",
            )
        if self.redact_detector_mode not in ACTIONS:
            fail(
                f"redact_detector_mode must be one of {', '.join(ACTIONS)}, "
                f"got {self.redact_detector_mode!r}",
                "redact_detector_mode",
            )
        try:
            rules = rule_pairs(self.redact_rules)
            check_rules(rules)
        except ConfigError as exc:
            fail(str(exc), "redact_rules")
        key = self.redact_hash_key
        if key is not None and (not isinstance(key, str) or len(key) < HASH_KEY_MIN_LENGTH):
            fail(
                f"redact_hash_key must be a string of at least {HASH_KEY_MIN_LENGTH} characters "
                '(such as the output of python -c "import secrets; print(secrets.token_hex(16))")',
                "redact_hash_key",
            )
        hashing = (self.redact_detectors and self.redact_detector_mode == "hash") or any(
            action == "hash" for _, action in rules
        )
        if hashing and key is None:
            fail(
                "the hash action needs a key: pass redact_hash_key=... or set "
                f"SIGHTLINE_REDACT_HASH_KEY (at least {HASH_KEY_MIN_LENGTH} characters, kept "
                "secret; the same key in every process makes equal values hash alike)",
                "redact_detector_mode",
                "redact_rules",
            )

    @property
    def exporter_names(self) -> tuple[Any, ...]:
        """Exporters to use: as configured, else ``http`` with an endpoint, else ``sqlite``."""
        if self.exporters:
            return self.exporters
        return ("http",) if self.endpoint else ("sqlite",)

    @property
    def resolved_spool_dir(self) -> str:
        """The spool directory: as configured, else ``spool`` beside the embedded store."""
        if self.spool_dir:
            return self.spool_dir
        return os.path.join(os.path.dirname(os.path.abspath(self.db)), "spool")


def require_bool(name: str, value: Any, allow_none: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is ``True`` or ``False`` (or ``None`` when
    ``allow_none``): a string such as ``"false"`` is refused rather than taken as true."""
    problem = _not_bool(name, value, allow_none)
    if problem:
        raise ConfigError(problem)


def _not_bool(name: str, value: Any, allow_none: bool) -> str | None:
    """What is wrong with ``value`` for the boolean option ``name``, or ``None``."""
    if isinstance(value, bool) or (allow_none and value is None):
        return None
    if allow_none:
        return f"{name} must be True, False or None (decided when the client starts), got {value!r}"
    return f"{name} must be True or False, got {value!r}"


def _with_suggestions(unknown: Sequence[str], known: set[str]) -> str:
    """``endpont (did you mean 'endpoint'?)``: each unknown name with the option it resembles."""
    import difflib

    described = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        described.append(f"{name} (did you mean {close[0]!r}?)" if close else name)
    return ", ".join(described)


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _as_tuple(name: str, value: Any) -> tuple[Any, ...]:
    """A list option as a tuple: a string is split at commas, as its variable is, and a single
    exporter object is a list of one."""
    if isinstance(value, str):
        return _split(value)
    if name == "exporters" and callable(getattr(value, "export", None)):
        return (value,)
    if isinstance(value, (bytes, bytearray, Mapping)):
        raise ConfigError(f"{name} must be a list or a comma-separated string, got {value!r}")
    try:
        return tuple(value)
    except TypeError:
        raise ConfigError(
            f"{name} must be a list or a comma-separated string, got {value!r}"
        ) from None


_BOOL_SPELLINGS = "true or false (also 1/0, yes/no, on/off)"


def _read_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def _read_signals(raw: str) -> bool | None:
    # "auto" is the default: decided when the client starts
    return None if raw.strip().lower() == "auto" else _read_bool(raw)


# How each variable's text is read (a variable not listed is taken as it is), and what the
# message of a malformed one says was expected.
_READERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "enabled": (_read_bool, _BOOL_SPELLINGS),
    "capture_content": (_read_bool, _BOOL_SPELLINGS),
    "trace_plugins": (_read_bool, _BOOL_SPELLINGS),
    "estimate_cost": (_read_bool, _BOOL_SPELLINGS),
    "handle_signals": (_read_signals, f"auto, {_BOOL_SPELLINGS}"),
    "exporters": (_split, "names"),
    "redact_keys": (_split, "names"),
    "redact_detectors": (_split, "names"),
    "disable_plugins": (_split, "names"),
    "redact_detector_mode": (str.strip, "a name"),
    "queue_size": (int, "a whole number"),
    "batch_size": (int, "a whole number"),
    "max_string": (int, "a whole number"),
    "spool_max_bytes": (int, "a whole number of bytes"),
    "http_max_batch_bytes": (int, "a whole number of bytes"),
    "sample_rate": (float, "a number"),
    "flush_interval": (float, "a number of seconds"),
    "http_timeout": (float, "a number of seconds"),
    "http_backoff_max": (float, "a number of seconds"),
}


def _parse(name: str, variable: str, raw: str) -> Any:
    reader = _READERS.get(name)
    if reader is None:
        return raw
    read, expected = reader
    try:
        return read(raw)
    except ValueError:
        raise ConfigError(
            f"{variable}={raw!r} is not a valid value for {name}: expected {expected}"
        ) from None
