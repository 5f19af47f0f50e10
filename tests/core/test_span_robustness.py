"""Spans under stress: left in another context or entered twice, ended by control-flow
exceptions, failing near the recursion limit, unwound through many levels at once, and given
values that cannot even be asked for their class. Whatever happens, the span is recorded, the
ambient span is right and the application's exception goes on unchanged."""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

import sightline
from sightline import Event, EventType
from sightline.capture import Sanitizer
from sightline.schema import validate_event
from sightline.span import Span
from sightline.testing import capture


class LocalProxy:
    """As werkzeug's LocalProxy outside an app context: every lookup fails, even __class__."""

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError("Working outside of application context.")

    def __str__(self) -> str:
        raise RuntimeError("Working outside of application context.")

    def __repr__(self) -> str:
        return "<LocalProxy unbound>"


PROXY_MARKER = "<unserializable LocalProxy: RuntimeError>"


@pytest.fixture
def recorded() -> Iterator[Any]:
    with capture() as cap:
        yield cap


def error_of(event: Event) -> tuple[str, str | None, str | None]:
    return (
        event.status.value,
        event.error.type if event.error else None,
        event.error.kind if event.error else None,
    )


# -- the ambient span ------------------------------------------------------------------------------


def test_a_span_left_in_another_task_leaves_that_tasks_ambient_span_alone(recorded):
    async def generator() -> Any:
        with sightline.get_client().track_event("inside-generator"):
            yield 1
            yield 2

    async def main() -> tuple[Span, Span]:
        agen = generator()

        async def first() -> None:
            with sightline.trace("task-a"):
                await agen.__anext__()  # the span is entered in task A's context

        await asyncio.create_task(first())

        async def second() -> tuple[Span, Span]:
            with sightline.trace("task-b") as run_b:
                await agen.__anext__()
                with pytest.raises(StopAsyncIteration):
                    await agen.__anext__()  # the span is left in task B's context
                assert sightline.current_span() is run_b
                with sightline.get_client().track_event("child-of-b") as child:
                    pass
            return run_b, child

        return await asyncio.create_task(second())

    run_b, child = asyncio.run(main())
    assert child.parent_span_id == run_b.span_id
    assert child.trace_id == run_b.trace_id
    events = {event.name: event for event in recorded.events}
    assert sorted(events) == ["child-of-b", "inside-generator", "task-a", "task-b"]
    assert events["inside-generator"].parent_span_id == events["task-a"].span_id
    assert events["child-of-b"].parent_span_id == events["task-b"].span_id


def test_a_span_left_where_it_is_ambient_but_was_not_entered_restores_its_parent(recorded):
    step = sightline.get_client().track_event("step")
    with sightline.trace("parent") as parent:
        step.__enter__()
        copied = contextvars.copy_context()  # the step is ambient there too
    # Left only in the copied context, where it is ambient: there its parent comes back.
    copied.run(step.__exit__, None, None, None)
    assert copied.run(sightline.current_span) is parent
    assert sightline.current_span() is None
    assert sorted(event.name for event in recorded.events) == ["parent", "step"]


def test_a_span_entered_twice_is_no_longer_ambient_after_both_blocks(recorded):
    run = sightline.trace("run")
    with run:
        with run:  # a helper doing `with current_run:`
            assert sightline.current_span() is run
        assert sightline.current_span() is run
    assert sightline.current_span() is None
    with sightline.get_client().track_event("later") as later:
        pass
    assert later.parent_span_id is None
    assert later.trace_id != run.trace_id
    assert sorted(event.name for event in recorded.events) == ["later", "run"]


def test_a_span_entered_three_times_unwinds_to_the_span_it_was_entered_over(recorded):
    with sightline.trace("outer") as outer:
        step = sightline.get_client().track_event("step")
        with step:
            with step:
                with step:
                    pass
                assert sightline.current_span() is step
            assert sightline.current_span() is step
        assert sightline.current_span() is outer
    assert sightline.current_span() is None
    [recorded_step] = recorded.find(name="step")
    assert recorded_step.parent_span_id == outer.span_id


# -- exceptions that are not failures of the span's layer ----------------------------------------


