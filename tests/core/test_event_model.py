"""The event wire form (schema_version 1): the shipped JSON Schema, ``validate_event`` and
``Event.to_dict`` / ``Event.from_dict`` agree on a conformance fixture of valid and invalid events."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import sightline
from sightline.event import (
    ERROR_KINDS,
    EVENT_TYPES,
    ErrorInfo,
    Event,
    EventType,
    Status,
    Usage,
    format_time,
    new_trace_id,
    parse_time,
)
from sightline.schema import load_schema, schema_path, validate_event
from sightline.testing import capture

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "events.json").read_text("utf-8"))
VALID: list[dict[str, Any]] = FIXTURE["valid"]
INVALID: list[dict[str, Any]] = FIXTURE["invalid"]
SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(load_schema())


def schema_accepts(event: Any) -> bool:
    """The JSON Schema's verdict on the wire form: strict JSON first (no NaN or Infinity)."""
    try:
        text = json.dumps(event, allow_nan=False)
    except ValueError:
        return False
    return SCHEMA_VALIDATOR.is_valid(json.loads(text))


def with_changes(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(VALID[0])
    event.update(changes)
    return event


CYCLIC: dict[str, Any] = {"name": "loop"}
CYCLIC["self"] = [CYCLIC]
SHARED = [1, 2]

# Cases that strict JSON cannot hold, so they live here instead of in the fixture.
NON_JSON_INVALID = {
    "duration_ms is NaN": with_changes(duration_ms=math.nan),
    "cost_usd is Infinity": with_changes(cost_usd=math.inf),
    "cost_usd is -Infinity": with_changes(cost_usd=-math.inf),
    "input holds NaN": with_changes(input={"x": [1.0, math.nan]}),
    "output holds Infinity": with_changes(output=math.inf),
    "metadata holds -Infinity": with_changes(metadata={"score": -math.inf}),
    "token count is NaN": with_changes(usage={"input_tokens": math.nan}),
    "input that contains itself": with_changes(input=CYCLIC),
    "name of 1025 characters": with_changes(name="n" * 1025),
    "id of 129 characters": with_changes(id="i" * 129),
}
BOUNDARY_VALID = {
    "name of 1024 characters": with_changes(name="n" * 1024),
    "id of 128 characters": with_changes(id="i" * 128),
    "input nested 300 levels deep": with_changes(input=json.loads("[" * 300 + "]" * 300)),
    "usage that is an empty object": with_changes(usage={}),
    "input that holds one list twice": with_changes(input={"a": SHARED, "b": [SHARED]}),
}


def test_fixture_holds_enough_cases():
    assert len(VALID) >= 8
    assert len(INVALID) >= 15
    assert all(case["why"] for case in INVALID)


def test_fixture_valid_events_cover_every_type_and_error_kind():
    assert {e["type"] for e in VALID} == EVENT_TYPES
    assert {e["error"]["kind"] for e in VALID if e.get("error")} == ERROR_KINDS


def test_fixture_valid_events_cover_every_optional_field():
    properties = set(load_schema()["properties"])
    present = set().union(*(set(e) for e in VALID))
    assert present == properties


def test_shipped_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(load_schema())
    assert schema_path().name == "event.schema.json"


def test_shipped_schema_lists_the_event_types_and_error_kinds_of_the_model():
    schema = load_schema()
    assert set(schema["properties"]["type"]["enum"]) == EVENT_TYPES
    assert set(schema["properties"]["error"]["properties"]["kind"]["enum"]) == ERROR_KINDS
    assert set(schema["properties"]["status"]["enum"]) == {s.value for s in Status}


@pytest.mark.parametrize("event", VALID, ids=[e["id"] for e in VALID])
def test_valid_fixture_event_is_accepted_by_the_json_schema(event):
    assert list(SCHEMA_VALIDATOR.iter_errors(event)) == []


@pytest.mark.parametrize("event", VALID, ids=[e["id"] for e in VALID])
def test_valid_fixture_event_is_accepted_by_validate_event(event):
    assert validate_event(event) == []


@pytest.mark.parametrize("case", INVALID, ids=[c["why"] for c in INVALID])
def test_invalid_fixture_event_is_rejected_by_the_json_schema(case):
    assert not schema_accepts(case["event"]), case["why"]


@pytest.mark.parametrize("case", INVALID, ids=[c["why"] for c in INVALID])
def test_invalid_fixture_event_is_rejected_by_validate_event(case):
    problems = validate_event(case["event"])
    assert problems, case["why"]
    assert all(isinstance(p, str) and p for p in problems)


@pytest.mark.parametrize("why", list(NON_JSON_INVALID))
def test_non_json_and_out_of_bounds_values_are_rejected_by_both_validators(why):
    event = NON_JSON_INVALID[why]
    assert not schema_accepts(event)
    assert validate_event(event) != []


@pytest.mark.parametrize("why", list(BOUNDARY_VALID))
def test_values_at_the_bounds_are_accepted_by_both_validators(why):
    event = BOUNDARY_VALID[why]
    assert schema_accepts(event)
    assert validate_event(event) == []


@pytest.mark.parametrize("case", INVALID, ids=[c["why"] for c in INVALID])
def test_from_dict_raises_value_error_on_an_invalid_event(case):
    with pytest.raises(ValueError, match="invalid event"):
        Event.from_dict(case["event"])


@pytest.mark.parametrize("why", list(NON_JSON_INVALID))
def test_from_dict_raises_value_error_on_non_json_values(why):
    with pytest.raises(ValueError):
        Event.from_dict(NON_JSON_INVALID[why])


@pytest.mark.parametrize("event", VALID, ids=[e["id"] for e in VALID])
def test_from_dict_then_to_dict_gives_back_every_field(event):
    wire = Event.from_dict(event).to_dict()
    for key, value in event.items():
        if key in ("start_time", "end_time"):
            assert parse_time(wire[key]) == parse_time(value)
        elif key == "error" and value is not None:
            assert wire[key] == {"stack": None, **value}
        else:
            assert wire[key] == value, key
    assert wire["schema_version"] == 1
    assert validate_event(wire) == []
    assert schema_accepts(wire)


@pytest.mark.parametrize("event", VALID, ids=[e["id"] for e in VALID])
def test_round_trip_of_the_wire_form_is_a_fixed_point(event):
    wire = Event.from_dict(event).to_dict()
    assert Event.from_dict(wire).to_dict() == wire
    assert Event.from_dict(json.loads(json.dumps(wire))).to_dict() == wire


def test_to_dict_fills_every_field_of_the_schema():
    wire = Event(EventType.TOOL_CALL, "search").finish().to_dict()
    assert set(wire) == set(load_schema()["properties"])
    assert wire["metadata"] == {}
    assert wire["tags"] == []
    assert wire["parent_span_id"] is None
    assert wire["id"] == wire["span_id"]


def test_to_dict_formats_times_as_rfc3339_utc_with_microseconds():
    event = Event("run", "r", start_ns=1_700_000_000_123_456_789, end_ns=1_700_000_001_000_000_000)
    wire = event.to_dict()
    assert wire["start_time"] == "2023-11-14T22:13:20.123456Z"
    assert wire["end_time"] == "2023-11-14T22:13:21.000000Z"
    assert wire["duration_ms"] == 876.543


def test_parse_time_reads_back_format_time_to_the_microsecond():
    ns = 1_773_480_413_589_793_000
    assert parse_time(format_time(ns)) == ns
    assert parse_time("2026-03-14T09:26:53.589793+00:00") == ns


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2026-03-14T09:26:53.5Z", 500_000),
        ("2026-03-14T09:26:53.58Z", 580_000),
        ("2026-03-14T09:26:53.5897Z", 589_700),
        ("2026-03-14T09:26:53.58979+00:00", 589_790),
        ("2026-03-14T09:26:53.589793123Z", 589_793),
        ("2026-03-14T09:26:53,589793Z", 589_793),
    ],
)
def test_parse_time_reads_any_number_of_fraction_digits_on_every_python(text, micros):
    assert parse_time(text) == parse_time("2026-03-14T09:26:53Z") + micros * 1000


