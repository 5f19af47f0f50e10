"""``@monitor`` is transparent and records what happened when it happened; governance survives a
plugin that answers outside the ``sightline_authorize_tool`` contract by failing closed.

- A monitored generator behaves as the generator it wraps: ``send()`` / ``throw()`` /
  ``close()`` (and ``asend()`` / ``athrow()`` / ``aclose()``) reach it, its return value comes
  back through ``yield from``, and its span ends once whichever way it stops.
- Arguments and results are recorded as they were at the call, not as the caller changed them
  before the background worker read them (top-level list, dict and set values).
- A malformed governance answer, like a policy that raises, refuses the call it was given for
  (governance fails closed), logged at error level once; the plugin stays enabled.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import pytest

import sightline
from sightline import Decision, ToolDenied

# -- generators: send, throw, close and the return value -----------------------------------------


def test_values_sent_reach_a_monitored_generator_and_its_return_value_comes_back(
    sightline_capture,
):
    @sightline.monitor(name="echo")
    def echo():
        received = []
        while True:
            value = yield len(received)
            if value is None:
                return received
            received.append(value)

    stream = echo()
    assert next(stream) == 0
    assert (stream.send("a"), stream.send("b")) == (1, 2)
    with pytest.raises(StopIteration) as stopped:
        stream.send(None)
    assert stopped.value.value == ["a", "b"]
    event = sightline_capture.one(name="echo")
    assert (event.status.value, event.error, event.output) == ("ok", None, [0, 1, 2])


def test_yield_from_a_monitored_generator_gets_its_return_value(sightline_capture):
    @sightline.monitor(name="inner")
    def inner():
        yield 1
        return "result"

    def outer():
        result = yield from inner()
        yield result

    assert list(outer()) == [1, "result"]
    event = sightline_capture.one(name="inner")
    assert (event.status.value, event.output) == ("ok", [1])


def test_an_exception_thrown_into_a_monitored_generator_reaches_its_own_handler(
    sightline_capture,
):
    @sightline.monitor(name="worker")
    def worker():
        while True:
            try:
                yield "working"
            except ValueError:
                yield "recovered"

    stream = worker()
    assert next(stream) == "working"
    assert stream.throw(ValueError("retry")) == "recovered"
    assert next(stream) == "working"
    stream.close()
    event = sightline_capture.one(name="worker")
    assert (event.status.value, event.error, event.output) == (
        "ok",
        None,
        ["working", "recovered", "working"],
    )


def test_an_exception_thrown_into_a_monitored_generator_and_not_handled_is_recorded(
    sightline_capture,
):
    error = KeyError("cancelled by the consumer")
    seen = []

    @sightline.monitor(name="pages")
    def pages():
        try:
            yield 1
            yield 2
        except KeyError as exc:
            seen.append(exc)
            raise

    stream = pages()
    next(stream)
    with pytest.raises(KeyError) as raised:
        stream.throw(error)
    assert raised.value is error
    assert seen == [error]
    event = sightline_capture.one(name="pages")
    assert (event.status.value, event.error.type, event.error.kind, event.output) == (
        "error",
        "KeyError",
        "tool",
        [1],
    )


def test_close_runs_the_generators_cleanup_inside_its_span_and_is_not_an_error(
    sightline_capture,
):
    seen_in_cleanup = []

    @sightline.monitor(name="reader")
    def reader():
        try:
            while True:
                yield "line"
        finally:
            seen_in_cleanup.append(sightline.current_span())
            with sightline.get_client().track_event("release", type="api_call"):
                pass

    stream = reader()
    next(stream)
    stream.close()
    stream.close()  # a second close does nothing
    event = sightline_capture.one(name="reader")
    assert (event.status.value, event.error, event.output) == ("ok", None, ["line"])
    assert [span.span_id for span in seen_in_cleanup] == [event.span_id]
    assert sightline_capture.one(name="release").parent_span_id == event.span_id


def test_a_monitored_generator_collected_while_suspended_ends_its_span_once(sightline_capture):
    @sightline.monitor(name="ticks")
    def ticks():
        try:
            yield from range(10)
        finally:
            with sightline.get_client().track_event("ticks-cleanup"):
                pass

    stream = ticks()
    assert (next(stream), next(stream)) == (0, 1)
    del stream
    gc.collect()
    [event] = sightline_capture.find(name="ticks")
    assert (event.status.value, event.error, event.output) == ("ok", None, [0, 1])
    assert sightline_capture.one(name="ticks-cleanup").parent_span_id == event.span_id


def test_an_error_raised_by_a_generators_cleanup_on_close_is_recorded(sightline_capture):
    error = OSError("flush failed")

    @sightline.monitor(name="writer")
    def writer():
        try:
            yield "ready"
        finally:
            raise error

    stream = writer()
    next(stream)
    with pytest.raises(OSError) as raised:
        stream.close()
    assert raised.value is error
    event = sightline_capture.one(name="writer")
    assert (event.status.value, event.error.type, event.error.message, event.output) == (
        "error",
        "OSError",
        "flush failed",
        ["ready"],
    )


def test_a_generator_called_with_wrong_arguments_records_the_error(sightline_capture):
    @sightline.monitor(name="numbers")
    def numbers(n):
        yield from range(n)

    with pytest.raises(TypeError):
        next(numbers(1, 2))
    event = sightline_capture.one(name="numbers")
    assert (event.status.value, event.error.type, event.output) == ("error", "TypeError", [])


# -- async generators: asend, athrow, aclose ------------------------------------------------------


async def test_values_sent_reach_a_monitored_async_generator(sightline_capture):
    @sightline.monitor(name="total")
    async def total():
        running = 0
        while True:
            value = yield running
            running += value or 0

    stream = total()
    assert await stream.__anext__() == 0
    assert (await stream.asend(5), await stream.asend(7)) == (5, 12)
    await stream.aclose()
    event = sightline_capture.one(name="total")
    assert (event.status.value, event.error, event.output) == ("ok", None, [0, 5, 12])


async def test_an_exception_thrown_into_a_monitored_async_generator_reaches_its_own_handler(
    sightline_capture,
):
    @sightline.monitor(name="aworker")
    async def aworker():
        while True:
            try:
                yield "working"
            except ValueError:
                yield "recovered"

    stream = aworker()
    assert await stream.__anext__() == "working"
    assert await stream.athrow(ValueError("retry")) == "recovered"
    await stream.aclose()
    event = sightline_capture.one(name="aworker")
    assert (event.status.value, event.error, event.output) == (
        "ok",
        None,
        ["working", "recovered"],
    )


async def test_an_exception_thrown_into_a_monitored_async_generator_and_not_handled_is_recorded(
    sightline_capture,
):
    error = TimeoutError("consumer gave up")
    seen = []

    @sightline.monitor(type="llm_invoke", name="tokens")
    async def tokens():
        try:
            yield "a"
            yield "b"
        except TimeoutError as exc:
            seen.append(exc)
            raise

    stream = tokens()
    await stream.__anext__()
    with pytest.raises(TimeoutError) as raised:
        await stream.athrow(error)
    assert raised.value is error
    assert seen == [error]
    event = sightline_capture.one(name="tokens")
    assert (event.status.value, event.error.type, event.error.kind, event.output) == (
        "error",
        "TimeoutError",
        "timeout",
        ["a"],
    )


async def test_aclose_runs_the_async_generators_cleanup_inside_its_span(sightline_capture):
    @sightline.monitor(name="feed")
    async def feed():
        try:
            while True:
                yield "item"
        finally:
            with sightline.get_client().track_event("unsubscribe", type="api_call"):
                pass

    stream = feed()
    await stream.__anext__()
    await stream.aclose()
    event = sightline_capture.one(name="feed")
    assert (event.status.value, event.error, event.output) == ("ok", None, ["item"])
    assert sightline_capture.one(name="unsubscribe").parent_span_id == event.span_id


# -- inputs and outputs as they were at the call -------------------------------------------------


def test_inputs_are_recorded_as_they_were_when_the_call_was_made(sightline_capture):
    @sightline.monitor(type="llm_invoke", name="chat")
    def chat(messages):
        return {"role": "assistant", "content": f"reply to {len(messages)}"}

    messages = [{"role": "user", "content": "hi"}]
    for turn in range(3):
        messages.append(chat(messages))
        messages.append({"role": "user", "content": f"follow-up {turn}"})
    recorded = [(e.input["messages"], e.output["content"]) for e in sightline_capture.events]
    assert [(len(sent), reply) for sent, reply in recorded] == [
        (1, "reply to 1"),
        (3, "reply to 3"),
        (5, "reply to 5"),
    ]
    assert recorded[1][0] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "reply to 1"},
        {"role": "user", "content": "follow-up 0"},
    ]


def test_dict_and_set_arguments_are_recorded_as_they_were_passed(sightline_capture):
    @sightline.monitor(name="lookup")
    def lookup(filters, fields):
        return None

    filters = {"status": "open"}
    fields = {"id"}
    lookup(filters, fields=fields)
    filters["status"] = "closed"
    filters["owner"] = "me"
    fields.add("title")
    event = sightline_capture.one(name="lookup")
    assert event.input == {"filters": {"status": "open"}, "fields": ["id"]}


def test_var_positional_and_var_keyword_arguments_are_recorded_as_they_were_passed(
    sightline_capture,
):
    @sightline.monitor(name="batch")
    def batch(*queries, **options):
        return None

    queries = ["a"]
    tags = ["x"]
    batch(queries, tags=tags)
    queries.append("b")
    tags.append("y")
    assert sightline_capture.one(name="batch").input == {
        "queries": [["a"]],
        "options": {"tags": ["x"]},
    }


def test_a_returned_list_changed_by_the_caller_is_recorded_as_returned(sightline_capture):
    @sightline.monitor(name="history")
    def history():
        return ["first"]

    result = history()
    result.append("added by the caller")
    assert sightline_capture.one(name="history").output == ["first"]


async def test_an_awaited_result_changed_by_the_caller_is_recorded_as_returned(
    sightline_capture,
):
    @sightline.monitor(name="profile")
    async def profile():
        return {"name": "Ada"}

    result = await profile()
    result["name"] = "changed"
    assert sightline_capture.one(name="profile").output == {"name": "Ada"}


def test_each_item_a_generator_yields_is_recorded_as_it_was_yielded(sightline_capture):
    @sightline.monitor(name="growing")
    def growing():
        buffer = []
        for char in "abc":
            buffer.append(char)
            yield buffer

    chunks = list(growing())
    assert chunks == [["a", "b", "c"]] * 3  # the same list each time, grown
    assert sightline_capture.one(name="growing").output == [["a"], ["a", "b"], ["a", "b", "c"]]


# -- governance: an answer outside the contract --------------------------------------------------


class Policy:
    """A governance plugin answering ``answer``; remembers how often it was asked."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls = 0

    @sightline.hookimpl
    def sightline_authorize_tool(self, tool_name, arguments, context):
        self.calls += 1
        return self.answer