def test_a_generator_closed_early_ends_its_span_as_a_monitored_generator_does(recorded):
    client = sightline.get_client()

    def stream_tokens() -> Iterator[str]:
        with client.track_event("plain-stream", type=EventType.LLM_INVOKE):
            yield from ["Hello", " world", "!"]

    @sightline.monitor(type=EventType.LLM_INVOKE, name="monitored-stream")
    def monitored_stream() -> Iterator[str]:
        yield from ["Hello", " world", "!"]

    for source in (stream_tokens, monitored_stream):
        tokens = source()
        assert next(tokens) == "Hello"
        tokens.close()  # the consumer got what it needed

    plain = recorded.one(name="plain-stream")
    monitored = recorded.one(name="monitored-stream")
    assert error_of(plain) == error_of(monitored) == ("ok", None, None)


@pytest.mark.parametrize("code", [0, None, False])
def test_a_successful_sys_exit_is_not_a_failure(recorded, code):
    with pytest.raises(SystemExit) as raised:
        with sightline.trace("cli-run"):
            sys.exit(code)
    assert raised.value.code is code
    assert error_of(recorded.one(name="cli-run")) == ("ok", None, None)


def test_a_failing_sys_exit_is_a_failure_of_kind_unknown(recorded):
    with pytest.raises(SystemExit):
        with sightline.trace("cli-run"):
            sys.exit(2)
    assert error_of(recorded.one(name="cli-run")) == ("error", "SystemExit", "unknown")


def test_ctrl_c_in_a_tool_is_an_error_of_kind_unknown_not_tool(recorded):
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as raised:
        with sightline.get_client().track_event("search", type=EventType.TOOL_CALL):
            raise interrupt
    assert raised.value is interrupt
    assert error_of(recorded.one(name="search")) == ("error", "KeyboardInterrupt", "unknown")


def test_a_cancelled_model_call_is_an_error_of_kind_orchestration_not_model(recorded):
    async def main() -> None:
        async def call() -> None:
            with sightline.get_client().track_event("chat", type=EventType.LLM_INVOKE):
                await asyncio.sleep(5)

        task = asyncio.create_task(call())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert error_of(recorded.one(name="chat")) == ("error", "CancelledError", "orchestration")


def test_a_monitored_function_cancelled_is_an_error_of_kind_orchestration(recorded):
    @sightline.monitor(type=EventType.TOOL_CALL, name="slow-tool")
    async def slow_tool() -> None:
        await asyncio.sleep(5)

    async def main() -> None:
        task = asyncio.create_task(slow_tool())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert error_of(recorded.one(name="slow-tool")) == ("error", "CancelledError", "orchestration")


def test_which_exceptions_end_a_span_in_failure():
    from sightline.span import ends_in_failure

    assert ends_in_failure(ValueError()) is True
    assert ends_in_failure(KeyboardInterrupt()) is True
    assert ends_in_failure(asyncio.CancelledError()) is True
    assert ends_in_failure(SystemExit(1)) is True
    assert ends_in_failure(SystemExit("fatal")) is True
    assert ends_in_failure(SystemExit(0)) is False
    assert ends_in_failure(SystemExit()) is False
    assert ends_in_failure(GeneratorExit()) is False


# -- failures inside __exit__ ------------------------------------------------------------------------


def test_a_failure_while_recording_the_error_keeps_the_span_and_the_users_exception(
    recorded, monkeypatch
):
    def set_error(self: Span, *args: Any, **kwargs: Any) -> Span:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(Span, "set_error", set_error)
    failure = ValueError("the user's")
    with sightline.trace("run") as run:
        with pytest.raises(ValueError) as raised:
            with sightline.get_client().track_event("tool", type=EventType.TOOL_CALL):
                raise failure
        assert raised.value is failure
        assert sightline.current_span() is run
    assert sightline.current_span() is None
    tool = recorded.one(name="tool")
    assert error_of(tool) == ("error", "ValueError", "unknown")
    assert tool.parent_span_id == run.span_id


