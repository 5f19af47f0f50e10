"""``@sightline.monitor``: record every call of a function as a span.

Works on plain functions, coroutine functions, generators and async generators: timing, the
arguments by parameter name, the result (for generators, the items yielded, bounded), and an
exception recorded with status error and re-raised unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from sightline.event import EventType, coerce_type
from sightline.span import _CURRENT

__all__ = ["monitor"]

F = TypeVar("F", bound=Callable[..., Any])
_MAX_YIELDS = 100


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
    """
    event_type = coerce_type(type)

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        span_name = name or getattr(function, "__qualname__", None) or repr(function)
        signature: list[inspect.Signature | None] = []

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if not capture_args:
                return None
            if not signature:
                try:
                    signature.append(inspect.signature(function))
                except (TypeError, ValueError):
                    signature.append(None)
            sig = signature[0]
            if sig is None:
                return {"args": list(args), "kwargs": kwargs}
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError:
                return {"args": list(args), "kwargs": kwargs}
            values = dict(bound.arguments)
            values.pop("self", None)
            values.pop("cls", None)
            return values

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            from sightline.client import get_client

            owner = client if client is not None else get_client()
            return owner.start_span(span_name, event_type, input=arguments(args, kwargs))

        if inspect.isasyncgenfunction(function):

            @functools.wraps(function)
            async def async_gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                span = start(args, kwargs)
                items: list[Any] = []
                agen = function(*args, **kwargs)
                try:
                    while True:
                        # The span is ambient only while the generator body runs, not
                        # while the consumer holds an item.
                        token = _CURRENT.set(span)
                        try:
                            item = await agen.__anext__()
                        except StopAsyncIteration:
                            break
                        finally:
                            _CURRENT.reset(token)
                        if capture_result and len(items) < _MAX_YIELDS:
                            items.append(item)
                        yield item
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as exc:
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
                        span.set_output(result)
                    return result

            return async_wrapper

        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                span = start(args, kwargs)
                items: list[Any] = []
                gen = function(*args, **kwargs)
                try:
                    while True:
                        token = _CURRENT.set(span)
                        try:
                            item = next(gen)
                        except StopIteration:
                            break
                        finally:
                            _CURRENT.reset(token)
                        if capture_result and len(items) < _MAX_YIELDS:
                            items.append(item)
                        yield item
                except GeneratorExit:
                    gen.close()
                    raise
                except BaseException as exc:
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
                    span.set_output(result)
                return result

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate
