"""Malformed values are repaired or made safe, never a reason to stop redacting or to raise:
float timestamps, usage given as a dict or as strings, out-of-range integers, hostile tags,
error stacks that repeat the exception's message, and events that end after close()."""

from __future__ import annotations

import builtins
import logging
import time
import traceback
from typing import Any

import pytest

from sightline import Client
from sightline import event as event_model
from sightline.capture import MASK, TRUNCATED, Sanitizer
from sightline.event import ErrorInfo, Event, Usage
from sightline.store.sqlite import SqliteStore
from sightline.testing import InMemoryExporter

KEY = "sk-ABCDEFGHIJKLMNOPQRSTUVWX1234"
PROMPT = "my SSN is 078-05-1120, please summarise"


@pytest.fixture
def memory():
    """An explicit client exporting to memory; yields (client, exporter) and closes it."""
    exporter = InMemoryExporter()
    client = Client(exporters=[exporter], flush_interval=0.05)
    yield client, exporter
    client.close()


@pytest.fixture
def private():
    """The same with ``capture_content=False``."""
    exporter = InMemoryExporter()
    client = Client(exporters=[exporter], flush_interval=0.05, capture_content=False)
    yield client, exporter
    client.close()


def delivered(client: Client, exporter: InMemoryExporter) -> list[Event]:
    assert client.flush(5.0) is True
    return exporter.events


def plugin_status(client: Client, name: str) -> str:
    return next(info.status for info in client.plugins.list() if info.name == name)


def later_event_is_redacted(client: Client, exporter: InMemoryExporter) -> None:
    exporter.clear()
    client.log_event("tool_call", "later", input={"api_key": KEY}, metadata={"password": "x"})
    [later] = delivered(client, exporter)
    assert (later.input, later.metadata) == ({"api_key": MASK}, {"password": MASK})


# -- timestamps and usage given in the wrong type ------------------------------------------------


def test_float_start_and_end_ns_become_integer_nanoseconds(memory):
    client, exporter = memory
    start = time.time() * 1e9  # a float, as time.time() gives
    client.start_span("external", start_ns=start).end(end_ns=start + 2.5e6)
    [event] = delivered(client, exporter)
    assert (event.start_ns, event.end_ns) == (int(start), int(start + 2.5e6))
    assert event.start_ns.__class__ is int and event.end_ns.__class__ is int
    assert event.id == f"{int(start):016x}{event.span_id}"
    assert plugin_status(client, "builtin-redaction") == "builtin"
    later_event_is_redacted(client, exporter)


def test_an_unreadable_start_becomes_the_end_and_an_unreadable_end_is_dropped(memory):
    client, exporter = memory
    client.track(Event("custom", "a", start_ns="yesterday", end_ns=1_000))  # type: ignore[arg-type]
    client.track(Event("custom", "b", start_ns=2**70, end_ns=float("nan")))  # type: ignore[arg-type]
    client.track(Event("custom", "c", start_ns=-(2**70), end_ns=5_000))
    a, b, c = delivered(client, exporter)
    assert (a.start_ns, a.end_ns) == (1_000, 1_000)
    assert b.end_ns is None
    assert b.start_ns.__class__ is int and abs(b.start_ns - time.time_ns()) < 60 * 10**9
    assert (c.start_ns, c.end_ns) == (5_000, 5_000)  # before 1970: unreadable


def test_usage_given_to_an_event_as_a_dict_is_read_as_usage(memory):
    client, exporter = memory
    client.track(Event("llm_invoke", "call", usage={"input_tokens": 3, "output_tokens": 4}))  # type: ignore[arg-type]
    client.track(Event("llm_invoke", "openai", usage={"prompt_tokens": 5, "completion_tokens": 1}))  # type: ignore[arg-type]
    client.track(Event("llm_invoke", "junk", usage=["not", "usage"]))  # type: ignore[arg-type]
    call, openai, junk = delivered(client, exporter)
    assert call.usage == Usage(3, 4, 7)
    assert openai.usage == Usage(5, 1, 6)
    assert junk.usage is None
    assert plugin_status(client, "builtin-redaction") == "builtin"
    later_event_is_redacted(client, exporter)


