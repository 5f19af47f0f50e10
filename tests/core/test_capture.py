"""Safe capture and privacy (ARCHITECTURE.md §6): any Python value ends up bounded, strict JSON;
secrets are masked by key name and in text; capture_content=False keeps content in the process;
sampling keeps whole traces and always keeps errors."""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import math
import uuid

import pydantic
import pytest

import sightline
from sightline.capture import MASK, TRUNCATED
from sightline.event import Event, EventType
from sightline.schema import validate_event
from sightline.store import SqliteStore
from sightline.testing import capture


def recorded_input(value, **options):
    """Log ``value`` as an event's input through a real client; return the exported wire form."""
    with capture(**options) as captured:
        sightline.get_client().log_event("tool_call", "t", input=value)
        [event] = captured.events
    wire = event.to_dict()
    json.dumps(wire, allow_nan=False)  # strict JSON, or this raises
    assert validate_event(wire) == []
    return wire["input"]


class Opaque:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<Opaque thing>"


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class AgentName(str, enum.Enum):
    SUPPORT = "support"


class Order(pydantic.BaseModel):
    id: int
    items: list[str]
    api_key: str


@dataclasses.dataclass
class Customer:
    name: str
    password: str
    tags: set[str]


# -- strict JSON ---------------------------------------------------------------------------------


def test_an_arbitrary_object_is_recorded_by_its_repr():
    assert recorded_input({"o": Opaque()}) == {"o": "<Opaque thing>"}


def test_an_object_whose_repr_raises_is_recorded_by_its_type_name():
    assert recorded_input([ReprRaises()]) == ["<unrepresentable ReprRaises>"]


def test_bytes_are_recorded_by_their_length():
    assert recorded_input({"b": b"\x00\x01\x02", "ba": bytearray(5)}) == {
        "b": "<bytes len=3>",
        "ba": "<bytearray len=5>",
    }


def test_sets_and_tuples_become_lists():
    assert recorded_input({"s": {3, 1, 2}, "t": (1, "a")}) == {"s": [1, 2, 3], "t": [1, "a"]}


def test_nan_and_infinities_become_strings():
    assert recorded_input([math.nan, math.inf, -math.inf, 1.5]) == ["nan", "inf", "-inf", 1.5]


def test_non_string_keys_become_strings():
    assert recorded_input({1: "a", (2, 3): "b", None: "c"}) == {
        "1": "a",
        "(2, 3)": "b",
        "None": "c",
    }


def test_a_pydantic_model_is_recorded_as_its_fields_with_secrets_masked():
    value = recorded_input(Order(id=7, items=["book"], api_key="sk-live-1234567890abcdef"))
    assert value == {"id": 7, "items": ["book"], "api_key": MASK}


def test_a_dataclass_is_recorded_as_its_fields_with_secrets_masked():
    value = recorded_input(Customer(name="Ada", password="hunter2", tags={"vip"}))
    assert value == {"name": "Ada", "password": MASK, "tags": ["vip"]}


def test_a_cyclic_dict_is_cut_with_a_cycle_marker():
    data: dict = {"name": "loop"}
    data["self"] = data
    assert recorded_input(data) == {"name": "loop", "self": "[cycle]"}


def test_a_cyclic_list_is_cut_with_a_cycle_marker():
    data: list = [1]
    data.append(data)
    assert recorded_input(data) == [1, "[cycle]"]


def test_a_value_shared_twice_is_not_mistaken_for_a_cycle():
    shared = {"k": 1}
    assert recorded_input({"a": shared, "b": shared}) == {"a": {"k": 1}, "b": {"k": 1}}


def test_very_deep_nesting_is_cut_with_a_truncated_marker():
    deep: list = []
    current = deep
    for _ in range(1000):
        nested: list = []
        current.append(nested)
        current = nested
    value = recorded_input(deep)
    depth = 0
    while isinstance(value, list):
        value = value[0]
        depth += 1
    assert value == TRUNCATED
    assert depth <= 20


def test_a_long_string_is_truncated_with_a_marker():
    value = recorded_input("x" * 100_000)
    assert value.endswith(TRUNCATED)
    assert len(value) == 16_384 + len(TRUNCATED)


def test_max_string_sets_where_strings_are_cut():
    assert (
        recorded_input("abcdefghij" * 10, max_string=25) == "abcdefghij" * 2 + "abcde" + TRUNCATED
    )


