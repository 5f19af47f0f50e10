"""Every core test runs isolated: no SIGHTLINE_* variable leaks in, nothing is written outside
its tmp_path, and no global client is left behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import sightline


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("SIGHTLINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    previous = sightline.set_client(None)
    yield
    sightline.shutdown()
    sightline.set_client(previous)


@pytest.fixture
def install(sightline_capture: Any) -> Iterator[Any]:
    """Register policies on the capture's client for one test, unregistered in finally."""
    names: list[str] = []
    plugins = sightline_capture.client.plugins

    def register(policy: Any, name: str | None = None) -> Any:
        name = name or f"test-policy-{len(names)}"
        plugins.register(policy, name)
        names.append(name)
        return policy

    try:
        yield register
    finally:
        for name in names:
            plugins.unregister(name)


class FakeIntegration:
    """Behaves like the adapters: ``instrument(client)`` binds (or re-binds) to that client.
    ``instrumented`` counts the instrument calls since the last uninstrument."""

    def __init__(self) -> None:
        self.client: Any = None
        self.instrumented = 0

    @sightline.hookimpl
    def sightline_instrument(self, client: Any) -> None:
        self.client = client
        self.instrumented += 1

    @sightline.hookimpl
    def sightline_uninstrument(self) -> None:
        self.client = None
        self.instrumented = 0


@pytest.fixture
def integration() -> Iterator[FakeIntegration]:
    """A fake integration registered as the plugin "fakeframework" for the test."""
    fake = FakeIntegration()
    sightline.register_plugin(fake, "fakeframework")
    try:
        yield fake
    finally:
        sightline.unregister_plugin("fakeframework")
