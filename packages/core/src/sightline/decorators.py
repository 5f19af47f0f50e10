"""``@sightline.monitor``: record every call of a function as a span.

Works on plain functions, coroutine functions, generators and async generators: timing, the
arguments by parameter name, the result (for generators, the items yielded, bounded), and an
exception recorded with status error and re-raised unchanged.

A monitored generator behaves as the generator it wraps: ``send()``, ``throw()`` and ``close()``
(``asend()``, ``athrow()``, ``aclose()``) reach it and its return value comes back, as through
``yield from``. Its span ends once: when it is exhausted, fails, is closed or is collected.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from sightline.capture import KEPT_ITEMS, bounded_copy
from sightline.event import EventType, coerce_type
from sightline.span import _CURRENT, NOOP_SPAN, ends_in_failure

__all__ = ["monitor"]

F = TypeVar("F", bound=Callable[..., Any])
_MAX_YIELDS = 100
# Containers recorded as they are at the call, by a one-level copy; exact types only, since
# copying a subclass or an arbitrary object could run user code.
_COPIED = frozenset({list, dict, set})
_type_of = type  # ``type`` is a parameter of monitor(), which the wrappers close over


@overload
def monitor(func: F) -> F: ...


@overload
def monitor(
    func: None = None,
    *,
    type: EventType | str = ...,
    name: str | None = ...,
    capture_args: bool = ...,
    capture_result: bool = ...,
    client: Any = ...,
) -> Callable[[F], F]: ...


def monitor(
    func: Callable[..., Any] | None = None,
    *,
    type: EventType | str = EventType.TOOL_CALL,
    name: str | None = None,
    capture_args: bool = True,
    capture_result: bool = True,
    client: Any = None,
) -> Any:
    """Record each call of the decorated function as a span of ``type`` (default ``tool_call``).

    Example::

        @sightline.monitor(type=EventType.TOOL_CALL)
        def search_kb(query: str, limit: int = 3) -> list[str]: ...

    The span nests under the ambient span and is ambient itself while the function runs.
    ``client`` defaults to the global client at call time.

    Arguments and results are recorded as they were at the call: a list, dict or set passed or
    returned is copied one level on the caller's thread, so appending to it afterwards does not
    change the event; a change deeper inside (to a dict inside that list) still may.
    """
    event_type = coerce_type(type)

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        span_name = name or getattr(function, "__qualname__", None) or repr(function)
        # Resolved on the first call: (signature or None, names of *args / **kwargs parameters).
        signature: list[tuple[inspect.Signature | None, frozenset[str]]] = []

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if not capture_args:
                return None
            if not signature:
                signature.append(_signature(function))
            sig, spread = signature[0]
            if sig is None:
                return _unbound(args, kwargs)
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError:
                return _unbound(args, kwargs)
            values = bound.arguments  # a fresh dict of this call's own
            values.pop("self", None)
            values.pop("cls", None)
            # Recorded as passed (see _snapshot), inline: this runs on every call. Replacing
            # the values of existing keys while iterating is safe: the size does not change.
            for key, value in values.items():
                if _type_of(value) in _COPIED:
                    values[key] = value.copy() if len(value) <= KEPT_ITEMS else bounded_copy(value)
            if spread:
                _snapshot_spread(values, spread)
            return values

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            from sightline.client import get_client

            owner = client if client is not None else get_client()
            if not owner.enabled:  # a cheap no-op: no arguments bound or copied
                return NOOP_SPAN
            return owner.start_span(span_name, event_type, input=arguments(args, kwargs))

        if inspect.isasyncgenfunction(function):

            @functools.wraps(function)
            async def async_gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                # A hand-written ``yield from`` for async generators (which have none):
                # asend(), athrow() and aclose() reach the wrapped generator, and its span is
                # ambient only while the generator body runs, not while the consumer holds an item.
                span = start(args, kwargs)
                items: list[Any] = []
                try:
                    agen = function(*args, **kwargs)
                    asend = agen.asend
                    sent: Any = None
                    thrown: BaseException | None = None
                    while True:
                        token = _CURRENT.set(span)
                        try:
                            if thrown is None:
                                item = await asend(sent)
                            else:
                                error, thrown = thrown, None
                                try:
                                    item = await agen.athrow(error)
                                finally:
                                    del error  # no cycle through the traceback's frame
                        except StopAsyncIteration:
                            return
                        finally:
                            _CURRENT.reset(token)
                        if capture_result and len(items) < _MAX_YIELDS:
                            items.append(_snapshot(item))
                        try:
                            sent = yield item
                        except GeneratorExit:  # aclose(), or abandoned and finalized
                            token = _CURRENT.set(span)
                            try:
                                await agen.aclose()
                            finally:
                                _CURRENT.reset(token)
                            raise
                        except BaseException as exc:  # athrow(): the wrapped generator decides
                            thrown = exc
                except BaseException as exc:  # closed early (GeneratorExit): not a failure
                    if ends_in_failure(exc):
                        span.set_error(exc)
                    raise
                finally:
                    if capture_result:
                        span.set_output(items)
                    span.end()

            return async_gen_wrapper

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                span = start(args, kwargs)
                with span:
                    result = await function(*args, **kwargs)
                    if capture_result:
                        span.set_output(_snapshot(result))
                    return result

            return async_wrapper

        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                # A hand-written ``yield from``: send(), throw() and close() reach the wrapped
                # generator and its return value comes back, while the span is ambient only
                # while the generator body runs, not while the consumer holds an item.
                span = start(args, kwargs)
                items: list[Any] = []
                try:
                    gen = function(*args, **kwargs)
                    send = gen.send
                    sent: Any = None
                    thrown: BaseException | None = None
                    while True:
                        token = _CURRENT.set(span)
                        try:
                            if thrown is None:
                                item = send(sent)
                            else:
                                error, thrown = thrown, None
                                try:
                                    item = gen.throw(error)
                                finally:
                                    del error  # no cycle through the traceback's frame
                        except StopIteration as stop:
                            return stop.value
                        finally:
                            _CURRENT.reset(token)
                        if capture_result and len(items) < _MAX_YIELDS:
                            items.append(_snapshot(item))
                        try:
                            sent = yield item
                        except GeneratorExit:  # close(), or abandoned and collected
                            token = _CURRENT.set(span)
                            try:
                                gen.close()
                            finally:
                                _CURRENT.reset(token)
                            raise
                        except BaseException as exc:  # throw(): the wrapped generator decides
                            thrown = exc
                except BaseException as exc:  # closed early (GeneratorExit): not a failure
                    if ends_in_failure(exc):
                        span.set_error(exc)
                    raise
                finally:
                    if capture_result:
                        span.set_output(items)
                    span.end()

            return gen_wrapper

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            span = start(args, kwargs)
            with span:
                result = function(*args, **kwargs)
                if capture_result:
                    span.set_output(_snapshot(result))
                return result

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


def _snapshot(value: Any) -> Any:
    """``value`` as it is now: an exact list, dict or set is copied one level, nothing else.

    Events are serialized on the background worker, up to a flush interval after the call; a
    shallow copy taken on the caller's thread keeps later appends and assignments out of the
    record, at the cost of one copy of at most 500 items (what the sanitizer would keep).
    Changes deeper inside nested values still show (a documented limit): copying arbitrary
    objects is neither cheap nor safe.
    """
    if type(value) in _COPIED:
        return value.copy() if len(value) <= KEPT_ITEMS else bounded_copy(value)
    return value


def _snapshot_spread(values: dict[str, Any], spread: frozenset[str]) -> None:
    """Snapshot the caller's values inside the bound ``*args`` tuple and ``**kwargs`` dict."""
    for key in spread:
        if key in values:
            values[key] = _snapshot_each(values[key])


def _snapshot_each(value: Any) -> Any:
    """The bound ``*args`` tuple or ``**kwargs`` dict, each of the caller's values snapshotted."""
    if type(value) is tuple:
        return tuple([_snapshot(item) for item in value])
    if type(value) is dict:
        return {key: _snapshot(item) for key, item in value.items()}
    return _snapshot(value)


def _unbound(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call that cannot be bound to the signature, as passed."""
    return {
        "args": [_snapshot(item) for item in args],
        "kwargs": {key: _snapshot(item) for key, item in kwargs.items()},
    }


def _signature(function: Callable[..., Any]) -> tuple[inspect.Signature | None, frozenset[str]]:
    """The signature of ``function`` (None if it has none) and its ``*args``/``**kwargs`` names."""
    try:
        sig = inspect.signature(function)
    except (TypeError, ValueError):
        return None, frozenset()
    spread = frozenset(
        name
        for name, parameter in sig.parameters.items()
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    )
    return sig, spread