def test_a_track_that_raises_does_not_replace_the_users_exception(recorded, monkeypatch):
    client = sightline.get_client()
    span = client.track_event("tool")

    def track(event: Event) -> bool:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(client, "track", track)
    failure = ValueError("the user's")
    with pytest.raises(ValueError) as raised:
        with span:
            raise failure
    assert raised.value is failure
    assert span.ended
    assert sightline.current_span() is None


def test_spans_ended_at_the_recursion_limit_are_all_recorded(recorded):
    client = sightline.get_client()
    client.log_event("custom", "warm-up")
    recorded.clear()  # the worker runs: nothing of it is on this stack
    created: list[int] = []

    def recurse(level: int) -> None:
        span = client.track_event(f"level{level}")
        created.append(level)
        with span:
            recurse(level + 1)

    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 120)
    try:
        with pytest.raises(RecursionError) as raised:
            recurse(0)
    finally:
        sys.setrecursionlimit(limit)
    # The application's own RecursionError, not one raised in Sightline's __exit__.
    frames = traceback.extract_tb(raised.value.__traceback__)
    assert "__exit__" not in {frame.name for frame in frames}
    events = recorded.events
    assert sorted(event.name for event in events) == sorted(f"level{n}" for n in created)
    assert {error_of(event)[:2] for event in events} == {("error", "RecursionError")}
    by_name = {event.name: event for event in events}
    for level in created[1:]:
        assert by_name[f"level{level}"].parent_span_id == by_name[f"level{level - 1}"].span_id
    assert sightline.current_span() is None


# -- stacks of an exception unwinding through many spans -------------------------------------------


