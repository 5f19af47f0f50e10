"""A misspelled integration name is said, not silently ignored: ``instrument(["langchian"])``
or ``init(plugins=["langchian"])`` used to switch nothing on without a word, and
``instrument("langchain")`` (a string, not a list) was read as the names "l", "a", "n"..."""

from __future__ import annotations

import logging

import sightline
from sightline.testing import InMemoryExporter


def warnings_of(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sightline" and r.levelno == logging.WARNING
    ]


def test_instrument_with_an_unknown_name_warns_naming_the_loaded_integrations(caplog, integration):
    with (
        caplog.at_level(logging.WARNING, logger="sightline"),
        sightline.Client(exporters=[InMemoryExporter()]) as client,
    ):
        client.instrument(["fakeframwork"])
        assert integration.instrumented == 0
        [message] = warnings_of(caplog)
        assert "'fakeframwork'" in message
        assert "fakeframework" in message.split("'fakeframwork'", 1)[1]
        client.uninstrument()


def test_instrument_given_one_name_as_a_string_instruments_that_integration(caplog, integration):
    with (
        caplog.at_level(logging.WARNING, logger="sightline"),
        sightline.Client(exporters=[InMemoryExporter()]) as client,
    ):
        client.instrument("fakeframework")
        assert integration.instrumented == 1
        client.uninstrument("fakeframework")
        assert integration.instrumented == 0
    assert warnings_of(caplog) == []


def test_a_known_name_gives_no_warning(caplog, integration):
    with (
        caplog.at_level(logging.WARNING, logger="sightline"),
        sightline.Client(exporters=[InMemoryExporter()]) as client,
    ):
        client.instrument(["fakeframework"])
        assert integration.instrumented == 1
        client.uninstrument()
    assert warnings_of(caplog) == []


def test_plugins_option_naming_no_installed_plugin_warns(caplog):
    with (
        caplog.at_level(logging.WARNING, logger="sightline"),
        sightline.Client(exporters=[InMemoryExporter()], plugins=["langchian"]) as client,
    ):
        client.plugins.list()
    [message] = warnings_of(caplog)
    assert "plugins=" in message
    assert "'langchian'" in message