def status_of(capture: Any, name: str) -> tuple[str, str | None]:
    [info] = [info for info in capture.client.plugins.list() if info.name == name]
    return info.status, info.error


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"allow": True}, "unsupported sightline_authorize_tool answer: {'allow': True}"),
        ("yes", "unsupported sightline_authorize_tool answer: 'yes'"),
        (
            Decision(True, "masked", ["not", "a", "mapping"]),  # type: ignore[arg-type]
            "unsupported sightline_authorize_tool answer: "
            "Decision.arguments must be a mapping or None, not list",
        ),
        (
            Decision("deny"),  # type: ignore[arg-type]
            "unsupported sightline_authorize_tool answer: "
            "Decision.allow must be True or False, not 'deny'",
        ),
    ],
)
def test_a_malformed_answer_refuses_the_call_and_the_plugin_stays_enabled(
    sightline_capture, install, caplog, answer, error
):
    policy = install(Policy(answer), "test-malformed")
    ran = []

    @sightline.guard
    def delete_account(user_id: str) -> str:
        ran.append(user_id)
        return f"deleted {user_id}"

    reason = f"policy 'test-malformed' failed ({error}), so the call is refused"
    with caplog.at_level(logging.DEBUG, logger="sightline"):
        for user in ("u-1", "u-2"):
            with pytest.raises(ToolDenied) as raised:
                delete_account(user)
            assert raised.value.reason == reason
    assert ran == []
    assert policy.calls == 2  # asked again: a broken policy is not switched off
    assert status_of(sightline_capture, "test-malformed") == ("ok", None)
    failures = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if "failed in sightline_" in r.getMessage()
    ]
    message = (
        f"sightline: plugin 'test-malformed' failed in sightline_authorize_tool: {error}; the "
        "call it failed on is refused (governance fails closed). It stays enabled (further "
        "failures of it are logged at debug level)"
    )
    assert failures == [(logging.ERROR, message), (logging.DEBUG, message)]
    decisions = sightline_capture.find(type="decision")
    assert [d.output for d in decisions] == [{"decision": "deny", "reason": reason}] * 2