@pytest.fixture
def frames_formatted(monkeypatch) -> list[int]:
    """Counts the frames the traceback module writes (on the worker)."""
    count = [0]
    original = traceback.StackSummary.format

    # format() formats every frame of the summary, even those then folded into "[Previous line
    # repeated N more times]"; format_frame_summary, which it calls per frame, is 3.11+ only.
    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += len(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(traceback.StackSummary, "format", counting)
    return count


@pytest.mark.parametrize("capture_content", [True, False])
def test_an_error_through_many_spans_formats_a_bounded_stack_for_each(
    frames_formatted, capture_content
):
    depth = 300
    with capture(capture_content=capture_content) as recorded:
        client = sightline.get_client()

        def boom(level: int) -> None:
            if level == 0:
                raise ValueError("deep")
            with client.track_event(f"b{level}"):
                boom(level - 1)

        with pytest.raises(ValueError):
            boom(depth)
        events = recorded.events
    assert len(events) == depth
    # Formatting every span's whole traceback would write depth² / 2 frames and more.
    assert frames_formatted[0] <= depth * 64
    last_line = "ValueError: deep\n" if capture_content else "ValueError\n"
    for event in events:
        assert error_of(event) == ("error", "ValueError", "unknown")
        assert event.error.stack.endswith(last_line)
        assert "in boom" in event.error.stack
        assert len(event.error.stack) <= 8192 + len("…[truncated]…")
    # The outer spans saw a traceback deeper than what is written: that is said.
    assert events[-1].error.stack.startswith("…[truncated]…")


def test_a_chained_exception_formats_only_the_last_frames_of_its_cause(frames_formatted):
    def recurse(level: int) -> None:
        if level == 0:
            raise KeyError("inner")
        recurse(level - 1)

    with capture() as recorded:
        with pytest.raises(RuntimeError):
            with sightline.trace("run"):
                try:
                    recurse(400)
                except KeyError as exc:
                    raise RuntimeError("wrapped") from exc
        [run] = recorded.events
    assert frames_formatted[0] <= 2 * 64
    stack = run.error.stack
    assert stack.startswith("…[truncated]…")
    assert "KeyError: 'inner'" in stack
    assert "The above exception was the direct cause of the following exception:" in stack
    assert stack.endswith("RuntimeError: wrapped\n")


def test_a_deep_stack_of_distinct_frames_keeps_exactly_the_tail_it_would_have(
    tmp_path, frames_formatted
):
    depth = 600
    source = "".join(
        f"def f{n}():\n    return f{n + 1}()  # a line of source for every frame\n"
        for n in range(depth)
    )
    source += f"def f{depth}():\n    raise LookupError('at the bottom')\n"
    path = tmp_path / "deep_chain.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("deep_chain", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    with capture() as recorded:
        try:
            with sightline.trace("run"):
                module.f0()
        except LookupError as exc:
            error = exc
        [run] = recorded.events
        formatted = frames_formatted[0]
    assert formatted < depth // 2
    whole = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    assert len(whole) > 8192
    assert run.error.stack == "…[truncated]…" + whole[-8192:]


# -- values that cannot be asked for their class ---------------------------------------------------


def test_add_tags_with_a_proxy_records_a_marker_instead_of_raising(recorded):
    with sightline.trace("handle") as run:
        run.add_tags("web", LocalProxy())
    assert recorded.one(name="handle").tags == ["web", "<unprintable LocalProxy>"]


def test_one_unreadable_value_loses_only_itself(recorded):
    sightline.get_client().log_event(
        "tool_call",
        "search",
        input={"query": "refund policy", "limit": 3, "user": LocalProxy()},
        output=["first", LocalProxy(), {"nested": LocalProxy(), "kept": True}],
        metadata={"route": "/search", "user": LocalProxy()},
    )
    search = recorded.one(name="search")
    assert search.input == {"query": "refund policy", "limit": 3, "user": PROXY_MARKER}
    assert search.output == ["first", PROXY_MARKER, {"nested": PROXY_MARKER, "kept": True}]
    assert search.metadata == {"route": "/search", "user": PROXY_MARKER}
    assert validate_event(search.to_dict()) == []


def test_a_clean_value_shared_as_is_still_finds_a_proxy_inside():
    sanitize = Sanitizer(share_clean=True)
    assert sanitize({"a": 1, "user": LocalProxy()}) == {"a": 1, "user": PROXY_MARKER}
    assert sanitize(["a", LocalProxy()]) == ["a", PROXY_MARKER]
    assert sanitize(LocalProxy()) == PROXY_MARKER


class UnlistableMetadata(dict):  # type: ignore[type-arg]
    """A mapping whose items cannot be listed: the walk fails on it as a whole."""

    def items(self) -> Any:
        raise RuntimeError("no items")


@pytest.mark.parametrize(
    ("metadata", "recorded_metadata"),
    [
        (
            UnlistableMetadata(route="/x"),
            {"value": "<unserializable UnlistableMetadata: RuntimeError>"},
        ),
        (LocalProxy(), {"value": PROXY_MARKER}),
    ],
    ids=["mapping-that-cannot-be-walked", "proxy"],
)
def test_metadata_stays_an_object_when_it_cannot_be_read(recorded, metadata, recorded_metadata):
    event = Event(EventType.TOOL_CALL, "search")
    event.metadata = metadata
    sightline.get_client().track(event.finish())
    search = recorded.one(name="search")
    assert search.metadata == recorded_metadata
    assert validate_event(search.to_dict()) == []


def test_usage_given_a_proxy_records_no_count_instead_of_raising(recorded):
    with sightline.get_client().track_event("chat", type=EventType.LLM_INVOKE) as chat:
        chat.set_usage(input_tokens=LocalProxy(), output_tokens=5)
    usage = recorded.one(name="chat").usage
    assert usage is not None
    assert usage.to_dict() == {"input_tokens": None, "output_tokens": 5, "total_tokens": 5}


def test_a_monitored_generator_ending_the_program_successfully_is_not_a_failure(recorded):
    @sightline.monitor(name="monitored-cli")
    def steps() -> Iterator[int]:
        yield 1
        sys.exit(0)

    @sightline.monitor(name="monitored-async-cli")
    async def async_steps() -> Any:
        yield 1
        sys.exit(0)

    with pytest.raises(SystemExit):
        list(steps())

    async def consume() -> None:
        async for _ in async_steps():
            pass

    with pytest.raises(SystemExit):
        asyncio.run(consume())
    assert error_of(recorded.one(name="monitored-cli")) == ("ok", None, None)
    assert error_of(recorded.one(name="monitored-async-cli")) == ("ok", None, None)