def test_a_huge_list_is_truncated_with_a_count_of_what_was_left_out():
    value = recorded_input(list(range(10_000)))
    assert value[:500] == list(range(500))
    assert value[500:] == [f"{TRUNCATED} 9500 more items"]


def test_a_huge_dict_is_truncated_with_a_count_of_what_was_left_out():
    value = recorded_input({f"k{i}": i for i in range(600)})
    assert len(value) == 501
    assert value[TRUNCATED] == "100 more keys"


def test_every_exported_event_is_strict_json_whatever_was_recorded():
    data: dict = {"nan": math.nan}
    data["cycle"] = [data]
    with capture() as captured:
        client = sightline.get_client()
        with sightline.trace("run", metadata={"inf": math.inf, "obj": Opaque()}) as run:
            run.set_output({"bytes": b"x", "set": {1}})
            client.log_event("tool_call", "a", input=data, output=ReprRaises())
            client.log_event("llm_invoke", "b", cost_usd=math.nan, usage={"input_tokens": -5})
            with run.step("tool", "c") as step:
                step.add_tags("ok")
                step.set_metadata({"deep": json.loads("[" * 40 + "1" + "]" * 40)})
        events = captured.events
    assert len(events) == 4
    for event in events:
        wire = event.to_dict()
        json.dumps(wire, allow_nan=False)
        assert validate_event(wire) == []
    b = next(e for e in events if e.name == "b")
    assert b.cost_usd is None
    assert b.usage.input_tokens == 0


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True, {"b": "text"}], "c": "x" * 13},
        [[], {}, "", 0, -1, 1e300],
    ],
)
def test_share_clean_keeps_a_clean_value_as_it_is(value):
    from sightline.capture import Sanitizer

    assert Sanitizer(share_clean=True)(value) is value
    assert Sanitizer()(value) is not value
    assert Sanitizer()(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"password": "hunter2"}, {"password": MASK}),
        ({"n": [float("nan")]}, {"n": ["nan"]}),
        ({"t": ("a", "b")}, {"t": ["a", "b"]}),
        ({1: "one"}, {"1": "one"}),
        ({"s": "y" * 40}, {"s": "y" * 30 + TRUNCATED}),
        ({"auth": "Bearer abcdefgh12345678"}, {"auth": f"Bearer {MASK}"}),
        ([{"deep": [[[[["x"]]]]]}], [{"deep": [[[TRUNCATED]]]}]),
    ],
)
def test_share_clean_copies_a_value_with_anything_to_change(value, expected):
    from sightline.capture import Sanitizer

    original = copy.deepcopy(value)
    result = Sanitizer(share_clean=True, max_string=30, max_depth=5)(value)
    assert result == expected
    assert result is not value
    assert repr(value) == repr(original)  # the application's value is not changed


def test_share_clean_copies_a_cyclic_value_and_marks_the_cycle():
    from sightline.capture import Sanitizer

    cyclic: dict = {"name": "loop"}
    cyclic["self"] = cyclic
    assert Sanitizer(share_clean=True)(cyclic) == {"name": "loop", "self": "[cycle]"}
    shared = ["x"]
    twice = {"a": shared, "b": shared}
    assert Sanitizer(share_clean=True)(twice) is twice  # met twice is not a cycle


def test_a_value_changed_after_it_was_checked_still_exports_as_json(tmp_path):
    """A clean value is kept by reference; should the application put a non-JSON object in
    it before export, the exporter writes that object's repr instead of failing the batch."""
    from sightline.jsonwire import dumps

    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    assert json.loads(dumps({"late": Opaque(), "ok": [1]})) == {"late": "<Opaque>", "ok": [1]}
    store = SqliteStore(str(tmp_path / "late.db"))
    event = Event(EventType.TOOL_CALL, "t", input={"late": Opaque()}).finish()
    assert store.insert_events([event]) == 1
    [stored] = store.get_trace(event.trace_id)["events"]
    assert stored["input"] == {"late": "<Opaque>"}
    store.close()