def test_set_usage_reads_numeric_strings_and_floats_and_never_raises(memory):
    client, exporter = memory
    with client.track_event("mixed", type="llm_invoke") as span:
        span.set_usage(input_tokens="12", output_tokens=3)  # type: ignore[arg-type]
    with client.track_event("strings", type="llm_invoke") as span:
        span.set_usage("12", "3")  # type: ignore[arg-type]
    with client.track_event("odd", type="llm_invoke") as span:
        span.set_usage(input_tokens="many", output_tokens=2.9, total_tokens=True)  # type: ignore[arg-type]
    mixed, strings, odd = delivered(client, exporter)
    assert mixed.usage == Usage(12, 3, 15)
    assert strings.usage == Usage(12, 3, 15)
    assert odd.usage.to_dict() == {"input_tokens": None, "output_tokens": 2, "total_tokens": 2}


def test_log_event_reads_openai_usage_names_and_ignores_other_keys(memory):
    client, exporter = memory
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "cached": 1}
    event = client.log_event("llm_invoke", "x", usage=usage)
    assert event is not None
    [recorded] = delivered(client, exporter)
    assert recorded.usage == Usage(5, 2, 7)


def test_log_event_reads_a_status_in_any_case_and_an_unreadable_duration(memory):
    client, exporter = memory
    client.log_event("tool_call", "upper", status="OK", duration_ms="12.5")
    client.log_event("tool_call", "unknown", status="failed", duration_ms="soon")
    client.log_event("tool_call", "negative", duration_ms=-5)
    upper, unknown, negative = delivered(client, exporter)
    assert (upper.status.value, upper.end_ns - upper.start_ns) == ("ok", 12_500_000)
    assert (unknown.status.value, unknown.error.type, unknown.end_ns - unknown.start_ns) == (
        "error",
        "Error",
        0,
    )
    assert negative.end_ns == negative.start_ns
    assert client.stats()["processor_errors"] == 0


def test_a_log_event_that_cannot_make_an_event_is_counted(memory, caplog):
    client, exporter = memory
    with caplog.at_level(logging.ERROR, logger="sightline"):
        assert client.log_event("no-such-type", "bad") is None
    assert delivered(client, exporter) == []
    assert client.stats()["processor_errors"] == 1
    assert "log_event failed (ValueError)" in caplog.text


def test_usage_is_read_from_a_record_with_token_attributes():
    class CompletionUsage:  # the shape of OpenAI's response.usage
        prompt_tokens = 9
        completion_tokens = 4
        total_tokens = 13

    assert Usage.coerce(CompletionUsage()) == Usage(9, 4, 13)
    assert Usage.coerce(object()) is None
    assert Usage.coerce("12") is None


def test_token_counts_beyond_64_bits_become_none(memory):
    client, exporter = memory
    client.log_event("llm_invoke", "big", usage={"input_tokens": 2**64, "output_tokens": 1})
    with client.track_event("set", type="llm_invoke") as span:
        span.event.usage = Usage(2**63 - 1, 1)  # the sum passes 2**63-1
    big, summed = delivered(client, exporter)
    assert big.usage.to_dict() == {"input_tokens": None, "output_tokens": 1, "total_tokens": None}
    assert summed.usage.to_dict() == {
        "input_tokens": 2**63 - 1,
        "output_tokens": 1,
        "total_tokens": None,
    }


# -- the built-in redaction is never switched off ----------------------------------------------


class Unformattable:
    """A span id whose text cannot be read: the redaction processor raises on the event."""

    def __format__(self, spec: str) -> str:
        raise RuntimeError(f"cannot format {KEY}")


def test_an_event_redaction_raises_on_is_dropped_counted_and_redaction_stays_on(memory, caplog):
    client, exporter = memory
    with caplog.at_level(logging.ERROR, logger="sightline"):
        for _ in range(2):
            bad = Event("tool_call", "bad", input={"api_key": KEY})
            bad.span_id = Unformattable()  # type: ignore[assignment]
            client.track(bad)
        assert delivered(client, exporter) == []
    stats = client.stats()
    assert (stats["processor_errors"], stats["filtered"], stats["processed"]) == (2, 0, 2)
    assert plugin_status(client, "builtin-redaction") == "builtin"
    [record] = [r for r in caplog.records if "builtin-redaction" in r.getMessage()]
    assert "RuntimeError" in record.getMessage()
    assert KEY not in caplog.text
    later_event_is_redacted(client, exporter)
    client.close()
    assert client.stats()["processor_errors"] == 2


