"""A capture sees the framework runs of the agent under test, and gives the integrations back.

The adapters report to the client they were instrumented with (``sightline.init()`` passes its
own), so a capture that only swapped the global client saw none of a LangChain or CrewAI
agent's runs; and ``capture(instrument=True)`` left them reporting to its closed client after
the block, where the application's later runs were dropped."""

from __future__ import annotations

import sightline
from sightline.testing import InMemoryExporter, capture


def test_capture_takes_over_the_application_instrumentation_and_gives_it_back(integration):
    app = sightline.Client(exporters=[InMemoryExporter()], instrument=True)
    sightline.set_client(app)
    assert integration.client is app
    with capture() as cap:
        assert integration.client is cap.client
    assert integration.client is app
    assert integration.instrumented
    sightline.set_client(None)
    app.close()


def test_capture_instrument_true_switches_integrations_off_again_after_the_block(integration):
    with capture(instrument=True) as cap:
        assert integration.client is cap.client
    assert not integration.instrumented
    assert integration.client is None


def test_capture_without_instrumentation_anywhere_instruments_nothing(integration):
    with capture():
        assert not integration.instrumented
    assert not integration.instrumented


def test_the_fixture_records_the_runs_of_installed_integrations(integration, sightline_capture):
    assert integration.client is sightline_capture.client
