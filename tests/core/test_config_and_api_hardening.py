"""Options given the wrong way and API calls given odd values: instrumented code never raises
because of a bad ``SIGHTLINE_*`` variable before ``init()``, a string for a list option is a
comma-separated list, an empty variable is an unset one, a boolean option takes only ``True`` or
``False``, a timeout of ``None`` or ``inf`` means no limit, and ``track()`` / ``set_metadata()``
given what they cannot use drop it, say so once, and never raise."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import threading
from typing import Any

import pytest

import sightline
import sightline.client as client_module
import sightline.pipeline as pipeline_module
from sightline import AsyncClient, Client
from sightline.config import ENVIRONMENT, Config
from sightline.errors import ConfigError
from sightline.span import NOOP_SPAN
from sightline.testing import InMemoryExporter


def default_of(name: str) -> Any:
    return {f.name: f for f in dataclasses.fields(Config)}[name].default


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sightline" and r.levelno == logging.WARNING
    ]


# -- 1. before init(), a malformed SIGHTLINE_* variable is not read -------------------------------

MALFORMED_ENVIRONMENTS = [
    {"SIGHTLINE_QUEUE_SIZE": "lots"},
    {"SIGHTLINE_ENABLED": "false", "SIGHTLINE_SAMPLE_RATE": "5"},
    {"SIGHTLINE_ENDPOINT": "ftp://nowhere"},
]


@pytest.fixture
def no_disabled_client_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh process: the disabled client of get_client() not built yet."""
    monkeypatch.setattr(client_module, "_DISABLED", None)


@pytest.mark.parametrize("environment", MALFORMED_ENVIRONMENTS)
def test_a_monitored_function_runs_before_init_despite_a_malformed_variable(
    monkeypatch, no_disabled_client_yet, environment
):
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)

    @sightline.monitor()
    def double(x: int) -> int:
        return x * 2

    assert double(2) == 4


@pytest.mark.parametrize("environment", MALFORMED_ENVIRONMENTS)
def test_a_trace_runs_before_init_despite_a_malformed_variable(
    monkeypatch, no_disabled_client_yet, environment
):
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    with sightline.trace("ticket") as run:
        run.set_output("done")
    assert run is NOOP_SPAN
    assert sightline.get_client().enabled is False


def test_the_client_before_init_is_built_once(no_disabled_client_yet):
    first = sightline.get_client()
    assert sightline.get_client() is first
    assert client_module._DISABLED is first


def test_init_still_reports_a_malformed_variable(monkeypatch):
    monkeypatch.setenv("SIGHTLINE_QUEUE_SIZE", "lots")
    with pytest.raises(ConfigError) as raised:
        sightline.init(exporters=["memory"])
    assert str(raised.value) == (
        "SIGHTLINE_QUEUE_SIZE='lots' is not a valid value for queue_size: expected a whole number"
    )


# -- 2. a string for a list option is a comma-separated list -------------------------------------


@pytest.mark.parametrize(
    ("option", "given", "expected"),
    [
        ("redact_keys", "customer_ssn", ("customer_ssn",)),
        ("redact_keys", "ssn, iban", ("ssn", "iban")),
        ("disable_plugins", "langchain", ("langchain",)),
        ("disable_plugins", "crewai,autogen", ("crewai", "autogen")),
        ("plugins", "sqlite", ("sqlite",)),
        ("exporters", "jsonl, console", ("jsonl", "console")),
    ],
)
def test_a_string_for_a_list_option_is_split_at_commas(option, given, expected):
    assert getattr(Config.resolve(**{option: given}), option) == expected


def test_a_string_of_redact_keys_masks_that_key():
    exporter = InMemoryExporter()
    with Client(exporters=[exporter], redact_keys="customer_ssn") as client:
        client.log_event("tool_call", "lookup", input={"customer_ssn": "123-45-6789", "id": 5})
    assert [e.input for e in exporter.events] == [{"customer_ssn": "[REDACTED]", "id": 5}]


@pytest.mark.parametrize(
    ("option", "given", "message"),
    [
        ("redact_keys", 5, "redact_keys must be a list or a comma-separated string, got 5"),
        (
            "redact_keys",
            b"ssn",
            "redact_keys must be a list or a comma-separated string, got b'ssn'",
        ),
        (
            "redact_keys",
            ["ssn", 1],
            "redact_keys must be a list of names (strings), got ('ssn', 1)",
        ),
        ("plugins", [None], "plugins must be a list of names (strings), got (None,)"),
    ],
)
def test_a_list_option_of_the_wrong_kind_raises_config_error(option, given, message):
    with pytest.raises(ConfigError) as raised:
        Config.resolve(**{option: given})
    assert str(raised.value) == message