def test_a_session_id_given_as_a_uuid_is_recorded_as_its_text():
    session = uuid.UUID(int=42)
    with capture() as captured:
        with sightline.trace("run", session_id=session, agent=AgentName.SUPPORT):
            pass
        [event] = captured.events
    wire = event.to_dict()
    assert (wire["session_id"], wire["agent"]) == (
        "00000000-0000-0000-0000-00000000002a",
        "support",
    )
    assert validate_event(wire) == []


def test_a_non_string_error_code_and_an_unknown_error_kind_still_give_a_valid_event():
    with capture() as captured:
        with sightline.trace("run") as run:
            run.record_failure(kind="network", code=504, message="gateway timeout")
        [event] = captured.events
    wire = event.to_dict()
    assert wire["error"] == {
        "type": "504",
        "message": "gateway timeout",
        "stack": None,
        "kind": "unknown",
    }
    assert validate_event(wire) == []


def test_metadata_that_is_not_a_mapping_is_wrapped_into_an_object():
    with capture() as captured:
        sightline.get_client().track(Event("custom", "m", metadata=[1, 2]))  # type: ignore[arg-type]
        [event] = captured.events
    assert event.metadata == {"value": [1, 2]}


def test_one_malformed_event_does_not_lose_its_batch_in_the_sqlite_store(tmp_path):
    db = tmp_path / "batch.db"
    with sightline.Client(exporters=["sqlite"], db=str(db), flush_interval=60) as client:
        client.log_event("custom", "before")
        with client.trace("odd", session_id=uuid.uuid4(), metadata={"when": object()}):
            pass
        client.log_event("custom", "after")
        assert client.flush(5) is True
        stats = client.stats()
    assert (stats["exported"], stats["failed"]) == (3, 0)
    store = SqliteStore(str(db))
    try:
        assert store.count_events() == 3
    finally:
        store.close()


# -- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apiKey",
        "API-KEY",
        "x-api-key",
        "token",
        "access_token",
        "refresh_token",
        "password",
        "Authorization",
        "secret",
        "client_secret",
        "private_key",
        "Cookie",
        "X-Auth-Token",
        "githubToken",
    ],
)
def test_a_value_under_a_secret_key_name_is_masked(key):
    assert recorded_input({key: "s3cr3t-value", "query": "refund"}) == {
        key: MASK,
        "query": "refund",
    }


@pytest.mark.parametrize(
    "key",
    [
        "max_tokens",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "tokens",
        "token_count",
        "time_to_first_token_ms",
        "tokenizer",
    ],
)
def test_token_counts_are_not_mistaken_for_secrets(key):
    assert recorded_input({key: 256}) == {key: 256}


def test_secrets_are_masked_in_nested_values_metadata_and_output():
    with capture() as captured:
        sightline.get_client().log_event(
            "api_call",
            "call",
            input={"request": {"headers": [{"Authorization": "Basic dXNlcjpwYXNz"}]}},
            output={"session": {"password": "pw"}},
            metadata={"client_secret": "abc", "region": "eu"},
        )
        [event] = captured.events
    assert event.input == {"request": {"headers": [{"Authorization": MASK}]}}
    assert event.output == {"session": {"password": MASK}}
    assert event.metadata == {"client_secret": MASK, "region": "eu"}


def test_a_bearer_token_inside_text_is_masked():
    text = "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig' https://api"
    assert recorded_input(text) == f"curl -H 'Authorization: Bearer {MASK}' https://api"


def test_a_short_bearer_header_value_is_masked():
    assert recorded_input(["Bearer abcd1234efgh"]) == [f"Bearer {MASK}"]


def test_an_upper_case_bearer_scheme_is_masked_too():
    assert (
        recorded_input("AUTHORIZATION: BEARER abcd1234efgh5678") == f"AUTHORIZATION: BEARER {MASK}"
    )


def test_an_api_key_shaped_string_inside_text_is_masked():
    assert recorded_input("use sk-proj-abcdefghijklmnop1234 to call") == f"use {MASK} to call"


def test_an_error_message_quoting_a_bearer_token_is_masked():
    with capture() as captured:
        sightline.get_client().log_event(
            "api_call", "call", error=PermissionError("401 for Bearer abcdefghijklmnop")
        )
        [event] = captured.events
    assert event.error.message == f"401 for Bearer {MASK}"


def test_redact_keys_masks_extra_key_names_case_insensitively():
    value = recorded_input(
        {"customer_email": "a@b.c", "Customer_Email": "x@y.z", "name": "Ada"},
        redact_keys=["customer_email"],
    )
    assert value == {"customer_email": MASK, "Customer_Email": MASK, "name": "Ada"}