def test_a_policy_that_raises_on_odd_arguments_refuses_that_call_and_still_decides_later(
    sightline_capture, install
):
    # A model sending "amount": "1000" must not switch the limit off for the next calls.
    class RefundLimit:
        @sightline.hookimpl
        def sightline_authorize_tool(self, tool_name, arguments, context):
            return Decision(arguments["amount"] <= 100, "over the refund limit")

    install(RefundLimit(), "refund-limit")

    @sightline.guard
    def refund(order: str, amount: Any) -> str:
        return f"refunded {amount}"

    with pytest.raises(ToolDenied, match=r"policy 'refund-limit' failed \(TypeError: "):
        refund("o-1", "1000")
    with pytest.raises(ToolDenied, match="over the refund limit"):
        refund("o-2", 1000)  # the policy still decides
    assert refund("o-3", 40) == "refunded 40"
    assert status_of(sightline_capture, "refund-limit") == ("ok", None)


def test_after_a_malformed_answer_the_next_plugin_is_not_asked(sightline_capture, install):
    other = install(Policy(None), "test-allow")
    install(Policy({"allow": True}), "test-malformed")  # registered last: asked first

    @sightline.guard
    def delete_account(user_id: str) -> str:
        raise AssertionError("must not run")

    with pytest.raises(ToolDenied, match="policy 'test-malformed' failed"):
        delete_account("u-1")
    assert other.calls == 0  # the first answer (the refusal) wins
    assert status_of(sightline_capture, "test-malformed") == ("ok", None)


async def test_a_malformed_answer_refuses_a_guarded_coroutine(sightline_capture, install):
    install(Policy(1), "test-malformed")

    @sightline.guard(name="refund")
    async def issue_refund(order: str) -> str:
        raise AssertionError("must not run")

    with pytest.raises(ToolDenied) as raised:
        await issue_refund("o-1")
    assert raised.value.reason == (
        "policy 'test-malformed' failed (unsupported sightline_authorize_tool answer: 1), so the "
        "call is refused"
    )


def test_a_long_list_argument_and_result_are_copied_only_as_far_as_recorded(sightline_capture):
    @sightline.monitor(name="rank")
    def rank(items, scores):
        return items

    items = list(range(100_000))
    scores = {f"k{i}": i for i in range(600)}
    assert rank(items, scores) is items  # the caller still gets its own object
    event = sightline_capture.one(name="rank")
    recorded = event.input["items"]
    assert recorded[:3] == [0, 1, 2] and len(recorded) == 500
    assert recorded[-1] == "…[truncated] 99501 more items"
    assert len(event.input["scores"]) == 500
    assert event.input["scores"]["…[truncated]"] == "101 more keys"
    assert event.output[-1] == "…[truncated] 99501 more items"
