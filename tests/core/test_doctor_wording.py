"""Wording of what the doctor and the configuration say: counts agree with their number, and
no message sends the user to a command this release does not have."""

from __future__ import annotations

import pytest

from sightline import ConfigError
from sightline.config import validate_api_key
from sightline.doctor import _count


@pytest.mark.parametrize(("number", "shown"), [(0, "0 batches"), (1, "1 batch"), (2, "2 batches")])
def test_a_count_agrees_with_its_number(number, shown):
    assert _count(number, "batch", "batches") == shown


def test_an_invalid_api_key_is_explained_without_a_missing_command():
    with pytest.raises(ConfigError) as failure:
        validate_api_key("sl_short")
    message = str(failure.value)
    assert message.endswith("Get one from the collector's operator.")
    assert "keys create" not in message