def test_sightline_redact_keys_environment_variable_adds_key_names(monkeypatch):
    monkeypatch.setenv("SIGHTLINE_REDACT_KEYS", "ssn, iban")
    assert recorded_input({"ssn": "123", "iban": "DE00", "city": "Bonn"}) == {
        "ssn": MASK,
        "iban": MASK,
        "city": "Bonn",
    }


# -- capture_content=False -----------------------------------------------------------------------


def run_with_content(**options):
    with capture(**options) as captured:
        with sightline.trace("ticket", input={"question": "my card 4111"}) as run:
            with run.step("respond", "answer", model="gpt-4o-mini") as step:
                step.set_output("the answer").set_usage(input_tokens=12, output_tokens=3)
                step.set_cost(0.001)
            client = sightline.get_client()
            client.log_event("tool_call", "lookup", input={"q": "x"}, output=[1], status="error",
                             error="lookup failed for 'my card 4111'")  # fmt: skip
        return {e.name: e for e in captured.events}


def assert_no_content(events):
    assert set(events) == {"ticket", "answer", "lookup"}
    for event in events.values():
        assert (event.input, event.output) == (None, None), event.name
        assert event.end_ns >= event.start_ns
    assert events["answer"].usage.to_dict() == {
        "input_tokens": 12,
        "output_tokens": 3,
        "total_tokens": 15,
    }
    assert events["answer"].cost_usd == 0.001
    assert events["answer"].model == "gpt-4o-mini"
    assert events["answer"].parent_span_id == events["ticket"].span_id
    assert events["lookup"].status.value == "error"
    assert events["lookup"].error.kind == "tool"
    assert events["lookup"].error.message == ""
    assert events["ticket"].status.value == "ok"


def test_capture_content_false_drops_inputs_and_outputs_but_keeps_the_rest():
    assert_no_content(run_with_content(capture_content=False))


def test_sightline_capture_content_false_drops_inputs_and_outputs(monkeypatch):
    monkeypatch.setenv("SIGHTLINE_CAPTURE_CONTENT", "false")
    assert_no_content(run_with_content())


def test_content_is_captured_by_default():
    events = run_with_content()
    assert events["ticket"].input == {"question": "my card 4111"}
    assert events["answer"].output == "the answer"


# -- sampling ------------------------------------------------------------------------------------


def test_sample_rate_zero_drops_ok_events_and_keeps_error_events():
    with capture(sample_rate=0.0) as captured:
        client = sightline.get_client()
        with sightline.trace("run") as run:
            with run.step("tool", "ok-step"):
                pass
            client.log_event("tool_call", "failed-step", status="error", error="boom")
        events = captured.events
        stats = captured.client.stats()
    assert [e.name for e in events] == ["failed-step"]
    assert (stats["processed"], stats["filtered"], stats["exported"]) == (3, 2, 1)


def trace_id_with_bucket(bucket: int) -> str:
    return "ab" * 12 + f"{bucket:08x}"


def test_sampling_is_decided_by_trace_id_so_a_trace_is_kept_or_dropped_whole():
    kept_trace = trace_id_with_bucket(0)  # lowest bucket: kept at any rate above 0
    dropped_trace = trace_id_with_bucket(0xFFFFFFFF)  # highest bucket: dropped below 1
    with capture(sample_rate=0.5) as captured:
        client = sightline.get_client()
        for trace_id in (kept_trace, dropped_trace):
            for i in range(3):
                client.track(Event(EventType.TOOL_CALL, f"step-{i}", trace_id=trace_id))
        events = captured.events
    assert {e.trace_id for e in events} == {kept_trace}
    assert len(events) == 3


def test_sampling_is_deterministic_across_clients():
    trace_ids = [trace_id_with_bucket(b * 0x01000000) for b in range(256)]
    verdicts = []
    for _ in range(2):
        with capture(sample_rate=0.25) as captured:
            for trace_id in trace_ids:
                sightline.get_client().track(Event("custom", "e", trace_id=trace_id))
            verdicts.append(sorted(e.trace_id for e in captured.events))
    assert verdicts[0] == verdicts[1]
    assert len(verdicts[0]) == 64
