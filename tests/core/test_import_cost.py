"""``import sightline`` is cheap (ARCHITECTURE.md §1, §8): no plugin machinery, HTTP, SQLite,
asyncio or framework is imported until used; public names resolve lazily."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

HEAVY = ["pluggy", "httpx", "sqlite3", "asyncio", "langchain_core", "crewai", "autogen_core",
         "autogen_agentchat", "llama_index", "opentelemetry"]  # fmt: skip


def loaded_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; report which HEAVY modules it left in sys.modules."""
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        heavy = {HEAVY!r}
        print(json.dumps({{"loaded": sorted(m for m in heavy if m in sys.modules),
                           "result": globals().get("result")}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_sightline_loads_no_plugin_http_sqlite_asyncio_or_framework_module():
    assert loaded_after("import sightline")["loaded"] == []


def test_public_names_resolve_lazily_without_loading_heavy_modules():
    report = loaded_after(
        """
        import sightline
        names = [sightline.trace, sightline.monitor, sightline.EventType, sightline.Event,
                 sightline.Span, sightline.current_span, sightline.get_client, sightline.Config,
                 sightline.ConfigError, sightline.ToolDenied, sightline.Decision,
                 sightline.guard, sightline.init, sightline.Client, sightline.AsyncClient]
        result = [getattr(n, "__name__", type(n).__name__) for n in names]
        """
    )
    assert report["result"] == [
        "trace", "monitor", "EventType", "Event", "Span", "current_span", "get_client", "Config",
        "ConfigError", "ToolDenied", "Decision", "guard", "init", "Client", "AsyncClient",
    ]  # fmt: skip
    assert report["loaded"] == []


def test_decorating_with_monitor_and_tracing_without_init_loads_no_heavy_module():
    report = loaded_after(
        """
        import sightline

        @sightline.monitor
        def tool(x):
            return x + 1

        with sightline.trace("run") as run:
            result = tool(1)
        """
    )
    assert report == {"loaded": [], "result": 2}


def test_every_name_in_all_resolves():
    report = loaded_after(
        """
        import sightline
        result = sorted(n for n in sightline.__all__ if getattr(sightline, n, None) is None)
        """
    )
    assert report["result"] == []


def test_an_unknown_attribute_raises_attribute_error():
    import sightline

    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        sightline.nonexistent  # noqa: B018
    assert {"trace", "monitor", "init", "EventType"} <= set(dir(sightline))


def test_a_framework_is_imported_only_when_its_adapter_instruments():
    report = loaded_after(
        """
        import sightline
        client = sightline.Client(exporters=["memory"], instrument=False)
        client.close()
        """
    )
    assert not {
        "langchain_core",
        "crewai",
        "autogen_core",
        "autogen_agentchat",
        "llama_index",
    } & set(report["loaded"])
