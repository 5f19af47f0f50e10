"""Configuration (ARCHITECTURE.md §4, §7): an argument beats its SIGHTLINE_* variable, which beats
the default; API keys are checked for shape before anything is sent; a bad value names its
variable."""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import Any

import pytest

import sightline
from sightline.config import ENVIRONMENT, Config
from sightline.errors import ConfigError

VALID_KEY = "sl_" + "A1b2C3d4-E5f6_G7h8" * 2  # 36 characters after the prefix
OTHER_KEY = "sl_" + "z" * 32


def default_of(name: str) -> Any:
    spec = {f.name: f for f in dataclasses.fields(Config)}[name]
    return spec.default


# variable: (raw environment value, the value it parses to, an argument, what the argument gives,
#            other arguments the combination needs)
PRECEDENCE: dict[str, tuple[str, Any, Any, Any, dict[str, Any]]] = {
    "SIGHTLINE_ENDPOINT": ("http://env.example:7878", "http://env.example:7878",
                           "https://arg.example", "https://arg.example", {"api_key": VALID_KEY}),
    "SIGHTLINE_API_KEY": (VALID_KEY, VALID_KEY, OTHER_KEY, OTHER_KEY, {}),
    "SIGHTLINE_PROJECT": ("env-project", "env-project", "arg-project", "arg-project", {}),
    "SIGHTLINE_AGENT": ("env-agent", "env-agent", "arg-agent", "arg-agent", {}),
    "SIGHTLINE_DB": ("/env/events.db", "/env/events.db", "/arg/events.db", "/arg/events.db", {}),
    "SIGHTLINE_ENABLED": ("false", False, True, True, {}),
    "SIGHTLINE_EXPORTERS": ("jsonl, console", ("jsonl", "console"), ["memory"], ("memory",), {}),
    "SIGHTLINE_CAPTURE_CONTENT": ("0", False, True, True, {}),
    "SIGHTLINE_DISABLE_PLUGINS": ("crewai,autogen", ("crewai", "autogen"), ["langchain"],
                                  ("langchain",), {}),
    "SIGHTLINE_TRACE_PLUGINS": ("yes", True, False, False, {}),
    "SIGHTLINE_SAMPLE_RATE": ("0.25", 0.25, 0.5, 0.5, {}),
    "SIGHTLINE_QUEUE_SIZE": ("10", 10, 20, 20, {}),
    "SIGHTLINE_BATCH_SIZE": ("5", 5, 7, 7, {}),
    "SIGHTLINE_FLUSH_INTERVAL": ("0.5", 0.5, 2.0, 2.0, {}),
    "SIGHTLINE_REDACT_KEYS": ("ssn, iban", ("ssn", "iban"), ["email"], ("email",), {}),
    "SIGHTLINE_REDACT_DETECTORS": ("email, card", ("email", "card"), ["phone"], ("phone",), {}),
    "SIGHTLINE_REDACT_DETECTOR_MODE": ("remove", "remove", "hash", "hash",
                                       {"redact_hash_key": "h" * 16}),
    "SIGHTLINE_REDACT_RULES": ('{"$.input.ssn": "mask"}', (("$.input.ssn", "mask"),),
                               {"$..pin": "remove"}, (("$..pin", "remove"),), {}),
    "SIGHTLINE_REDACT_HASH_KEY": ("e" * 16, "e" * 16, "a" * 16, "a" * 16, {}),
    "SIGHTLINE_ESTIMATE_COST": ("false", False, True, True, {}),
    "SIGHTLINE_MODEL_PRICES": ('{"m": [1, 2]}', (("m", (1.0, 2.0, 1.0, 1.0)),),
                               {"n": (3, 4, 1, 5)}, (("n", (3.0, 4.0, 1.0, 5.0)),), {}),
    "SIGHTLINE_MAX_STRING": ("100", 100, 200, 200, {}),
    "SIGHTLINE_SPOOL_DIR": ("/env/spool", "/env/spool", "/arg/spool", "/arg/spool", {}),
    "SIGHTLINE_SPOOL_MAX_BYTES": ("1000", 1000, 2000, 2000, {}),
    "SIGHTLINE_HANDLE_SIGNALS": ("off", False, True, True, {}),
    "SIGHTLINE_HTTP_TIMEOUT": ("3", 3.0, 4.0, 4.0, {}),
    "SIGHTLINE_HTTP_BACKOFF_MAX": ("5", 5.0, 6.0, 6.0, {}),
    "SIGHTLINE_HTTP_MAX_BATCH_BYTES": ("2048", 2048, 4096, 4096, {}),
}  # fmt: skip


