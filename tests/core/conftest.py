"""Every core test runs isolated: no SIGHTLINE_* variable leaks in, nothing is written outside
its tmp_path, and no global client is left behind."""

from __future__ import annotations

import os
from collections.abc import Iterator

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