def test_an_error_given_as_text_is_recorded_as_an_error_info(memory):
    client, exporter = memory
    client.track(Event("tool_call", "t", status="error", error="boom"))  # type: ignore[arg-type]
    [event] = delivered(client, exporter)
    assert event.error == ErrorInfo("Error", "boom", None, "unknown")


# -- error stacks ---------------------------------------------------------------------------------


def fail_with_chained_errors(prompt: str) -> None:
    try:
        try:
            {}[prompt]
        except KeyError as exc:
            raise LookupError(f"no answer for {prompt!r}") from exc
    except LookupError:
        raise RuntimeError(f"upstream 401 for key {KEY} (Authorization: Bearer {KEY}) {prompt}")


def record_failure(client: Client) -> None:
    try:
        fail_with_chained_errors(PROMPT)
    except RuntimeError as exc:
        client.log_event("llm_invoke", "call", error=exc)


def test_with_content_on_the_stack_is_masked_like_the_message(memory):
    client, exporter = memory
    record_failure(client)
    [event] = delivered(client, exporter)
    stack = event.error.stack
    assert KEY not in stack
    assert f"RuntimeError: upstream 401 for key {MASK} (Authorization: Bearer {MASK})" in stack
    assert PROMPT in stack  # content is captured: the prompt may stay, as in the message


def test_with_content_off_the_stack_keeps_frames_and_types_but_no_message(private):
    client, exporter = private
    record_failure(client)
    [event] = delivered(client, exporter)
    stack = event.error.stack
    assert "078-05-1120" not in stack and KEY not in stack and MASK not in stack
    lines = stack.splitlines()
    exception_lines = [line for line in lines if line and not line.startswith(" ")]
    assert exception_lines == [
        "Traceback (most recent call last):",
        "KeyError",
        "The above exception was the direct cause of the following exception:",
        "Traceback (most recent call last):",
        "LookupError",
        "During handling of the above exception, another exception occurred:",
        "Traceback (most recent call last):",
        "RuntimeError",
    ]
    assert sum("in fail_with_chained_errors" in line for line in lines) == 3
    assert event.error.message == ""


def test_a_stack_given_as_text_loses_its_messages_when_content_is_off(private):
    client, exporter = private
    try:
        fail_with_chained_errors(PROMPT)
    except RuntimeError as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        expected = event_model.format_stack_without_messages(exc)
    client.log_event("llm_invoke", "call", error=ErrorInfo("RuntimeError", "x", text))
    [event] = delivered(client, exporter)
    assert PROMPT in text and KEY in text
    assert event.error.stack == expected


def test_strip_exception_messages_keeps_frames_and_types_only():
    text = (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 3, in <module>\n'
        "    main()\n"
        "    ^^^^^^\n"
        "app.errors.Denied: key sk-live-123 refused\n"
        "  second line of the message\n"
        "hunter2\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "ValueError\n"
    )
    assert event_model.strip_exception_messages(text) == (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 3, in <module>\n'
        "    main()\n"
        "    ^^^^^^\n"
        "app.errors.Denied\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "ValueError\n"
    )
    assert event_model.strip_exception_messages("not a traceback: secret\nmore secret") == ""


def test_a_stack_without_messages_names_the_sub_exceptions_of_a_group():
    group = getattr(builtins, "ExceptionGroup", None)
    if group is None:
        pytest.skip("exception groups need Python 3.11")
    try:
        raise group(PROMPT, [ValueError(KEY), TypeError(PROMPT)])
    except Exception as exc:
        stack = event_model.format_stack_without_messages(exc)
    assert stack.splitlines()[-5:] == [
        "ExceptionGroup",
        "  +-- sub-exception 1 of 2 --",
        "  | ValueError",
        "  +-- sub-exception 2 of 2 --",
        "  | TypeError",
    ]
    assert PROMPT not in stack and KEY not in stack