def test_every_environment_variable_has_a_precedence_case():
    assert set(PRECEDENCE) == set(ENVIRONMENT)


@pytest.mark.parametrize("variable", sorted(PRECEDENCE))
def test_without_argument_or_variable_the_default_applies(variable):
    field = ENVIRONMENT[variable]
    *_, needs = PRECEDENCE[variable]
    needs = {k: v for k, v in needs.items() if k != "api_key"}
    assert getattr(Config.resolve(**needs), field) == default_of(field)


@pytest.mark.parametrize("variable", sorted(PRECEDENCE))
def test_the_environment_variable_beats_the_default(monkeypatch, variable):
    field = ENVIRONMENT[variable]
    raw, parsed, _, _, needs = PRECEDENCE[variable]
    monkeypatch.setenv(variable, raw)
    assert parsed != default_of(field)
    assert getattr(Config.resolve(**needs), field) == parsed


@pytest.mark.parametrize("variable", sorted(PRECEDENCE))
def test_the_argument_beats_the_environment_variable(monkeypatch, variable):
    field = ENVIRONMENT[variable]
    raw, parsed, argument, expected, needs = PRECEDENCE[variable]
    monkeypatch.setenv(variable, raw)
    assert expected != parsed
    assert getattr(Config.resolve(**{field: argument}, **needs), field) == expected


def test_client_arguments_beat_environment_variables(monkeypatch):
    monkeypatch.setenv("SIGHTLINE_PROJECT", "from-env")
    monkeypatch.setenv("SIGHTLINE_AGENT", "env-agent")
    with sightline.Client(project="from-argument", exporters=["memory"]) as client:
        assert (client.config.project, client.config.agent) == ("from-argument", "env-agent")


def test_documented_defaults():
    config = Config.resolve()
    assert config.endpoint is None
    assert config.project == "default"
    assert config.db == os.path.join(".sightline", "sightline.db")
    assert (config.enabled, config.capture_content) == (True, True)
    assert config.exporter_names == ("sqlite",)
    assert config.sample_rate == 1.0


def test_an_endpoint_selects_the_http_exporter_by_default():
    assert Config.resolve(endpoint="http://127.0.0.1:7878", api_key=VALID_KEY).exporter_names == (
        "http",
    )


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " True "])
def test_true_spellings_of_boolean_variables(monkeypatch, raw):
    monkeypatch.setenv("SIGHTLINE_TRACE_PLUGINS", raw)
    assert Config.resolve().trace_plugins is True


@pytest.mark.parametrize("raw", ["auto", "AUTO", " auto "])
def test_auto_is_the_default_spelling_of_handle_signals(monkeypatch, raw):
    monkeypatch.setenv("SIGHTLINE_HANDLE_SIGNALS", raw)
    assert Config.resolve().handle_signals is None
    assert Config.resolve(handle_signals=True).handle_signals is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off"])
def test_false_spellings_of_boolean_variables(monkeypatch, raw):
    monkeypatch.setenv("SIGHTLINE_ENABLED", raw)
    assert Config.resolve().enabled is False


def test_an_unknown_option_raises_type_error():
    with pytest.raises(TypeError, match=r"unknown Sightline option.*colour"):
        sightline.Client(colour="blue")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config.resolve().project = "other"  # type: ignore[misc]


