"""A mistyped option or a malformed variable says what was expected, so the user can fix it
from the message alone (STYLE.md: errors say what to do)."""

from __future__ import annotations

import pytest

from sightline import ConfigError
from sightline.config import Config


def test_a_mistyped_option_suggests_the_option_it_resembles():
    with pytest.raises(TypeError) as raised:
        Config.resolve(environ={}, endpont="http://collector")
    assert str(raised.value) == ("unknown Sightline option(s): endpont (did you mean 'endpoint'?)")


def test_an_option_resembling_none_gets_no_suggestion():
    with pytest.raises(TypeError) as raised:
        Config.resolve(environ={}, colour="blue")
    assert str(raised.value) == "unknown Sightline option(s): colour"


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("SIGHTLINE_ENABLED", "nope", "true or false (also 1/0, yes/no, on/off)"),
        ("SIGHTLINE_HANDLE_SIGNALS", "maybe", "auto, true or false (also 1/0, yes/no, on/off)"),
        ("SIGHTLINE_QUEUE_SIZE", "lots", "a whole number"),
        ("SIGHTLINE_SPOOL_MAX_BYTES", "256MiB", "a whole number of bytes"),
        ("SIGHTLINE_SAMPLE_RATE", "half", "a number"),
        ("SIGHTLINE_HTTP_TIMEOUT", "10s", "a number of seconds"),
    ],
)
def test_a_malformed_variable_says_what_was_expected(variable, raw, expected):
    with pytest.raises(ConfigError) as raised:
        Config.resolve(environ={variable: raw})
    message = str(raised.value)
    assert message.startswith(f"{variable}={raw!r} is not a valid value for ")
    assert message.endswith(f": expected {expected}")