# -- integers beyond 64 bits ---------------------------------------------------------------------


def test_integers_beyond_64_bits_become_their_decimal_text():
    value = {"n": 2**64, "m": -(2**63) - 1, "max": 2**63 - 1, "min": -(2**63), "huge": 10**5000}
    assert Sanitizer()(value) == {
        "n": "18446744073709551616",
        "m": "-9223372036854775809",
        "max": 2**63 - 1,
        "min": -(2**63),
        "huge": f"<int with {(10**5000).bit_length()} bits>",
    }
    assert Sanitizer(share_clean=True)(value)["n"] == "18446744073709551616"
    assert Sanitizer(max_string=5)([2**70]) == ["11805" + TRUNCATED]


def test_an_event_with_huge_integers_is_stored_with_its_batch(tmp_path):
    path = str(tmp_path / "events.db")
    client = Client(db=path, exporters=["sqlite"])
    client.log_event("tool_call", "before")
    client.log_event("llm_invoke", "poison", input={"n": 10**5000, "m": 2**64},
                     usage={"input_tokens": 2**64, "output_tokens": 1})  # fmt: skip
    client.log_event("tool_call", "after")
    assert client.flush(5.0) is True
    stats = client.stats()
    client.close()
    assert (stats["exported"], stats["failed"]) == (3, 0)
    store = SqliteStore(path, readonly=True)
    try:
        events, _ = store.events_after(0)
    finally:
        store.close()
    by_name = {e["name"]: e for e in events}
    assert sorted(by_name) == ["after", "before", "poison"]
    poison = by_name["poison"]
    assert poison["input"] == {"n": f"<int with {(10**5000).bit_length()} bits>", "m": str(2**64)}
    assert poison["usage"] == {"input_tokens": None, "output_tokens": 1, "total_tokens": None}


# -- events after close ------------------------------------------------------------------------


def test_a_span_that_ends_after_close_is_counted_and_logged_once(caplog):
    exporter = InMemoryExporter()
    client = Client(exporters=[exporter], flush_interval=0.05)
    with caplog.at_level(logging.WARNING, logger="sightline"):
        with client.trace("job"):
            with client.trace("step"):
                pass
            client.close()
        assert client.log_event("tool_call", "late") is None
    assert [e.name for e in exporter.events] == ["step"]
    stats = client.stats()
    assert (stats["dropped_after_close"], stats["exported"]) == (2, 1)
    assert sum("after the client was closed" in r.getMessage() for r in caplog.records) == 1


def test_a_disabled_client_counts_nothing_after_close():
    client = Client(enabled=False)
    client.close()
    assert client.track(Event("custom", "x")) is False
    assert client.stats()["dropped_after_close"] == 0


# -- tags ----------------------------------------------------------------------------------------


class HostileEq:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq boom")

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "HostileEq()"


class ArrayLike:
    """Compares element-wise like a numpy array: the result has no truth value."""

    def __eq__(self, other: object) -> Any:
        return self

    def __bool__(self) -> bool:
        raise ValueError("The truth value of an array with more than one element is ambiguous")

    __hash__ = object.__hash__

    def __str__(self) -> str:
        return "[1 2]"


def test_add_tags_makes_tags_text_and_never_raises(memory):
    client, exporter = memory
    with client.track_event("x") as span:
        span.add_tags(HostileEq(), "retry", ArrayLike(), ArrayLike(), "retry")
    with client.track_event("y", tags=[HostileEq()]) as span:  # type: ignore[list-item]
        span.add_tags("retry", 7)  # type: ignore[arg-type]
    x, y = delivered(client, exporter)
    assert x.tags == ["HostileEq()", "retry", "[1 2]"]
    assert y.tags == ["HostileEq()", "retry", "7"]


def test_log_event_never_raises_when_close_runs_during_it():
    from sightline.span import add_parent_source, remove_parent_source

    client = Client(exporters=[InMemoryExporter()])

    def close_now() -> None:  # stands for close() on another thread at this very moment
        client.close(1)

    add_parent_source(close_now)
    try:
        assert client.log_event("no-such-type", "x") is None
    finally:
        remove_parent_source(close_now)
