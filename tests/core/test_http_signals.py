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
        for _ in range(1200):  # short sleeps (see test_http_delivery: time.sleep's race)
            time.sleep(0.05)
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


# -- which thread a signal reaches ------------------------------------------------------------

linux_only = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="reads signal masks from /proc"
)

MASKS = """
import os

def signal_bits(path, field):
    for line in open(path):
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise LookupError(field)

def blocks(thread, number):
    return bool(signal_bits(f"/proc/self/task/{thread.native_id}/status", "SigBlk")
                & 1 << (number - 1))
"""


@linux_only
def test_every_sightline_thread_blocks_asynchronous_signals_and_the_main_thread_none(
    tmp_path: Path,
) -> None:
    out = run(
        script(MASKS)
        + textwrap.dedent(
            f"""
        # A closed port: the http exporter's drain thread starts and keeps retrying.
        client = sightline.Client(endpoint="http://127.0.0.1:9", api_key={KEY!r},
                                  spool_dir={str(tmp_path / "spool")!r}, handle_signals=False)
        client.track(Event(EventType.CUSTOM, "step"))
        client.flush(0.5)
        for thread in sorted(threading.enumerate(), key=lambda t: t.name):
            print(thread.name, [blocks(thread, s) for s in (signal.SIGTERM, signal.SIGINT,
                                                             signal.SIGHUP, signal.SIGSEGV)])
        client.close(0.1)
        """
        )
    )
    assert out.splitlines() == [
        "MainThread [False, False, False, False]",
        "sightline-export-http [True, True, True, False]",
        "sightline-http-drain [True, True, True, False]",
        "sightline-worker [True, True, True, False]",
    ]


@linux_only
def test_a_signal_to_the_process_waits_for_the_main_thread_rather_than_reach_a_sightline_thread() -> (
    None
):
    # With the main thread blocking SIGUSR1, no thread of this process may take it: it stays
    # pending until the main thread unblocks it, and the handler then runs there at once.
    # Before Sightline's threads blocked signals, one of them took it, and a main thread
    # waiting in a system call was not woken (SIGTERM seemed ignored during time.sleep).
    out = run(
        script(MASKS)
        + """
ran = []
signal.signal(signal.SIGUSR1, lambda number, frame: ran.append(threading.current_thread().name))
client = sightline.Client(exporters=["memory"], handle_signals=False)
client.track(Event(EventType.CUSTOM, "step"))
client.flush(5)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
os.kill(os.getpid(), signal.SIGUSR1)
time.sleep(0.2)
pending = bool(signal_bits("/proc/self/status", "ShdPnd") & 1 << (signal.SIGUSR1 - 1))
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
print(pending, ran, flush=True)
client.close()
"""
    )
    assert out == "True ['MainThread']"
