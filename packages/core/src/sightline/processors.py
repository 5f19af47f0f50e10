"""The built-in processors, registered as plugins through ``sightline_process_event``.

- :class:`RedactionProcessor` makes every value strict, bounded JSON, masks secrets by key name
  and in text, and drops inputs/outputs when ``capture_content`` is off.
- :class:`SamplingProcessor` keeps a deterministic share of traces (by ``trace_id``); events with
  status error are always kept.
"""

from __future__ import annotations

from sightline.capture import Sanitizer, safe_repr
from sightline.config import Config
from sightline.event import ERROR_KINDS, ErrorKind, Event, Status, finalize_error
from sightline.hookspecs import hookimpl

__all__ = ["RedactionProcessor", "SamplingProcessor"]


class RedactionProcessor:
    """Safe capture and secret scrubbing; always on, runs before any other processor."""

    def __init__(self, config: Config) -> None:
        self.capture_content = config.capture_content
        self.sanitize = Sanitizer(max_string=config.max_string, redact_keys=config.redact_keys)
        self.small = Sanitizer(max_string=1024, redact_keys=config.redact_keys)

    def share_clean_values(self, share: bool) -> None:
        """Keep clean inputs, outputs and metadata as they are instead of copying them.

        The plugin manager turns this on while no processor other than the built-in ones runs
        (so nothing changes a value in place after this one), and off when one is registered:
        processors may edit values in place, and those must then be private copies, never the
        application's own objects.
        """
        self.sanitize.share_clean = share

    @hookimpl(tryfirst=True)
    def sightline_process_event(self, event: Event) -> None:
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
        if event.metadata is not None and not isinstance(event.metadata, dict):
            event.metadata = {"value": event.metadata}  # the wire form needs an object
        if event.metadata:
            event.metadata = self.sanitize(event.metadata)
        elif event.metadata is None:
            event.metadata = {}
        if event.tags:
            event.tags = [
                self.small(t) if isinstance(t, str) else self.small(repr(t)) for t in event.tags
            ]
        if not isinstance(event.name, str):
            event.name = self.small(_text(event.name))
        elif len(event.name) > 1024:
            event.name = event.name[:1000] + "…"
        # Identity fields are strings on the wire: a session id given as a UUID (or an agent as
        # an enum...) must not make the whole batch fail to serialize in an exporter.
        if not (
            (event.agent is None or event.agent.__class__ is str)
            and (event.session_id is None or event.session_id.__class__ is str)
            and (event.framework is None or event.framework.__class__ is str)
            and (event.model is None or event.model.__class__ is str)
        ):
            for key in ("agent", "session_id", "framework", "model"):
                value = getattr(event, key)
                if value is not None and type(value) is not str:
                    setattr(event, key, self.small(_text(value)))
        error = event.error
        if error is not None:
            finalize_error(error)
            if type(error.type) is not str:
                error.type = self.small(_text(error.type))  # record_failure(code=504)
            if not (isinstance(error.kind, str) and error.kind in ERROR_KINDS):
                error.kind = ErrorKind.UNKNOWN.value
            if not isinstance(error.message, str):
                error.message = _text(error.message)
            if error.stack is not None and not isinstance(error.stack, str):
                error.stack = _text(error.stack)
            if not self.capture_content:
                error.message = ""  # messages often quote the prompt or the tool input
            else:
                error.message = self.sanitize(error.message)
        usage = event.usage
        if usage is not None and not (
            _count_ok(usage.input_tokens)
            and _count_ok(usage.output_tokens)
            and _count_ok(usage.total_tokens)
        ):
            for key in ("input_tokens", "output_tokens", "total_tokens"):
                value = getattr(usage, key)
                if value is not None and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 0
                ):
                    try:
                        setattr(usage, key, max(0, int(value)))
                    except Exception:
                        setattr(usage, key, None)
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


def _count_ok(value: object) -> bool:
    """A token count needing no repair: ``None`` or a non-negative ``int`` (not a bool)."""
    return value is None or (value.__class__ is int and value >= 0)


def _text(value: object) -> str:
    """``str(value)`` (a UUID's canonical form...), a str subclass's own text (a str enum's
    value), or a safe repr if ``str`` raises."""
    if isinstance(value, str):
        return str.__str__(value)
    try:
        text = str(value)
    except Exception:
        return safe_repr(value, 200)
    return text if isinstance(text, str) else safe_repr(value, 200)


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