# -- 3. an empty variable is an unset one ---------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   "])
@pytest.mark.parametrize("variable", sorted(ENVIRONMENT))
def test_an_empty_variable_leaves_the_default(monkeypatch, variable, blank):
    monkeypatch.setenv(variable, blank)
    field = ENVIRONMENT[variable]
    assert getattr(Config.resolve(), field) == default_of(field)


@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_db_variable_records_in_the_default_store_the_cli_reads(
    monkeypatch, capsys, blank
):
    monkeypatch.setenv("SIGHTLINE_DB", blank)
    monkeypatch.setenv("SIGHTLINE_PROJECT", "")
    client = sightline.init(instrument=False)
    assert (client.config.db, client.config.project) == (default_of("db"), "default")
    with sightline.trace("refund-request"):
        pass
    assert sightline.shutdown() is True
    assert (client.stats()["exported"], client.stats()["failed"]) == (1, 0)

    from sightline.cli import main

    assert main(["runs"]) == 0
    assert "refund-request" in capsys.readouterr().out


# -- 4. a boolean option takes True or False; exporters take one exporter too ------------------------


@pytest.mark.parametrize("option", ["enabled", "capture_content", "trace_plugins", "instrument"])
@pytest.mark.parametrize("value", ["false", "yes", 0, 1])
def test_a_boolean_option_given_another_type_raises_config_error(option, value):
    with pytest.raises(ConfigError) as raised:
        Config.resolve(**{option: value})
    assert str(raised.value) == f"{option} must be True or False, got {value!r}"


def test_handle_signals_given_a_string_raises_and_installs_no_handler():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ConfigError) as raised:
        sightline.init(exporters=["memory"], handle_signals="false")
    assert str(raised.value) == (
        "handle_signals must be True, False or None (decided when the client starts), got 'false'"
    )
    assert signal.getsignal(signal.SIGTERM) is before
    assert sightline.get_client().enabled is False


def test_enabled_given_a_string_raises_rather_than_records():
    with pytest.raises(ConfigError) as raised:
        Client(exporters=["memory"], enabled="false")
    assert str(raised.value) == "enabled must be True or False, got 'false'"


def test_init_given_a_string_for_instrument_raises():
    with pytest.raises(ConfigError) as raised:
        sightline.init(exporters=["memory"], instrument="false")  # type: ignore[arg-type]
    assert str(raised.value) == "instrument must be True or False, got 'false'"
    assert sightline.get_client().enabled is False


def test_a_single_exporter_object_is_a_list_of_one():
    exporter = InMemoryExporter()
    with Client(exporters=exporter) as client:  # type: ignore[arg-type]
        assert client.exporters == [exporter]
        client.log_event("tool_call", "search")
    assert [e.name for e in exporter.events] == ["search"]


def test_an_exporter_that_is_neither_a_name_nor_an_exporter_raises_config_error():
    thing = object()
    with pytest.raises(ConfigError) as raised:
        Client(exporters=[thing], enabled=False)
    assert str(raised.value) == (
        f"exporter {thing!r} is neither a name (such as 'sqlite') nor an object with export() "
        "and shutdown()"
    )


# -- 5. a timeout of None or inf is no limit ------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (None, threading.TIMEOUT_MAX),
        (float("inf"), threading.TIMEOUT_MAX),
        (1e20, threading.TIMEOUT_MAX),
        (2.5, 2.5),
        (3, 3.0),
        (0, 0.0),
        (-1, 0.0),
        (float("-inf"), 0.0),
        (float("nan"), 0.0),
    ],
)
def test_timeout_seconds_clamps_to_what_threading_accepts(given, seconds):
    assert pipeline_module.timeout_seconds(given) == seconds


def test_a_timeout_that_is_not_a_number_raises_type_error_saying_so():
    with pytest.raises(TypeError) as raised:
        Client(exporters=["memory"]).close("1")  # type: ignore[arg-type]
    assert str(raised.value) == (
        "timeout must be a number of seconds, or None for no limit; got '1'"
    )


@pytest.mark.parametrize("timeout", [None, float("inf"), 1e20])
def test_flush_without_limit_delivers(timeout):
    exporter = InMemoryExporter()
    with Client(exporters=[exporter], flush_interval=60) as client:
        client.log_event("custom", "queued")
        assert client.flush(timeout) is True
        assert [e.name for e in exporter.events] == ["queued"]


