"""A transparent ``ChatCompletionClient`` wrapper recording every model call as ``llm_invoke``.

Usage::

    from autogen_agentchat.agents import AssistantAgent
    from sightline_autogen import instrument_model_client

    agent = AssistantAgent("writer", model_client=instrument_model_client(model_client))
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from autogen_core.models import ChatCompletionClient

from sightline.client import get_client
from sightline.event import EventType
from sightline.logs import log_safely
from sightline.span import use_span
from sightline_autogen.mapping import (
    FRAMEWORK,
    finish_reason_of,
    model_name_of,
    result_output,
    tool_names,
    usage_details_of,
    usage_of,
    whole_prompt_tokens,
)
from sightline_autogen.scopes import WrappedCall, current_scope, mark_wrapped_llm

if TYPE_CHECKING:
    from sightline.client import Client
    from sightline.span import Span

__all__ = ["InstrumentedChatCompletionClient", "instrument_model_client"]


def instrument_model_client(
    model_client: ChatCompletionClient, *, client: Client | None = None
) -> ChatCompletionClient:
    """Wrap ``model_client`` so that every ``create`` / ``create_stream`` is recorded.

    The wrapper behaves as the wrapped client in every other respect. Wrapping an already
    wrapped client returns it unchanged. ``client`` is the Sightline client to report to
    (default: the global one, resolved at call time).
    """
    if isinstance(model_client, InstrumentedChatCompletionClient):
        return model_client
    return InstrumentedChatCompletionClient(model_client, client=client)


class InstrumentedChatCompletionClient(ChatCompletionClient):
    """A ``ChatCompletionClient`` recording the calls of the client it wraps.

    Each ``create`` and ``create_stream`` becomes one ``llm_invoke`` event: the model (from the
    client's configuration or model info, else from the response its own log reports), the
    messages, the names of the tools offered, the text or function calls returned, the finish
    reason, the ``RequestUsage`` tokens and, for streams, the number of text chunks and the
    time to the first chunk (when the client's own log reports the stream's start, else the
    first text chunk; none when neither is known). Errors of the wrapped client are recorded
    and re-raised unchanged; the wrapper never raises errors of its own. Every other method
    and attribute is the wrapped client's.
    """

    component_type = "model"

    def __init__(self, inner: ChatCompletionClient, *, client: Client | None = None) -> None:
        self._inner = inner
        self._sightline_client = client
        self._model: str | None = model_name_of(inner)  # configuration: read once

    @property
    def inner(self) -> ChatCompletionClient:
        """The wrapped model client."""
        return self._inner

    # -- recorded calls -----------------------------------------------------------------------

    async def create(self, messages: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        """``create`` of the wrapped client, recorded as one ``llm_invoke`` event."""
        span = self._start(messages, kwargs, stream=False)
        if span is None:
            return await self._inner.create(messages, *args, **kwargs)
        call = WrappedCall(span)
        try:
            with mark_wrapped_llm(call), use_span(span):
                result = await self._inner.create(messages, *args, **kwargs)
        except BaseException as exc:
            self._fail(span, exc)
            raise
        self._finish(span, result, logged_response=call.logged_response)
        return result

    def create_stream(
        self, messages: Sequence[Any], *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        """``create_stream`` of the wrapped client, recorded as one ``llm_invoke`` event."""
        return self._stream(messages, args, kwargs)

    async def _stream(
        self, messages: Sequence[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        span = self._start(messages, kwargs, stream=True)
        if span is None:
            stream = self._inner.create_stream(messages, *args, **kwargs)
            try:
                async for item in stream:
                    yield item
            finally:
                await _aclose(stream)
            return
        call = WrappedCall(span)
        try:
            # A client may check its arguments before it returns a generator: its error is
            # the call's, recorded like an error raised while streaming.
            with mark_wrapped_llm(call), use_span(span):
                stream = self._inner.create_stream(messages, *args, **kwargs)
        except BaseException as exc:
            self._fail(span, exc)
            raise
        first_text_ns: int | None = None
        chunks: int | None = None
        result: Any = None
        try:
            while True:
                with mark_wrapped_llm(call), use_span(span):
                    try:
                        item = await stream.__anext__()
                    except StopAsyncIteration:
                        break
                if isinstance(item, str):
                    if first_text_ns is None:
                        first_text_ns = time.time_ns()
                    chunks = (chunks or 0) + 1
                else:
                    chunks = chunks or 0
                    result = item
                yield item
        except GeneratorExit:
            _guarded(span.set_metadata, closed_early=True)
            raise
        except BaseException as exc:
            self._fail(span, exc)
            raise
        finally:
            await _aclose(stream)
            if not span.ended:
                # The first chunk came when the client's log said its stream began (it logs
                # that on the first chunk of any kind, tool-call deltas too), else with the
                # first text chunk; a stream of only the final result has no such time.
                first = call.stream_started_ns or first_text_ns
                self._finish(
                    span,
                    result,
                    first_chunk_ns=first,
                    chunks=chunks,
                    logged_response=call.logged_response,
                )

    # -- recording (never raises) -------------------------------------------------------------

    def _owner(self) -> Client:
        return self._sightline_client if self._sightline_client is not None else get_client()

    def _captures_content(self) -> bool:
        config = getattr(self._owner(), "config", None)
        return bool(getattr(config, "capture_content", False))

    def _start(self, messages: Any, kwargs: Mapping[str, Any], *, stream: bool) -> Span | None:
        try:
            owner = self._owner()
            if not owner.enabled:
                return None
            metadata: dict[str, Any] = {
                "client": type(self._inner).__name__,
                "stream": stream,
                "tools": tool_names(kwargs.get("tools")),
            }
            tool_choice = kwargs.get("tool_choice", "auto")
            if tool_choice != "auto":
                metadata["tool_choice"] = (
                    tool_choice
                    if isinstance(tool_choice, str)
                    else getattr(tool_choice, "name", None)
                )
            json_output = kwargs.get("json_output")
            if json_output:
                metadata["json_output"] = (
                    json_output.__name__ if isinstance(json_output, type) else True
                )
            span = owner.start_span(
                "chat_completion",
                EventType.LLM_INVOKE,
                input=list(messages) if isinstance(messages, (list, tuple)) else messages,
                metadata=metadata,
                framework=FRAMEWORK,
                model=self._model,
            )
            return span if span.is_recording else None
        except Exception as exc:
            _log_failure(exc)
            return None

    def _finish(
        self,
        span: Span,
        result: Any,
        *,
        first_chunk_ns: int | None = None,
        chunks: int | None = None,
        logged_response: Any = None,
    ) -> None:
        try:
            if result is not None:
                span.set_output(result_output(result))
                prompt, completion = usage_of(getattr(result, "usage", None))
                if prompt is not None or completion is not None:
                    if logged_response is not None:
                        # The client's log (global instrumentation on) has the provider's usage.
                        prompt = whole_prompt_tokens(prompt, logged_response)
                        details = usage_details_of(logged_response)
                        if details:
                            span.set_metadata(usage_details=details)
                    span.set_usage(input_tokens=prompt, output_tokens=completion)
                metadata: dict[str, Any] = {"finish_reason": finish_reason_of(result)}
                cached = getattr(result, "cached", None)
                if isinstance(cached, bool):
                    metadata["cached"] = cached
                    if cached:
                        span.set_cost(0.0)  # served from AutoGen's cache: nothing was billed
                thought = getattr(result, "thought", None)
                if thought and self._captures_content():
                    # The model's reasoning is content: never sent with capture_content off.
                    metadata["thought"] = thought
                span.set_metadata(metadata)
            if first_chunk_ns is not None:
                span.set_metadata(
                    time_to_first_chunk_ms=round(
                        max(0, first_chunk_ns - span.event.start_ns) / 1_000_000, 3
                    )
                )
            if chunks is not None:
                span.set_metadata(chunks=chunks)
            end_ns = time.time_ns()
            span.end(end_ns)
            scope = current_scope()
            if scope is not None:
                scope.mark_ns = end_ns
        except Exception as exc:
            _log_failure(exc)

    def _fail(self, span: Span, exc: BaseException) -> None:
        try:
            span.set_error(exc)
            span.end()
        except Exception as failure:
            _log_failure(failure)

    # -- everything else is the wrapped client's ----------------------------------------------

    async def close(self) -> None:
        await self._inner.close()

    def actual_usage(self) -> Any:
        return self._inner.actual_usage()

    def total_usage(self) -> Any:
        return self._inner.total_usage()

    def count_tokens(self, messages: Sequence[Any], *args: Any, **kwargs: Any) -> int:
        return self._inner.count_tokens(messages, *args, **kwargs)

    def remaining_tokens(self, messages: Sequence[Any], *args: Any, **kwargs: Any) -> int:
        return self._inner.remaining_tokens(messages, *args, **kwargs)

    @property
    def capabilities(self) -> Any:  # deprecated in AutoGen, kept for clients that still use it
        return self._inner.capabilities

    @property
    def model_info(self) -> Any:
        return self._inner.model_info

    def dump_component(self) -> Any:
        """The wrapped client's component model (loading it gives an uninstrumented client)."""
        return self._inner.dump_component()

    def _to_config(self) -> Any:
        return self._inner._to_config()

    def __getattr__(self, name: str) -> Any:
        if name in ("_inner", "_sightline_client", "_model"):  # before __init__ set them
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"InstrumentedChatCompletionClient({self._inner!r})"


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def _guarded(function: Any, *args: Any, **kwargs: Any) -> None:
    try:
        function(*args, **kwargs)
    except Exception as exc:
        _log_failure(exc)


_warned = False


def _log_failure(exc: Exception) -> None:
    global _warned
    if not _warned:
        _warned = True
        log_safely(
            logging.WARNING,
            "sightline: could not record an AutoGen model call: %s: %s",
            type(exc).__name__,
            exc,
        )
