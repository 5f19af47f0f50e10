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
