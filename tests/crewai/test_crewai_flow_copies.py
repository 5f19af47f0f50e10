"""CrewAI Flows: each value a flow hands from method to method is copied once. A method's result
is copied as it returns it (or by the handler of its end, when that comes first), a listener's
``_0`` that is the very object the trigger returned is recorded with that copy, the flow's
result with its last method's, and the handlers record those copies as they are. Counted by the
calls of the copy function, not timed."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from crewai.flow.flow import Flow, listen, start

from sightline_crewai import mapping
from tests.crewai.crewai_support import CREWAI_WARNINGS

pytestmark = CREWAI_WARNINGS


def _copier(frame: Any) -> str:
    """Whose value is being copied: the method call (or flow run) that asked for the copy."""
    while frame is not None:
        for name in ("self", "call"):
            owner = frame.f_locals.get(name)
            if isinstance(owner, mapping.MethodCall):
                return str(owner.name)
        if frame.f_code.co_name == "_flow_result_as_returned":
            return "flow result"
        frame = frame.f_back
    return "elsewhere"


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """The dicts and lists ``mapping._own`` copied, counted by the method they were for."""
    counted: Counter[str] = Counter()
    own = mapping._own

    def counting(value: Any) -> Any:
        if (value.__class__ is list or isinstance(value, dict)) and value:
            counted[_copier(sys._getframe(1))] += 1
        return own(value)

    monkeypatch.setattr(mapping, "_own", counting)
    yield counted


def test_a_value_handed_down_a_chain_of_methods_is_copied_once_per_method(instrumented, copies):
    payload = {f"k{index}": list(range(20)) for index in range(20)}

    class Chain(Flow):
        @start()
        def m0(self) -> dict[str, Any]:
            return payload

        @listen(m0)
        def m1(self, value: dict[str, Any]) -> dict[str, Any]:
            return value

        @listen(m1)
        async def m2(self, value: dict[str, Any]) -> dict[str, Any]:
            return value

        @listen(m2)
        def m3(self, value: dict[str, Any]) -> dict[str, Any]:
            return value

    assert Chain().kickoff() is payload

    for name in ("m0", "m1", "m2", "m3"):
        method = instrumented.one(name=name)
        assert method.output == payload
        if name != "m0":
            assert method.input["params"] == {"_0": payload}
    assert instrumented.one(name="Chain").output == payload
    # one copy of each result; no copy of a listener's _0 (its trigger's), nor of the flow's
    # result (its last method's), nor in a handler
    assert copies == {"m0": 1, "m1": 1, "m2": 1, "m3": 1}


def test_values_changed_in_place_are_recorded_as_each_method_returned_them(instrumented, copies):
    class Grow(Flow):
        @start()
        def first(self) -> dict[str, Any]:
            return {"items": ["a"]}

        @listen(first)
        def second(self, value: dict[str, Any]) -> dict[str, Any]:
            value["items"].append("b")
            return value

        @listen(second)
        async def third(self, value: dict[str, Any]) -> dict[str, Any]:
            value["items"].append("c")
            value["done"] = True
            return value

    assert Grow().kickoff() == {"items": ["a", "b", "c"], "done": True}

    assert instrumented.one(name="first").output == {"items": ["a"]}
    second = instrumented.one(name="second")
    assert second.input["params"] == {"_0": {"items": ["a"]}}
    assert second.output == {"items": ["a", "b"]}
    third = instrumented.one(name="third")
    assert third.input["params"] == {"_0": {"items": ["a", "b"]}}
    assert third.output == {"items": ["a", "b", "c"], "done": True}
    assert instrumented.one(name="Grow").output == {"items": ["a", "b", "c"], "done": True}
    assert copies == {"first": 1, "second": 1, "third": 1}


class _Finished:
    """A method's end event, as the handler reads it."""

    def __init__(self, name: str, result: Any) -> None:
        self.method_name = name
        self.result = result


