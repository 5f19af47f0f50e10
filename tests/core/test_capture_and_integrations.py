"""A capture sees the framework runs of the agent under test, and gives the integrations back.

The adapters report to the client they were instrumented with (``sightline.init()`` passes its
own), so a capture that only swapped the global client saw none of a LangChain or CrewAI
agent's runs; and ``capture(instrument=True)`` left them reporting to its closed client after
the block, where the application's later runs were dropped."""

from __future__ import annotations

from typing import Any

import pytest

import sightline
from sightline.testing import InMemoryExporter, capture


class FakeIntegration:
    """Behaves like the adapters: instrument(client) binds (or re-binds) to that client."""

    def __init__(self) -> None:
        self.client: Any = None
        self.instrumented = False

    @sightline.hookimpl
    def sightline_instrument(self, client):
        self.client = client
        self.instrumented = True

    @sightline.hookimpl
    def sightline_uninstrument(self):
        self.client = None
        self.instrumented = False


@pytest.fixture
def integration():
    fake = FakeIntegration()
    sightline.register_plugin(fake, "fakeframework")
    try:
        yield fake
    finally:
        sightline.unregister_plugin("fakeframework")


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