@pytest.mark.parametrize("timeout", [None, float("inf"), 1e20])
def test_close_without_limit_delivers(timeout):
    exporter = InMemoryExporter()
    client = Client(exporters=[exporter], flush_interval=60)
    client.log_event("custom", "queued")
    assert client.close(timeout) is True
    assert [e.name for e in exporter.events] == ["queued"]
    assert exporter.shut_down is True


def test_shutdown_and_flush_of_the_global_client_take_none():
    exporter = InMemoryExporter()
    sightline.init(exporters=[exporter], instrument=False, flush_interval=60)
    sightline.get_client().log_event("custom", "queued")
    assert sightline.flush(None) is True
    assert sightline.shutdown(float("inf")) is True
    assert [e.name for e in exporter.events] == ["queued"]


def test_async_client_flush_and_close_take_none_and_inf():
    exporter = InMemoryExporter()

    async def main() -> tuple[bool, bool]:
        client = AsyncClient(exporters=[exporter], flush_interval=60)
        client.log_event("custom", "queued")
        return await client.flush(None), await client.close(float("inf"))

    assert asyncio.run(main()) == (True, True)
    assert [e.name for e in exporter.events] == ["queued"]


# -- 6. track() and set_metadata() given what they cannot use -------------------------------------


def test_track_refuses_what_is_not_an_event_counts_it_dropped_and_warns_once(caplog):
    exporter = InMemoryExporter()
    with caplog.at_level(logging.WARNING, logger="sightline"):
        with Client(exporters=[exporter]) as client:
            results = [client.track(x) for x in (None, "str", {"name": "dict"}, 42)]  # type: ignore[arg-type]
            client.log_event("custom", "fine")
            assert client.flush() is True
            assert client.stats()["dropped"] == 4
    assert results == [False, False, False, False]
    assert [e.name for e in exporter.events] == ["fine"]
    assert warnings_of(caplog) == [
        "sightline: track() dropped an event: it was given NoneType, not an Event; counted in "
        "stats()['dropped'] (further ones are logged at debug level)"
    ]


def test_track_refuses_an_event_without_its_fields():
    with Client(exporters=["memory"]) as client:
        hollow = sightline.Event.__new__(sightline.Event)
        assert client.track(hollow) is False
        assert client.stats()["dropped"] == 1


def test_set_metadata_ignores_what_is_not_a_mapping_and_warns_once(caplog):
    exporter = InMemoryExporter()
    with caplog.at_level(logging.WARNING, logger="sightline"):
        with Client(exporters=[exporter]) as client:
            with client.trace("ticket", metadata={"kept": 1}) as run:
                assert run.set_metadata("notadict") is run  # type: ignore[arg-type]
                run.set_metadata(["a", "b"], source="kb")  # type: ignore[arg-type]
                run.add_metadata({"hits": 3})
    assert [e.metadata for e in exporter.events] == [{"kept": 1, "source": "kb", "hits": 3}]
    assert warnings_of(caplog) == [
        "sightline: set_metadata() takes a mapping (a dict), not str; it is ignored (further "
        "ones are logged at debug level)"
    ]


def test_set_metadata_on_a_span_whose_metadata_was_replaced_by_none_merges():
    exporter = InMemoryExporter()
    with Client(exporters=[exporter]) as client:
        with client.trace("ticket") as run:
            run.event.metadata = None  # type: ignore[assignment]
            run.set_metadata({"hits": 3})
    assert [e.metadata for e in exporter.events] == [{"hits": 3}]


def test_set_status_ignores_a_status_that_does_not_exist_and_warns_once(caplog):
    exporter = InMemoryExporter()
    with caplog.at_level(logging.WARNING, logger="sightline"):
        with Client(exporters=[exporter]) as client:
            with client.trace("ticket") as run:
                assert run.set_status("weird") is run
                run.set_status(["odd"])  # type: ignore[arg-type]
                run.set_status("error")
            with client.trace("second") as other:
                other.set_status(sightline.Status.ERROR)
    assert [(e.name, e.status.value) for e in exporter.events] == [
        ("ticket", "error"),
        ("second", "error"),
    ]
    assert warnings_of(caplog) == [
        "sightline: set_status() takes one of 'ok', 'error', not 'weird'; it is ignored "
        "(further ones are logged at debug level)"
    ]
