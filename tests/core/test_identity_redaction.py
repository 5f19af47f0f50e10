"""Secrets are masked in event names and identity fields too (ARCHITECTURE.md §6: built-in
scrubbing is always on), not only in inputs, outputs, metadata, tags and errors."""

from __future__ import annotations

import sightline
from sightline.testing import capture

KEY = "sk-live-" + "a1B2c3D4e5F6g7H8i9J0k1L2"
TOKEN = "Bearer " + "abcdefghijklmnop1234"


def test_a_secret_in_a_name_an_agent_a_session_or_a_model_is_masked():
    with capture() as cap:
        with sightline.trace(f"run for key {KEY}", agent=f"agent {KEY}", session_id=TOKEN):
            pass
        cap.client.log_event("custom", f"event {KEY}", model=f"model-{KEY}")
        run, event = cap.one(type="run"), cap.one(type="custom")
    exported = [run.to_dict(), event.to_dict()]
    text = repr(exported)
    assert KEY not in text and "abcdefghijklmnop1234" not in text
    assert run.name.startswith("run for key ") and "[REDACTED]" in run.name
    assert "[REDACTED]" in run.agent and "[REDACTED]" in run.session_id
    assert "[REDACTED]" in event.name and "[REDACTED]" in event.model


def test_plain_names_are_kept_as_they_are_and_long_ones_cut():
    with capture() as cap:
        with sightline.trace("search_kb-v2", agent="support-bot", session_id="s-42"):
            pass
        with sightline.trace("x" * 5000):
            pass
        first, long = cap.find(type="run")
    assert (first.name, first.agent, first.session_id) == ("search_kb-v2", "support-bot", "s-42")
    assert long.name == "x" * 1000 + "…"


def test_masking_is_remembered_per_value_and_bounded():
    from sightline.config import Config
    from sightline.processors import _IDENTITY_MEMO, RedactionProcessor

    processor = RedactionProcessor(Config.resolve())
    for number in range(_IDENTITY_MEMO * 2 + 10):
        processor._identity_text(f"session-{number}")
    assert 0 < len(processor._identity) <= _IDENTITY_MEMO
    assert processor._identity_text(f"name {KEY}") == processor._identity[f"name {KEY}"]
