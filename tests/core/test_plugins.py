"""Plugins: discovery through entry points, isolation of broken plugins, selection, tracing,
and meta-tests that keep every hook documented and exercised."""

from __future__ import annotations

import ast
import copy
import inspect
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sightline
from sightline import hookspecs
from sightline.capture import MASK
from sightline.config import Config
from sightline.exporters.memory import InMemoryExporter
from sightline.plugins import get_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
HOOK_NAMES = sorted(
    name for name, value in vars(hookspecs).items()
    if name.startswith("sightline_") and inspect.isfunction(value)
)  # fmt: skip


def make_distribution(tmp_path: Path, name: str, module_source: str) -> Path:
    """A real installed distribution (dist-info + module) on a directory put on sys.path."""
    site = tmp_path / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{name}_plugin.py").write_text(textwrap.dedent(module_source))
    info = site / f"{name}_plugin-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[sightline]\n{name} = {name}_plugin\n")
    return site


GOOD_PLUGIN = """
    import sightline

    calls = []

    @sightline.hookimpl
    def sightline_process_event(event):
        event.tags.append("seen-by-good")

    @sightline.hookimpl
    def sightline_instrument(client):
        calls.append(("instrument", client))

    @sightline.hookimpl
    def sightline_uninstrument():
        calls.append(("uninstrument", None))
"""


def test_entry_point_plugin_is_discovered_and_listed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_distribution(tmp_path, "good", GOOD_PLUGIN)))
    manager = get_plugin_manager(Config.resolve(exporters=["memory"]))
    info = {i.name: i for i in manager.list()}["good"]
    assert info.status == "ok"
    assert info.distribution == "good-plugin"
    assert info.version == "1.2.3"
    assert info.hooks == [
        "sightline_instrument",
        "sightline_process_event",
        "sightline_uninstrument",
    ]


def test_discovered_processor_changes_events_and_instrument_hooks_follow_the_client(
    tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(make_distribution(tmp_path, "good", GOOD_PLUGIN)))
    exporter = InMemoryExporter()
    client = sightline.init(exporters=[exporter], plugins=["good"])
    try:
        import good_plugin  # type: ignore[import-not-found]

        assert good_plugin.calls == [("instrument", client)]
        client.log_event("custom", "tagged")
        client.flush()
        [event] = exporter.events
        assert event.tags == ["seen-by-good"]
        sightline.uninstrument()
        assert good_plugin.calls[-1] == ("uninstrument", None)
    finally:
        sightline.shutdown()


def test_plugin_that_fails_to_import_is_listed_as_failed_and_the_others_still_load(
    tmp_path, monkeypatch, caplog
):
    site = make_distribution(tmp_path, "good", GOOD_PLUGIN)
    broken = make_distribution(tmp_path / "b", "broken", "raise ImportError('no such backend')")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(broken))
    with caplog.at_level(logging.ERROR, logger="sightline"):
        manager = get_plugin_manager(Config.resolve(exporters=["memory"]))
    infos = {i.name: i for i in manager.list()}
    assert infos["broken"].status == "failed"
    assert infos["broken"].error == "ImportError: no such backend"
    assert infos["good"].status == "ok"
    failures = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(failures) == 1


def test_plugin_raising_in_a_hook_is_disabled_and_logged_once(caplog):
    class Exploding:
        calls = 0

        @sightline.hookimpl
        def sightline_process_event(self, event):
            Exploding.calls += 1
            raise RuntimeError("boom")

    exporter = InMemoryExporter()
    with (
        caplog.at_level(logging.ERROR, logger="sightline"),
        sightline.Client(exporters=[exporter]) as client,
    ):
        client.plugins.register(Exploding(), "exploding")
        for index in range(5):
            client.log_event("custom", f"e{index}")
        client.flush()
        infos = {i.name: i for i in client.plugins.list()}
    assert [e.name for e in exporter.events] == ["e0", "e1", "e2", "e3", "e4"]
    assert Exploding.calls == 1
    assert infos["exploding"].status == "failed"
    assert infos["exploding"].error == "RuntimeError: boom"
    assert len([r for r in caplog.records if "exploding" in r.getMessage()]) == 1


def test_a_processor_marked_tryfirst_still_sees_only_redacted_values():
    seen = []

    class Early:
        @sightline.hookimpl(tryfirst=True)
        def sightline_process_event(self, event):
            seen.append((event.name, copy.deepcopy(event.input), copy.deepcopy(event.metadata)))

    exporter = InMemoryExporter()
    with sightline.Client(exporters=[exporter], redact_detectors=["email"]) as client:
        client.plugins.register(Early(), "test-early")
        client.log_event(
            "tool_call",
            "mail ann@example.com",
            input={"api_key": "sk-live-0123456789abcdef", "note": "password=hunter2"},
            metadata={"to": "ann@example.com"},
        )
        assert client.flush(5.0) is True
        order = [name for name, _ in client.plugins.implementations("sightline_process_event")]
    assert seen == [
        ("mail <email>", {"api_key": MASK, "note": f"password={MASK}"}, {"to": "<email>"})
    ]
    assert order == [
        "builtin-sampling",
        "builtin-redaction",
        "builtin-privacy",
        "builtin-cost",
        "test-early",
    ]


def test_disable_plugins_variable_keeps_a_plugin_from_loading(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_distribution(tmp_path, "good", GOOD_PLUGIN)))
    monkeypatch.setenv("SIGHTLINE_DISABLE_PLUGINS", "good,other")
    manager = get_plugin_manager(Config.resolve(exporters=["memory"]))
    assert {i.name: i.status for i in manager.list()}["good"] == "disabled"
    assert manager.pm.get_plugin("good") is None


