"""The plugin: discovered by ``sightline.init()``, idempotent, and lazy about importing AutoGen."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.teams import SelectorGroupChat  # noqa: F401  (loads every patched module)

import sightline
import sightline_autogen
from sightline.testing import InMemoryExporter, capture
from sightline_autogen import SightlineEventLogHandler
from tests.autogen.conftest import replay

ROOT = Path(__file__).resolve().parents[2]

ALL_PATCHED = [
    "AssistantAgent._check_and_handle_handoff",
    "AssistantAgent._execute_tool_call",
    "AssistantAgent._summarize_tool_use",
    "AssistantAgent.on_messages",
    "AssistantAgent.on_messages_stream",
    "BaseChatAgent.run",
    "BaseChatAgent.run_stream",
    "BaseGroupChat.run",
    "BaseGroupChat.run_stream",
    "BaseStreamTool.run_json_stream",
    "BaseTool.run_json",
    "ChatAgentContainer._log_message",
    "ChatAgentContainer.handle_request",
    "FunctionTool.run",
    "SelectorGroupChatManager.select_speaker",
]


async def test_init_discovers_the_plugin_and_shutdown_removes_it():
    exporter = InMemoryExporter()
    client = sightline.init(exporters=[exporter], plugins=["autogen"])
    try:
        assert sightline_autogen.is_instrumented()
        info = {p.name: p for p in client.plugins.list()}["autogen"]
        assert (info.status, info.distribution) == ("ok", "sightline-autogen")
        assert info.hooks == ["sightline_instrument", "sightline_uninstrument"]

        await AssistantAgent("greeter", model_client=replay("Hello!")).run(task="Hi")
        client.flush()
    finally:
        sightline.shutdown()

    assert not sightline_autogen.is_instrumented()
    assert [(e.type.value, e.name, e.framework) for e in exporter.events] == [
        ("agent", "greeter", "autogen")
    ]


def test_instrument_and_uninstrument_are_idempotent():
    core_logger = logging.getLogger("autogen_core.events")
    with capture() as cap:
        sightline_autogen.instrument(cap.client)
        sightline_autogen.instrument(cap.client)
        try:
            handlers = [h for h in core_logger.handlers if isinstance(h, SightlineEventLogHandler)]
            assert len(handlers) == 1
            from sightline_autogen.instrumentor import INSTRUMENTOR

            assert INSTRUMENTOR.patched_methods == ALL_PATCHED
        finally:
            sightline_autogen.uninstrument()
            sightline_autogen.uninstrument()
    assert not any(isinstance(h, SightlineEventLogHandler) for h in core_logger.handlers)
    assert not sightline_autogen.is_instrumented()


def test_instrumenting_does_not_import_autogen_and_patches_it_when_the_application_does():
    script = textwrap.dedent(
        """
        import sys
        import sightline_autogen
        from sightline_autogen.instrumentor import INSTRUMENTOR

        sightline_autogen.instrument()
        early = sorted(m for m in sys.modules if m.startswith(("autogen_core", "autogen_agentchat")))
        print("early:", early)
        from autogen_agentchat.agents import AssistantAgent  # noqa: F401
        from autogen_agentchat.teams import RoundRobinGroupChat  # noqa: F401
        print("patched:", INSTRUMENTOR.patched_methods)
        sightline_autogen.uninstrument()
        print("after:", INSTRUMENTOR.patched_methods)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "early: []"
    assert lines[1] == f"patched: {ALL_PATCHED}"
    assert lines[2] == "after: []"