def test_an_end_handled_before_the_call_noted_its_result_copies_it_once_for_both(copies):
    result = {"n": [1, 2]}
    call, token = mapping.method_call("step", (), {})
    try:
        recorded = mapping._result_as_returned(_Finished("step", result))
    finally:
        mapping.method_call_ended(token)
    call.finished((result, "event id"))
    result["n"].append(3)  # the next method changes it

    assert recorded.result == {"n": [1, 2]}
    assert call.result is recorded.result
    assert copies == {"step": 1}


def test_a_parameter_no_earlier_method_returned_is_copied_for_its_call(copies):
    given = ["x", {"y": 1}]
    run_token = mapping.flow_run(flow := object())
    try:
        earlier, token = mapping.method_call("earlier", (), {}, flow)
        mapping.method_call_ended(token)
        earlier.finished(({"other": 1}, "event id"))
        call, token = mapping.method_call("later", (given,), {"extra": [1]}, flow)
        mapping.method_call_ended(token)
    finally:
        mapping.flow_run_ended(run_token)
    given.append("changed")

    assert call.params == {"_0": ["x", {"y": 1}], "extra": [1]}
    assert copies == {"earlier": 1, "later": 2}


def test_a_run_of_another_flow_lends_no_copies(copies):
    value = {"a": [1]}
    run_token = mapping.flow_run(flow := object())
    try:
        earlier, token = mapping.method_call("earlier", (), {}, flow)
        mapping.method_call_ended(token)
        earlier.finished((value, "event id"))
        call, token = mapping.method_call("later", (value,), {}, object())
        mapping.method_call_ended(token)
    finally:
        mapping.flow_run_ended(run_token)

    assert call.params == {"_0": {"a": [1]}}
    assert call.params["_0"] is not earlier.result
    assert copies == {"earlier": 1, "later": 1}


# -- a method's end that names a stale scope ------------------------------------------------------


class _CrewAIsOwnFlow:
    """The source of a flow CrewAI runs itself (an agent's executor)."""

    is_crewai_internal = True


@pytest.mark.parametrize("stale_start", ["handled after the end", "never seen"])
def test_a_methods_end_naming_a_stale_scope_still_ends_the_method(stale_start):
    """After a crew timed out in a method, CrewAI may name the crew's executor flow (a stale
    scope) as the start of the method's end. Whether that scope's start is handled after the
    end or is never seen (forgotten with its crew), the end closes the method, found by its flow
    and method names, not a span of its own."""
    from sightline.testing import capture
    from sightline_crewai.mapping import RULES
    from sightline_crewai.tree import SpanTree
    from tests.crewai.crewai_support import record_events

    class Solo(Flow):
        @start()
        def step(self) -> str:
            return "done"

    recorded = record_events(lambda: Solo().kickoff())
    by_name = {name: (source, event) for name, source, event in recorded}
    _, flow_started = by_name["FlowStartedEvent"]
    stale = flow_started.model_copy(update={"event_id": "stale-executor-scope"})
    finished_source, finished = by_name["MethodExecutionFinishedEvent"]
    misnamed = finished.model_copy(update={"started_event_id": "stale-executor-scope"})

    with capture() as cap:
        tree = SpanTree()
        for name, source, event in recorded:
            if name == "MethodExecutionFinishedEvent":
                tree.receive(name, RULES[name], misnamed, finished_source, None)
                if stale_start == "handled after the end":
                    kind = "FlowStartedEvent"
                    tree.receive(kind, RULES[kind], stale, _CrewAIsOwnFlow(), None)
            elif name in RULES:
                tree.receive(name, RULES[name], event, source, None)
        tree.flush()  # what waits is recorded (after wait_seconds, or as recording stops)
        assert tree.open_spans() == 0
        assert len(cap.find(name="step")) == 1
        step = cap.one(name="step")
        assert step.status.value == "ok"
        assert step.output == "done"
        assert "start_missing" not in step.metadata
        assert step.parent_span_id == cap.one(name="Solo").span_id
