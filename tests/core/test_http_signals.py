"""The SIGTERM handler: when it is installed, and how it chains (each case in a child process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.receiver import Receiver

KEY = "sl_" + "s" * 40


def script(body: str) -> str:
    """The common imports, then ``body`` (dedented)."""
    return PREAMBLE + textwrap.dedent(body)


def run(code: str, *, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def start(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def receiver(tmp_path: Path) -> Any:
    with Receiver(tmp_path / "received.jsonl", api_key=KEY) as running:
        yield running


PREAMBLE = """
import signal, sys, threading, time
import sightline
from sightline import Event, EventType
from sightline.signals import _on_sigterm
"""


def test_by_default_the_handler_is_installed_when_sigterm_is_unhandled() -> None:
    out = run(
        script(
            """
        client = sightline.Client(exporters=["memory"])
        print(signal.getsignal(signal.SIGTERM) is _on_sigterm)
        """
        )
    )
    assert out == "True"


def test_by_default_an_application_handler_is_left_alone() -> None:
    out = run(
        script(
            """
        def mine(signum, frame):
            pass
        signal.signal(signal.SIGTERM, mine)
        client = sightline.Client(exporters=["memory"])
        print(signal.getsignal(signal.SIGTERM) is mine)
        """
        )
    )
    assert out == "True"


@pytest.mark.parametrize(
    ("argument", "env"),
    [("handle_signals=False", {}), ("", {"SIGHTLINE_HANDLE_SIGNALS": "false"})],
)
def test_handle_signals_false_installs_nothing(argument: str, env: dict[str, str]) -> None:
    out = run(
        script(
            f"""
        client = sightline.Client(exporters=["memory"], {argument})
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """
        ),
        env=env,
    )
    assert out == "True"


def test_off_the_main_thread_no_handler_is_installed_and_it_says_so() -> None:
    out = run(
        script(
            """
        import logging
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
        thread = threading.Thread(
            target=lambda: sightline.Client(exporters=["memory"], handle_signals=True))
        thread.start(); thread.join()
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """
        )
    )
    assert out.splitlines()[-1] == "True"
    assert "only be installed from the main thread" in out


def test_uninstall_restores_what_was_there_before() -> None:
    out = run(
        script(
            """
        from sightline.signals import uninstall_signal_handler
        def mine(signum, frame):
            pass
        signal.signal(signal.SIGTERM, mine)
        client = sightline.Client(exporters=["memory"], handle_signals=True)
        print(signal.getsignal(signal.SIGTERM) is _on_sigterm)
        uninstall_signal_handler()
        print(signal.getsignal(signal.SIGTERM) is mine)
        """
        )
    )
    assert out.split() == ["True", "True"]


def test_sigterm_flushes_then_chains_to_the_applications_handler(
    receiver: Receiver, tmp_path: Path
) -> None:
    child = start(
        script(
            f"""
        def mine(signum, frame):
            print("application handler ran", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, mine)
        client = sightline.Client(endpoint={receiver.url!r}, api_key={KEY!r},
                                  spool_dir={str(tmp_path / "spool")!r}, handle_signals=True)
        for n in range(500):
            client.track(Event(EventType.CUSTOM, "step", id=f"chain-{{n}}"))
        print("ready", flush=True)
        time.sleep(60)
        """
        )
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "application handler ran" in out
    assert set(receiver.accepted_ids()) == {f"chain-{n}" for n in range(500)}


def test_an_ignored_sigterm_is_still_ignored_after_the_flush(
    receiver: Receiver, tmp_path: Path
) -> None:
    child = start(
        script(
            f"""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        client = sightline.Client(endpoint={receiver.url!r}, api_key={KEY!r},
                                  spool_dir={str(tmp_path / "spool")!r}, handle_signals=True)
        for n in range(200):
            client.track(Event(EventType.CUSTOM, "step", id=f"ign-{{n}}"))
        print("ready", flush=True)
        time.sleep(1.5)
        client.track(Event(EventType.CUSTOM, "step", id="after"))
        client.close()
        print("still running", flush=True)
        """
        )
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "still running" in out
    assert set(receiver.accepted_ids()) == {f"ign-{n}" for n in range(200)} | {"after"}
