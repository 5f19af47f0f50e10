"""The built-in processors, registered as plugins through ``sightline_process_event``.

- :class:`RedactionProcessor` makes every value strict, bounded JSON, masks secrets by key name
  and in text, and drops inputs/outputs (and exception messages, in error stacks too) when
  ``capture_content`` is off. It also repairs malformed fields (float timestamps, a usage
  given as a dict...). It is never disabled: an event it fails on is dropped, not exported
  unredacted (see :meth:`sightline.plugins.PluginManager.process_event`).
- :class:`SamplingProcessor` keeps a deterministic share of traces (by ``trace_id``); events with
  status error are always kept.
- :class:`sightline.privacy.PrivacyProcessor` applies ``redact_rules`` and ``redact_detectors``
  after the redaction; registered only when one of them is configured.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sightline.capture import Sanitizer, safe_repr
from sightline.config import Config
from sightline.event import (
    ERROR_KINDS,
    ErrorInfo,
    ErrorKind,
    Event,
    Status,
    Usage,
    coerce_count,
    coerce_ns,
    finalize_error,
    strip_exception_messages,
)
from sightline.hookspecs import hookimpl

__all__ = ["RedactionProcessor", "SamplingProcessor"]

_IDENTITY_MEMO = 4096  # names and identity values remembered as masked (see _identity_text)


class RedactionProcessor:
    """Safe capture and secret scrubbing; always on, runs before any other processor."""

    def __init__(self, config: Config) -> None:
        self.capture_content = config.capture_content
        self.sanitize = Sanitizer(max_string=config.max_string, redact_keys=config.redact_keys)
        self.small = Sanitizer(max_string=1024, redact_keys=config.redact_keys)
        # Names and identity values (agent, session, model) already masked: text → the text
        # to export. Bounded: emptied when full.
        self._identity: dict[str, str] = {}
        # Stacks are cut to their last _STACK_LIMIT characters (the exception is at the end),
        # then masked like any text.
        self.stack_text = Sanitizer(max_string=2 * _STACK_LIMIT, redact_keys=config.redact_keys)

    def share_clean_values(self, share: bool) -> None:
        """Keep clean inputs, outputs and metadata as they are instead of copying them.

        The plugin manager turns this on while no processor other than the built-in ones runs
        (so nothing changes a value in place after this one), and off when one is registered:
        processors may edit values in place, and those must then be private copies, never the
        application's own objects.
        """
        self.sanitize.share_clean = share

    def _identity_text(self, text: str) -> str:
        """``text`` (a name, an agent, a session id, a model) cut to 1,024 characters and with
        secrets masked; remembered for the next event."""
        clean = text[:1000] + "…" if len(text) > 1024 else text
        clean = self.small(clean)
        if clean == text:
            clean = text  # the same object: nothing to set on the event
        identity = self._identity
        if len(identity) >= _IDENTITY_MEMO:
            identity.clear()
        identity[text] = clean
        return clean

    @hookimpl(tryfirst=True)
    def sightline_process_event(self, event: Event) -> None:
        start, end = event.start_ns, event.end_ns
        if not (  # 2**63-1 written out: a constant, not a global looked up per event
            type(start) is int
            and 0 <= start <= 9223372036854775807
            and (end is None or (type(end) is int and 0 <= end <= 9223372036854775807))
        ):
            _repair_times(event)
        if event.id is None:
            # Time-ordered ids keep SQLite's primary-key index append-only.
            event.id = f"{event.start_ns:016x}{event.span_id}"
        if self.capture_content:
            if event.input is not None:
                event.input = self.sanitize(event.input)
            if event.output is not None:
                event.output = self.sanitize(event.output)
        else:
            event.input = None
            event.output = None
        metadata = event.metadata
        if type(metadata) is dict:
            if metadata:
                metadata = self.sanitize(metadata)
        elif metadata is None:
            metadata = {}
        else:  # the wire form needs an object
            metadata = self.sanitize(metadata if _is_dict(metadata) else {"value": metadata})
        # An object still when the walk failed on the mapping as a whole (its items could not
        # even be listed): then the sanitizer's marker is kept under "value".
        event.metadata = metadata if type(metadata) is dict else {"value": metadata}
        tags = event.tags
        if type(tags) is not list:
            tags = event.tags = _tag_list(tags)
        if tags:
            event.tags = [self.small(t) if type(t) is str else self.small(_text(t)) for t in tags]
        # Names and identity fields are text like any other: a secret in them (a task named
        # after a prompt holding an API key, a bearer token as a session id) is masked too.
        # The same few values come back in every event: each is masked once (memo).
        identity = self._identity
        name = event.name
        if type(name) is str:
            clean = identity.get(name) or self._identity_text(name)
            if clean is not name:
                event.name = clean
        else:
            event.name = self.small(_text(name))
        # Identity fields are strings on the wire: a session id given as a UUID (or an agent as
        # an enum...) must not make the whole batch fail to serialize in an exporter. Written
        # out field by field: this runs for every event.
        value = event.agent
        if value is not None:
            if type(value) is str:
                clean = identity.get(value) or self._identity_text(value)
                if clean is not value:
                    event.agent = clean
            else:
                event.agent = self.small(_text(value))
        value = event.session_id
        if value is not None:
            if type(value) is str:
                clean = identity.get(value) or self._identity_text(value)
                if clean is not value:
                    event.session_id = clean
            else:
                event.session_id = self.small(_text(value))
        value = event.model
        if value is not None:
            if type(value) is str:
                clean = identity.get(value) or self._identity_text(value)
                if clean is not value:
                    event.model = clean
            else:
                event.model = self.small(_text(value))
        value = event.framework  # ours, set by the adapters: only its type is checked
        if value is not None and type(value) is not str:
            event.framework = self.small(_text(value))
        error = event.error
        if error is not None:
            if not isinstance(error, ErrorInfo):
                error = event.error = _error_info(error)
            from_exception = getattr(error, "_exc", None) is not None
            finalize_error(error, _STACK_LIMIT, messages=self.capture_content)
            if type(error.type) is not str:
                error.type = self.small(_text(error.type))  # record_failure(code=504)
            if not (isinstance(error.kind, str) and error.kind in ERROR_KINDS):
                error.kind = ErrorKind.UNKNOWN.value
            if not isinstance(error.message, str):
                error.message = _text(error.message)
            if not self.capture_content:
                error.message = ""  # messages often quote the prompt or the tool input
            else:
                error.message = self.sanitize(error.message)
            stack = error.stack
            if stack is not None:
                text = stack if type(stack) is str else _text(stack)
                self._scrub_stack(error, text, from_exception)
        usage = event.usage
        if usage is not None and type(usage) is not Usage and not _is_usage(usage):
            usage = event.usage = Usage.coerce(usage)
        if usage is not None and not (
            _count_ok(usage.input_tokens)
            and _count_ok(usage.output_tokens)
            and _count_ok(usage.total_tokens)
        ):
            usage.input_tokens = coerce_count(usage.input_tokens)
            usage.output_tokens = coerce_count(usage.output_tokens)
            usage.total_tokens = coerce_count(usage.total_tokens)
        cost = event.cost_usd
        if cost is not None:
            try:
                cost = float(cost)
                event.cost_usd = (
                    cost if cost == cost and cost >= 0 and cost != float("inf") else None
                )
            except Exception:
                event.cost_usd = None
        return None

    def _scrub_stack(self, error: ErrorInfo, stack: str, from_exception: bool) -> None:
        """Keep no more in a stack than in the message: with ``capture_content`` off, a stack
        given as text loses its exception messages (one formatted here from the exception
        never had them); in both cases secrets in it are masked."""
        if not self.capture_content and not from_exception:
            stack = strip_exception_messages(stack)
        if len(stack) > _STACK_LIMIT:
            stack = "…[truncated]…" + stack[-_STACK_LIMIT:]
        error.stack = self.stack_text(stack)


_STACK_LIMIT = 8192


def _count_ok(value: Any) -> bool:
    """A token count needing no repair: ``None`` or an ``int`` (not a bool) in 0..2**63-1."""
    return value is None or (type(value) is int and 0 <= value <= 9223372036854775807)


def _repair_times(event: Event) -> None:
    """Integer nanoseconds from what was given (``time.time() * 1e9`` is a float); an end that
    cannot be read is dropped, a start that cannot be read becomes the end (or now)."""
    end = event.end_ns = coerce_ns(event.end_ns)
    start = coerce_ns(event.start_ns)
    if start is None:
        start = end if end is not None else time.time_ns()
    event.start_ns = start


def _tag_list(tags: object) -> list[Any]:
    """The tags as a list: one tag given alone, an iterable of tags, or nothing."""
    if tags is None:
        return []
    try:
        if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
            return [tags]
        return list(tags)
    except Exception:  # unreadable, or a proxy left unbound (isinstance raises on it)
        return [safe_repr(tags, 200)]


def _error_info(value: object) -> ErrorInfo:
    """An :class:`ErrorInfo` for something else given as the error: an exception or a text."""
    if isinstance(value, BaseException):
        return ErrorInfo.from_exception(value)
    return ErrorInfo("Error", _text(value))


def _text(value: object) -> str:
    """``str(value)`` (a UUID's canonical form...), a str subclass's own text (a str enum's
    value), or a safe repr if ``str`` raises."""
    if issubclass(type(value), str):  # not isinstance: it raises on a proxy left unbound
        return str.__str__(value)
    try:
        text = str(value)
    except Exception:
        return safe_repr(value, 200)
    return text if type(text) is str else safe_repr(value, 200)


def _is_dict(value: object) -> bool:
    """``isinstance(value, dict)``, or False when that raises (a proxy left unbound)."""
    try:
        return isinstance(value, dict)
    except Exception:
        return False


def _is_usage(value: object) -> bool:
    """``isinstance(value, Usage)``, or False when that raises (a proxy left unbound)."""
    try:
        return isinstance(value, Usage)
    except Exception:
        return False


class SamplingProcessor:
    """Keep ``sample_rate`` of traces, chosen by trace id so a trace is kept or dropped whole."""

    def __init__(self, config: Config) -> None:
        self.threshold = int(config.sample_rate * (1 << 32))

    @hookimpl(tryfirst=True)
    def sightline_process_event(self, event: Event) -> bool | None:
        if self.threshold >= 1 << 32:
            return None
        if event.status is Status.ERROR:
            return None
        try:
            bucket = int(event.trace_id[-8:], 16)
        except ValueError:
            return None
        return None if bucket < self.threshold else False
