"""The published distributions: released together, each adapter tied to its own core version.

The adapters use the core's integration API (``Client.defer``, ``sightline.capture``,
``sightline.span.add_parent_source``...), which grows from one version to the next: an adapter
next to an older core fails at ``init()``. So the dependency metadata must refuse such a pair,
and ``pip install "sightline[langchain]"`` must bring the adapter made for that core.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli below 3.11, so it is always installed with the tests
    import tomli as tomllib

from sightline.testing import capture

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ("langchain", "crewai", "autogen", "llamaindex")


def project(package: str) -> dict:
    with open(ROOT / "packages" / package / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]


def test_every_distribution_has_the_core_version():
    version = project("core")["version"]
    assert {package: project(package)["version"] for package in ADAPTERS} == {
        package: version for package in ADAPTERS
    }


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_each_adapter_requires_exactly_its_own_core_version(adapter):
    version = project("core")["version"]
    core_requirements = [
        requirement
        for requirement in project(adapter)["dependencies"]
        if re.match(r"sightline\b(?![-_])", requirement)
    ]
    assert core_requirements == [f"sightline=={version}"]


def test_the_core_extras_bring_the_adapters_of_the_same_version():
    core = project("core")
    version = core["version"]
    extras = core["optional-dependencies"]
    for adapter in ADAPTERS:
        assert extras[adapter] == [f"sightline-{adapter}=={version}"]
    assert sorted(extras["all"]) == sorted(f"sightline-{a}=={version}" for a in ADAPTERS)


@pytest.mark.parametrize("package", ("core", *ADAPTERS))
def test_each_distribution_ships_the_license(package):
    meta = project(package)
    assert meta["license"] == "Apache-2.0"
    assert meta["license-files"] == ["LICENSE"]
    text = (ROOT / "packages" / package / "LICENSE").read_text()
    assert text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_the_autogen_adapter_does_not_require_an_extension_it_never_imports():
    dependencies = project("autogen")["dependencies"]
    assert not [d for d in dependencies if d.startswith("autogen-ext")]
    sources = (ROOT / "packages" / "autogen" / "src").rglob("*.py")
    assert not [
        path
        for path in sources
        if re.search(r"^\s*(from|import) autogen_ext", path.read_text(), re.M)
    ]


def test_the_testing_capture_records_even_when_the_environment_disables_sightline(monkeypatch):
    monkeypatch.setenv("SIGHTLINE_ENABLED", "false")
    with capture() as captured:
        with captured.client.trace("checked"):
            pass
        assert [event.name for event in captured.events] == ["checked"]
    with capture(enabled=False) as captured:
        with captured.client.trace("not recorded"):
            pass
        assert captured.events == []