def test_init_plugins_argument_chooses_which_plugins_load(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_distribution(tmp_path, "good", GOOD_PLUGIN)))
    client = sightline.Client(exporters=["memory"], plugins=["langchain"])
    try:
        statuses = {i.name: i.status for i in client.plugins.list()}
        assert statuses["good"] == "disabled"
        assert statuses["langchain"] == "ok"
        assert statuses["builtin-redaction"] == "builtin"
    finally:
        client.close()


def test_trace_plugins_prints_every_hook_call(tmp_path):
    script = tmp_path / "traced.py"
    script.write_text(
        "import sightline\n"
        "with sightline.Client(exporters=['memory'], plugins=[]) as c:\n"
        "    c.log_event('custom', 'x')\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={"SIGHTLINE_TRACE_PLUGINS": "1", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "sightline: sightline_exporters → builtin-exporters" in result.stderr
    # the per-event hook too, with the event it is called for
    assert "sightline: sightline_process_event → builtin-redaction (event 'x')" in result.stderr


def test_exporter_offered_by_a_plugin_is_selected_by_name(tmp_path, monkeypatch):
    source = """
        import sightline
        from sightline.testing import InMemoryExporter

        collected = InMemoryExporter()

        @sightline.hookimpl
        def sightline_exporters(config):
            return {"collector": lambda cfg: collected}
    """
    monkeypatch.syspath_prepend(str(make_distribution(tmp_path, "offers", source)))
    with sightline.Client(exporters=["collector"]) as client:
        client.log_event("tool_call", "search")
        client.flush()
    import offers_plugin  # type: ignore[import-not-found]

    assert [e.name for e in offers_plugin.collected.events] == ["search"]


def test_unknown_exporter_name_is_a_clear_error():
    with pytest.raises(
        sightline.ConfigError, match=r"unknown exporter 'nope'; available: .*sqlite"
    ):
        sightline.Client(exporters=["nope"])


def test_cli_hook_adds_a_subcommand(tmp_path, monkeypatch):
    source = """
        import sightline

        def hello(args):
            print(f"hello {args.who}")
            return 0

        @sightline.hookimpl
        def sightline_cli(cli):
            parser = cli.command("hello", "say hello", hello)
            parser.add_argument("who")
    """
    site = make_distribution(tmp_path, "greeter", source)
    result = subprocess.run(
        [sys.executable, "-m", "sightline.cli", "hello", "world"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello world\n"


class HoldingIntegration:
    """Like a framework with an event bus of its own: holds events until asked to flush."""

    def __init__(self) -> None:
        self.held: list[sightline.Event] = []
        self.flushes: list[tuple[object, float]] = []

    @sightline.hookimpl
    def sightline_flush(self, client, timeout):
        self.flushes.append((client, timeout))
        while self.held:
            client.track(self.held.pop(0))


def test_flush_first_collects_what_integrations_still_hold():
    exporter = InMemoryExporter()
    integration = HoldingIntegration()
    with sightline.Client(exporters=[exporter]) as client:
        client.plugins.register(integration, "test-holding")
        integration.held.append(sightline.Event("tool_call", "held-by-the-bus").finish())
        client.log_event("custom", "tracked-directly")
        assert client.flush(3.0) is True
        names = sorted(e.name for e in exporter.events)
        assert integration.flushes == [(client, 3.0)]
    assert names == ["held-by-the-bus", "tracked-directly"]


def test_a_flush_hook_that_raises_is_disabled_and_flush_still_delivers(caplog):
    class Broken:
        @sightline.hookimpl
        def sightline_flush(self, client, timeout):
            raise RuntimeError("bus gone")

    exporter = InMemoryExporter()
    with sightline.Client(exporters=[exporter]) as client:
        client.plugins.register(Broken(), "test-broken-flush")
        client.log_event("custom", "still-delivered")
        with caplog.at_level(logging.ERROR, logger="sightline"):
            assert client.flush(3.0) is True
            assert client.flush(3.0) is True
        statuses = {i.name: i.status for i in client.plugins.list()}
        names = [e.name for e in exporter.events]
    assert names == ["still-delivered"]
    assert statuses["test-broken-flush"] == "failed"
    assert len([r for r in caplog.records if "sightline_flush" in r.getMessage()]) == 1


# -- meta-tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_plugin_hooks_are_documented(hook):
    function = getattr(hookspecs, hook)
    assert function.__doc__ and len(function.__doc__.strip()) > 40, f"{hook} needs a docstring"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`{hook}" in readme, f"{hook} is not documented in README.md"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_plugin_hooks_have_tests(hook):
    """Every hook is implemented by at least one test (a function named after it in tests/)."""
    implemented = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        implemented |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                implemented |= {h for h in HOOK_NAMES if f"def {h}(" in node.value}
    assert hook in implemented, f"no test implements {hook}"


def test_sightline_plugins_says_once_that_a_plugin_failed_to_import(tmp_path):
    broken = make_distribution(tmp_path, "broken", "raise ImportError('no such backend')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    env.update(PYTHONPATH=os.pathsep.join([str(broken), env.get("PYTHONPATH", "")]), NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "sightline.cli", "plugins"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("plugin 'broken' failed to import and is disabled") == 1
    assert "broken failed: ImportError: no such backend" in result.stdout
