"""A dataclass is recorded as its fields: only the real ones, not the ClassVar and InitVar
pseudo-fields that ``__dataclass_fields__`` also lists (LangGraph's ``Command.PARENT``)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import sightline
from sightline.testing import capture


@dataclasses.dataclass
class Handoff:
    goto: str
    update: dict[str, int] | None = None
    seed: dataclasses.InitVar[int] = 0
    PARENT: ClassVar[str] = "__parent__"

    def __post_init__(self, seed: int) -> None:
        pass


@dataclasses.dataclass(slots=True)
class Point:
    x: int
    y: int
    ORIGIN: ClassVar[tuple[int, int]] = (0, 0)


def recorded_input(value: object) -> object:
    with capture() as captured:
        sightline.get_client().log_event("tool_call", "t", input=value)
        [event] = captured.events
    return event.to_dict()["input"]


def test_a_dataclass_is_recorded_without_its_classvar_and_initvar_pseudo_fields() -> None:
    assert recorded_input(Handoff("billing", {"n": 1}, seed=3)) == {
        "goto": "billing",
        "update": {"n": 1},
    }


def test_a_slotted_dataclass_nested_in_a_value_is_recorded_as_its_fields() -> None:
    assert recorded_input({"points": [Point(1, 2)]}) == {"points": [{"x": 1, "y": 2}]}
