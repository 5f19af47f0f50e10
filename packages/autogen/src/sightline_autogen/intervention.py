"""An intervention handler recording every message hop of a ``SingleThreadedAgentRuntime``.

Usage::

    from autogen_core import SingleThreadedAgentRuntime
    from sightline_autogen import SightlineInterventionHandler

    runtime = SingleThreadedAgentRuntime(intervention_handlers=[SightlineInterventionHandler()])
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from autogen_core import DefaultInterventionHandler

from sightline.client import AMBIENT, get_client
from sightline.event import EventType
from sightline.logs import log_safely
from sightline_autogen.mapping import FRAMEWORK, message_preview
from sightline_autogen.scopes import REGISTRY

if TYPE_CHECKING:
    from sightline.client import Client

__all__ = ["SightlineInterventionHandler"]


class SightlineInterventionHandler(DefaultInterventionHandler):
    """Records each message the runtime routes as a ``decision`` event, and lets it through.

    One event per hop: ``send:<MessageType>`` (a direct message), ``publish:<MessageType>`` (to
    a topic) and ``response:<MessageType>`` (an RPC answer), with the sender and recipient
    (agent id or topic id) in its metadata and a preview of the content cut to
    ``content_limit`` characters as its input. Hops of a team that is running are attached to
    the team's ``run`` span; others to the ambient span. Never changes, drops or delays a
    message, and never raises.
    """

    def __init__(self, client: Client | None = None, *, content_limit: int = 1000) -> None:
        self.client = client
        self.content_limit = content_limit
        self._warned = False

    async def on_send(self, message: Any, *, message_context: Any, recipient: Any) -> Any:
        self._record(
            "send",
            message,
            sender=getattr(message_context, "sender", None),
            recipient=recipient,
            message_id=getattr(message_context, "message_id", None),
        )
        return message

    async def on_publish(self, message: Any, *, message_context: Any) -> Any:
        self._record(
            "publish",
            message,
            sender=getattr(message_context, "sender", None),
            recipient=getattr(message_context, "topic_id", None),
            message_id=getattr(message_context, "message_id", None),
        )
        return message

    async def on_response(self, message: Any, *, sender: Any, recipient: Any) -> Any:
        self._record("response", message, sender=sender, recipient=recipient, message_id=None)
        return message

    def _record(
        self, hop: str, message: Any, *, sender: Any, recipient: Any, message_id: Any
    ) -> None:
        try:
            client = self.client if self.client is not None else get_client()
            if not client.enabled:
                return
            message_type = type(message).__name__
            team_span = REGISTRY.team_span(_key_of(recipient)) or REGISTRY.team_span(
                _key_of(sender)
            )
            now = time.time_ns()
            span = client.start_span(
                f"{hop}:{message_type}",
                EventType.DECISION,
                parent=team_span if team_span is not None else AMBIENT,
                input=message_preview(message, self.content_limit),
                metadata={
                    "hop": hop,
                    "sender": str(sender) if sender is not None else None,
                    "recipient": str(recipient) if recipient is not None else None,
                    "message_type": message_type,
                    "message_id": message_id,
                },
                framework=FRAMEWORK,
                start_ns=now,
            )
            span.end(now)
        except Exception as exc:  # never raise into the runtime
            if not self._warned:
                self._warned = True
                log_safely(
                    logging.WARNING,
                    "sightline: could not record an AutoGen message hop: %s: %s",
                    type(exc).__name__,
                    exc,
                )


def _key_of(agent_or_topic: Any) -> str | None:
    """The key of an AgentId or the source of a TopicId (a team's id inside a group chat)."""
    for attribute in ("key", "source"):
        value = getattr(agent_or_topic, attribute, None)
        if isinstance(value, str):
            return value
    return None