# -- invalid values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("SIGHTLINE_ENABLED", "maybe"),
        ("SIGHTLINE_CAPTURE_CONTENT", "sometimes"),
        ("SIGHTLINE_TRACE_PLUGINS", "2"),
        ("SIGHTLINE_HANDLE_SIGNALS", "perhaps"),
        ("SIGHTLINE_QUEUE_SIZE", "ten"),
        ("SIGHTLINE_BATCH_SIZE", "1.5"),
        ("SIGHTLINE_MAX_STRING", "big"),
        ("SIGHTLINE_SPOOL_MAX_BYTES", "1GB"),
        ("SIGHTLINE_HTTP_MAX_BATCH_BYTES", "lots"),
        ("SIGHTLINE_SAMPLE_RATE", "half"),
        ("SIGHTLINE_FLUSH_INTERVAL", "soon"),
        ("SIGHTLINE_HTTP_TIMEOUT", "slow"),
        ("SIGHTLINE_HTTP_BACKOFF_MAX", "x"),
    ],
)
def test_an_unparsable_environment_value_raises_config_error_naming_the_variable(
    monkeypatch, variable, raw
):
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ConfigError) as raised:
        sightline.Client(exporters=["memory"])
    assert variable in str(raised.value)
    assert repr(raw) in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("SIGHTLINE_SAMPLE_RATE", "2"),
        ("SIGHTLINE_SAMPLE_RATE", "-0.1"),
        ("SIGHTLINE_SAMPLE_RATE", "nan"),
        ("SIGHTLINE_QUEUE_SIZE", "0"),
        ("SIGHTLINE_BATCH_SIZE", "-1"),
        ("SIGHTLINE_FLUSH_INTERVAL", "0"),
        ("SIGHTLINE_MAX_STRING", "-1"),
        ("SIGHTLINE_SPOOL_MAX_BYTES", "-5"),
        ("SIGHTLINE_HTTP_TIMEOUT", "0"),
        ("SIGHTLINE_HTTP_MAX_BATCH_BYTES", "10"),
        ("SIGHTLINE_ENDPOINT", "ftp://collector.example"),
    ],
)
def test_an_out_of_range_environment_value_raises_config_error_naming_the_variable(
    monkeypatch, variable, raw
):
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ConfigError) as raised:
        sightline.Client(exporters=["memory"], api_key=VALID_KEY)
    assert variable in str(raised.value)


def test_an_out_of_range_argument_raises_config_error_naming_the_option():
    with pytest.raises(ConfigError, match=r"sample_rate must be between 0 and 1, got 1\.5$"):
        sightline.Client(sample_rate=1.5)


def test_config_error_is_a_value_error_and_a_sightline_error():
    with pytest.raises(ValueError):
        sightline.Client(queue_size=0)
    assert issubclass(ConfigError, sightline.SightlineError)


# -- API keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "sl_" + "a" * 32,
        "sl_" + "A-b_9" * 8,
        "sl_" + "x" * 64,
    ],
)
def test_a_key_of_sl_and_32_or_more_allowed_characters_is_accepted(key):
    with sightline.Client(
        endpoint="http://127.0.0.1:9", api_key=key, exporters=["memory"]
    ) as client:
        assert client.config.api_key == key


@pytest.mark.parametrize(
    "key",
    [
        "sl_" + "a" * 31,  # too short
        "sk_" + "a" * 32,  # wrong prefix
        "SL_" + "a" * 32,  # the prefix is lower case
        "sl-" + "a" * 32,  # wrong separator
        "sl_" + "a" * 31 + "!",  # a character outside [A-Za-z0-9_-]
        "sl_" + "a" * 32 + "\n",  # a trailing newline copied from a file
        " sl_" + "a" * 32,  # leading space
    ],
)
def test_a_malformed_key_raises_config_error_that_says_what_a_key_looks_like(key):
    with pytest.raises(ConfigError) as raised:
        sightline.Client(endpoint="http://127.0.0.1:9", api_key=key, exporters=["memory"])
    message = str(raised.value)
    assert "'sl_' followed by at least 32 characters" in message
    assert key not in message
    assert key.strip()[3:] not in message


def test_a_malformed_key_is_rejected_before_anything_is_sent():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.3)
        port = listener.getsockname()[1]
        with pytest.raises(ConfigError):
            sightline.init(
                endpoint=f"http://127.0.0.1:{port}", api_key="sl_short", instrument=False
            )
        with pytest.raises(socket.timeout):
            listener.accept()
    assert sightline.get_client().enabled is False


def test_a_malformed_key_from_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("SIGHTLINE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("SIGHTLINE_API_KEY", "sl_not-long-enough")
    with pytest.raises(ConfigError) as raised:
        sightline.Client(exporters=["memory"])
    assert "SIGHTLINE_API_KEY" in str(raised.value)
    assert "not-long-enough" not in str(raised.value)


def test_a_remote_endpoint_without_a_key_raises_config_error():
    with pytest.raises(ConfigError, match=r"needs an API key.*SIGHTLINE_API_KEY"):
        sightline.Client(endpoint="http://127.0.0.1:9", exporters=["memory"])


def test_the_key_is_not_shown_in_the_config_repr():
    config = Config.resolve(endpoint="http://127.0.0.1:9", api_key=VALID_KEY)
    assert VALID_KEY not in repr(config)
