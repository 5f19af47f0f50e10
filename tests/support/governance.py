"""What the governance tests of every adapter use: a policy plugin that records what it is asked,
and a count of the cheap ``enforced()`` checks a tool makes when no policy is registered."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sightline
from sightline import Decision


class Policy:
    """A ``sightline_authorize_tool`` plugin answering ``answer``: a value, or a function of
    ``(tool_name, arguments)``. ``asked`` holds ``(tool_name, arguments)`` of every question,
    ``contexts`` the context given with it."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.contexts: list[dict[str, Any]] = []

    @sightline.hookimpl
    def sightline_authorize_tool(
        self, tool_name: str, arguments: dict[str, Any], context: dict[str, Any]
    ) -> Any:
        self.asked.append((tool_name, dict(arguments)))
        self.contexts.append(dict(context))
        return self.answer(tool_name, arguments) if callable(self.answer) else self.answer


def count_enforced(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Any]:
    """Count the ``enforced(client)`` checks ``module`` makes (one list item, the client, each);
    the real check still answers."""
    checks: list[Any] = []
    real_enforced = module.enforced

    def counting_enforced(client: Any = None) -> bool:
        checks.append(client)
        return real_enforced(client)

    monkeypatch.setattr(module, "enforced", counting_enforced)
    return checks


@contextlib.contextmanager
def policies(client: Any) -> Iterator[Callable[[Any], Policy]]:
    """``install(answer)`` registers a :class:`Policy` on ``client`` for the block (unregistered
    after it, even when the block fails); for a test fixture to yield."""
    installed: list[str] = []

    def install(answer: Any) -> Policy:
        plugin = Policy(answer)
        name = f"test-policy-{len(installed)}"
        client.plugins.register(plugin, name)
        installed.append(name)
        return plugin

    try:
        yield install
    finally:
        for name in installed:
            client.plugins.unregister(name)


def refund_limit(tool_name: str, arguments: dict[str, Any]) -> Any:
    """A policy for a ``refund(order, amount=500)`` tool: refunds over 100 are denied; written not to raise, as policies should be."""
    if tool_name == "refund" and arguments.get("amount", 0) > 100:
        return Decision(False, "over the refund limit")
    return None