def test_new_events_get_otel_shaped_ids():
    event = Event()
    assert len(event.trace_id) == 32 and int(event.trace_id, 16) >= 0
    assert event.trace_id == event.trace_id.lower()
    assert len(event.span_id) == 16 and int(event.span_id, 16) >= 0


def test_trace_ids_begin_with_their_creation_time_and_end_random():
    """Time first (milliseconds, as in UUIDv7) keeps a store's trace index growing at one end;
    the last 20 hex digits stay random, more than W3C Trace Context's 7 random bytes."""
    before = time.time_ns() // 1_000_000
    ids = [new_trace_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert all(len(i) == 32 and i == i.lower() and int(i, 16) for i in ids)
    assert all(before <= int(i[:12], 16) <= after for i in ids)
    assert len(set(ids)) == 2000
    assert len({i[12:] for i in ids}) == 2000
    # Ids made later sort after ids made earlier.
    time.sleep(0.002)
    assert new_trace_id() > max(ids)


def test_event_accepts_step_aliases_and_wire_names_as_type():
    assert Event("plan").type is EventType.DECISION
    assert Event("tool_call").type is EventType.TOOL_CALL
    with pytest.raises(ValueError, match="unknown event type"):
        Event("bogus")


def test_usage_total_defaults_to_the_sum_of_input_and_output():
    assert Usage(10, 5).to_dict() == {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    assert Usage().to_dict() == {"input_tokens": None, "output_tokens": None, "total_tokens": None}


def test_error_info_from_an_exception_formats_its_stack_in_to_dict():
    try:
        raise KeyError("order-17")
    except KeyError as exc:
        info = ErrorInfo.from_exception(exc, "tool")
    event = Event("tool_call", "lookup", status="error", error=info).finish()
    error = event.to_dict()["error"]
    assert error["type"] == "KeyError"
    assert error["message"] == "'order-17'"
    assert error["kind"] == "tool"
    assert "Traceback" in error["stack"] and "KeyError" in error["stack"]


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_every_event_produced_by_the_pipeline_validates_against_the_schema():
    @sightline.monitor(type="retrieval")
    def retrieve(query: str, blob: Any) -> list[Any]:
        return [{"doc": 1, "score": math.nan}, blob]

    @sightline.monitor
    def explode() -> None:
        raise TimeoutError("too slow")

    @sightline.monitor(type=EventType.AGENT)
    async def agent_step() -> str:
        return "done"

    @sightline.monitor(type="embedding")
    def stream():
        yield from (b"chunk", {1, 2}, math.inf)

    with capture() as captured:
        client = captured.client
        client.register_agent("support-bot", framework="plain")
        with sightline.trace("support-ticket", agent="support-bot", tags=["t"]) as run:
            for alias in ("plan", "retrieve", "tool", "respond", "other"):
                with run.step(alias, f"step-{alias}") as step:
                    step.set_metadata({"nan": math.nan, "obj": Unprintable()})
            for event_type in EventType:
                client.log_event(event_type, f"log-{event_type.value}", input={"api_key": "x"})
            retrieve("refund", Unprintable())
            with pytest.raises(TimeoutError):
                explode()
            asyncio.run(agent_step())
            list(stream())
            with client.track_event("llm", type="llm_invoke", model="m") as llm:
                llm.set_usage(input_tokens=10, output_tokens=2).set_cost(0.001)
                llm.set_output(b"bytes")
            client.log_event("custom", "failed", status="error", error=ValueError("bad"))
            run.record_failure(kind="tool", code="timeout", message="search timed out")
        events = captured.events
    assert len(events) == 5 + len(EventType) + 6 + 1
    for event in events:
        wire = event.to_dict()
        json.dumps(wire, allow_nan=False)
        assert validate_event(wire) == [], (event, validate_event(wire))
        assert list(SCHEMA_VALIDATOR.iter_errors(wire)) == []
