"""Privacy rules and detectors (ARCHITECTURE.md §6): opt-in detectors of e-mails, card numbers
(Luhn-checked) and phone numbers, JSONPath rules, masked / hashed / removed; and the secrets
the always-on scrubbing finds inside text (password=..., a URL's password, GitHub tokens, AWS
access key ids). Everything goes through a real client and the in-memory exporter."""

from __future__ import annotations

import copy
import hmac
import json
import logging
from typing import Any

import pytest

from sightline import Client, ConfigError
from sightline.capture import MASK, Sanitizer, mask_text_secrets
from sightline.config import Config
from sightline.event import ErrorInfo, Event
from sightline.testing import InMemoryExporter

KEY = "k3y-for-tests-0123456789"
SSN = "078-05-1120"


def digest(text: str, key: str = KEY) -> str:
    """The 16 hex digits the hash action writes for ``text``."""
    return hmac.new(key.encode(), text.encode(), "sha256").hexdigest()[:16]


def record(events: list[dict[str, Any]], **options: Any) -> tuple[list[Event], Client]:
    """Log one event per dict of ``log_event`` arguments on a new client configured by
    ``options``; return what was exported, in order, and the (closed) client."""
    exporter = InMemoryExporter()
    client = Client(exporters=[exporter], flush_interval=0.05, **options)
    try:
        for fields in events:
            fields = dict(fields)
            client.log_event(fields.pop("type", "tool_call"), fields.pop("name", "step"), **fields)
        assert client.flush(5.0) is True
        return list(exporter.events), client
    finally:
        client.close()


def inputs(texts: list[str], **options: Any) -> list[Any]:
    """Each of ``texts`` recorded as an input: what was exported for it."""
    events, _ = record([{"input": text} for text in texts], **options)
    return [event.input for event in events]


# -- detectors: exact outputs ------------------------------------------------------------------

EMAILS = [
    ("write to Ann.Lee+x@Example.co.uk.", "write to <email>."),
    ("a@b.io and c.d@e-f.org", "<email> and <email>"),
    ("root@localhost is local", "root@localhost is local"),
    ("@dataclass on a class", "@dataclass on a class"),
    ("no at sign here", "no at sign here"),
]

CARDS = [
    ("card 4111 1111 1111 1111 exp 12/27", "card <card> exp 12/27"),
    ("4111-1111-1111-1111", "<card>"),
    ("pay with 5555555555554444.", "pay with <card>."),
    ("amex 378282246310005", "amex <card>"),
    ("4111 1111 1111 1111 2024", "<card> 2024"),
    ("not Luhn: 4111 1111 1111 1112", "not Luhn: 4111 1111 1111 1112"),
    ("not Luhn: 4111111111111112", "not Luhn: 4111111111111112"),
    ("ts 1700000000000 ms", "ts 1700000000000 ms"),
    ("order ORD-4111111111111111", "order ORD-4111111111111111"),
    ("id 41111111111111111111", "id 41111111111111111111"),
    ("on 2024-05-15 at 12:30", "on 2024-05-15 at 12:30"),
]

PHONES = [
    ("call +44 20 7946 0958 today", "call <phone> today"),
    ("+1 (202) 555-0143", "<phone>"),
    ("tel:+12025550143.", "tel:<phone>."),
    ("call 202-555-0143 now", "call <phone> now"),
    ("(202) 555-0143", "<phone>"),
    ("1-800-555-0199", "<phone>"),
    ("on 2024-05-15 at 12:30:45", "on 2024-05-15 at 12:30:45"),
    ("in 2024 and 1999", "in 2024 and 1999"),
    ("order ORD-202-555-0143", "order ORD-202-555-0143"),
    ("order 2025550143", "order 2025550143"),
    ("card 4111 1111 1111 1111", "card 4111 1111 1111 1111"),
    ("version 1.202.555.0143.7", "version 1.202.555.0143.7"),
    ("at 2024-05-15T12:30:00+02:00", "at 2024-05-15T12:30:00+02:00"),
]


@pytest.mark.parametrize(
    ("detector", "cases"), [("email", EMAILS), ("card", CARDS), ("phone", PHONES)]
)
def test_each_detector_masks_what_it_finds_and_leaves_the_rest(detector, cases):
    texts = [text for text, _ in cases]
    assert list(zip(texts, inputs(texts, redact_detectors=[detector]), strict=True)) == cases


def test_the_detectors_together_mask_each_kind_with_its_placeholder():
    text = "Ann <ann@example.com>, +1 202 555 0143, card 4111 1111 1111 1111, order 4471."
    assert inputs([text], redact_detectors="email,card,phone") == [
        "Ann <<email>>, <phone>, card <card>, order 4471."
    ]


def test_detectors_scan_input_output_metadata_keys_error_name_and_tags_not_ids():
    email = "ann@example.com"
    [event], _ = record(
        [
            {
                "name": f"lookup {email}",
                "input": {"to": email, "cc": [email, 42, None, True]},
                "output": f"sent to {email}",
                "metadata": {email: "key", "user": {"email": email}},
                "tags": ["vip", f"user:{email}"],
                "error": ErrorInfo(
                    "LookupError", f"no {email}", f"Traceback\nLookupError: no {email}"
                ),
                "session_id": email,
                "agent": email,
                "model": email,
            }
        ],
        redact_detectors=["email"],
    )
    assert event.name == "lookup <email>"
    assert event.input == {"to": "<email>", "cc": ["<email>", 42, None, True]}
    assert event.output == "sent to <email>"
    assert event.metadata == {"<email>": "key", "user": {"email": "<email>"}}
    assert event.tags == ["vip", "user:<email>"]
    assert (event.error.message, event.error.stack) == (
        "no <email>",
        "Traceback\nLookupError: no <email>",
    )
    assert (event.session_id, event.agent, event.model) == (email, email, email)


CARDS_AMONG_NUMBERS = [
    ("2024 4111 1111 1111 1111", "2024 <card>"),
    ("total 2500 5555 5555 5555 4444", "total 2500 <card>"),
    ("2024 3782 822463 10005", "2024 <card>"),
    ("2024-4111-1111-1111-1111 ok", "2024-<card> ok"),
    ("cards 4111 1111 1111 1111 5555 5555 5555 4444", "cards <card> <card>"),
    # Either 16 digits pass the Luhn check: which is the card cannot be told, both are hidden.
    ("PIN 4321 4111 1111 1111 1111", "PIN <card>"),
]


@pytest.mark.parametrize(("text", "expected"), CARDS_AMONG_NUMBERS)
def test_a_card_next_to_another_number_in_the_same_groups_is_found(text, expected):
    assert inputs([text], redact_detectors="card") == [expected]


def test_a_card_after_a_year_hashes_as_the_card_alone():
    card = f"<card:{digest('4111111111111111')}>"
    assert inputs(
        ["2024 4111 1111 1111 1111", "4111111111111111"],
        redact_detectors="card",
        redact_detector_mode="hash",
        redact_hash_key=KEY,
    ) == [f"2024 {card}", card]


PHONE_EXTENSIONS = [
    ("202-555-0143x12", "<phone>"),
    ("(202) 555-0143x1234", "<phone>"),
    ("001-202-555-0143x1234", "<phone>"),
    ("Phone: 202-555-0143ext5", "Phone: <phone>"),
    ("call 202-555-0143 ext. 12 now", "call <phone> now"),
    ("desk 202.555.0143 #204.", "desk <phone>."),
    ("+1-202-555-0143x1234", "<phone>"),
    ("+44 20 7946 0958 ext 7", "<phone>"),
    # Not an extension: too many digits, or letters after it.
    ("202-555-0143x1234567", "202-555-0143x1234567"),
    ("202-555-0143 xyz", "<phone> xyz"),
]


@pytest.mark.parametrize(("text", "expected"), PHONE_EXTENSIONS)
def test_a_phone_number_with_an_extension_is_found_whole(text, expected):
    assert inputs([text], redact_detectors="phone") == [expected]


def test_an_extension_is_hashed_and_removed_with_its_number():
    texts = ["(202) 555-0143 x12", "+1 202 555 0143 ext. 12", "202-555-0143"]
    assert inputs(
        texts, redact_detectors="phone", redact_detector_mode="hash", redact_hash_key=KEY
    ) == [
        f"<phone:{digest('+12025550143x12')}>",
        f"<phone:{digest('+12025550143x12')}>",
        f"<phone:{digest('+12025550143')}>",
    ]
    assert inputs(
        ["call 202-555-0143x12."], redact_detectors="phone", redact_detector_mode="remove"
    ) == ["call ."]


def test_keys_masked_alike_are_numbered_and_keep_their_values():
    [event], _ = record(
        [
            {
                "metadata": {"a@b.co": 1, "c@d.co": 2, "e@f.co": 3},
                "input": {"<email>": 0, "mail a@b.co": 1, "mail c@d.co": 2},
            }
        ],
        redact_detectors="email",
    )
    assert event.metadata == {"<email>": 1, "<email#2>": 2, "<email#3>": 3}
    assert event.input == {"<email>": 0, "mail <email>": 1, "mail <email#2>": 2}


def test_hash_mode_writes_a_keyed_hash_of_the_normalized_value():
    texts = ["Ann@Example.COM", "ann@example.com", "(202) 555-0143", "+1 202 555 0143"]
    texts.append("4111-1111-1111-1111")
    assert inputs(
        texts, redact_detectors="email,phone,card", redact_detector_mode="hash", redact_hash_key=KEY
    ) == [
        f"<email:{digest('ann@example.com')}>",
        f"<email:{digest('ann@example.com')}>",
        f"<phone:{digest('+12025550143')}>",
        f"<phone:{digest('+12025550143')}>",
        f"<card:{digest('4111111111111111')}>",
    ]


def test_another_hash_key_gives_another_hash():
    other = "another-key-0123456789"
    [hashed] = inputs(
        ["ann@example.com"],
        redact_detectors="email",
        redact_detector_mode="hash",
        redact_hash_key=other,
    )
    assert hashed == f"<email:{digest('ann@example.com', other)}>" != digest("ann@example.com")


def test_remove_mode_deletes_the_text_found():
    assert inputs(
        ["mail ann@example.com or call 202-555-0143."],
        redact_detectors="email,phone",
        redact_detector_mode="remove",
    ) == ["mail  or call ."]


# -- rules: each action on each kind of path ----------------------------------------------------

DATA: dict[str, Any] = {
    "customer": {"ssn": SSN, "name": "Ann"},
    "items": ["a", "b"],
    "messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}],
}


def changed(**parts: Any) -> dict[str, Any]:
    data = copy.deepcopy(DATA)
    data.update(parts)
    return data


def hashed(text: str) -> str:
    return f"<hash:{digest(text)}>"


RULE_CASES = [
    # (path, action, expected input)
    ("$.input.customer.ssn", "mask", changed(customer={"ssn": MASK, "name": "Ann"})),
    ("$.input.customer.ssn", "hash", changed(customer={"ssn": hashed(SSN), "name": "Ann"})),
    ("$.input.customer.ssn", "remove", changed(customer={"name": "Ann"})),
    ("$['input']['customer'][\"ssn\"]", "mask", changed(customer={"ssn": MASK, "name": "Ann"})),
    ("$.input.items[0]", "mask", changed(items=[MASK, "b"])),
    ("$.input.items[-1]", "hash", changed(items=["a", hashed("b")])),
    ("$.input.items[0]", "remove", changed(items=[None, "b"])),
    ("$.input.items[5]", "remove", changed()),
    (
        "$.input.messages[*].content",
        "mask",
        changed(messages=[{"role": "user", "content": MASK}, {"role": "bot", "content": MASK}]),
    ),
    (
        "$.input.messages[*].content",
        "hash",
        changed(
            messages=[
                {"role": "user", "content": hashed("hi")},
                {"role": "bot", "content": hashed("hello")},
            ]
        ),
    ),
    (
        "$.input.messages[*].content",
        "remove",
        changed(messages=[{"role": "user"}, {"role": "bot"}]),
    ),
    ("$.input.customer.*", "mask", changed(customer={"ssn": MASK, "name": MASK})),
    ("$.input.customer.*", "remove", changed(customer={})),
    ("$.input.items[*]", "remove", changed(items=[None, None])),
    (
        "$..content",
        "mask",
        changed(messages=[{"role": "user", "content": MASK}, {"role": "bot", "content": MASK}]),
    ),
    ("$..ssn", "hash", changed(customer={"ssn": hashed(SSN), "name": "Ann"})),
    ("$..ssn", "remove", changed(customer={"name": "Ann"})),
    ("$.input..role", "remove", changed(messages=[{"content": "hi"}, {"content": "hello"}])),
    ("$..customer.name", "mask", changed(customer={"ssn": SSN, "name": MASK})),
    ("$.input", "mask", MASK),
    (
        "$.input",
        "hash",
        hashed(json.dumps(DATA, sort_keys=True, separators=(",", ":"), ensure_ascii=False)),
    ),
    ("$.input", "remove", None),
    ("$.input.nowhere.to.be.found", "remove", changed()),
]


@pytest.mark.parametrize(("path", "action", "expected"), RULE_CASES)
def test_a_rule_applies_its_action_where_its_path_leads(path, action, expected):
    original = copy.deepcopy(DATA)
    [event], _ = record([{"input": DATA}], redact_rules={path: action}, redact_hash_key=KEY)
    assert event.input == expected
    assert original == DATA  # the application's object is never changed


def test_recursive_descent_looks_in_input_output_and_metadata_at_any_depth():
    [event], _ = record(
        [
            {
                "input": {"user": {"ssn": SSN, "friends": [{"ssn": "123-45-6789"}]}},
                "output": [{"ssn": SSN}],
                "metadata": {"ssn": SSN, "plan": "pro"},
            }
        ],
        redact_rules={"$..ssn": "remove"},
    )
    assert event.input == {"user": {"friends": [{}]}}
    assert event.output == [{}]
    assert event.metadata == {"plan": "pro"}


def test_metadata_rules_and_quoted_keys_with_dots():
    [event], _ = record(
        [{"metadata": {"user.email": "ann@example.com", "user": {"id": 7}, "region": "eu"}}],
        redact_rules={"$.metadata['user.email']": "mask", "$.metadata.user.id": "hash"},
        redact_hash_key=KEY,
    )
    assert event.metadata == {
        "user.email": MASK,
        "user": {"id": f"<hash:{digest('7')}>"},
        "region": "eu",
    }


def test_mask_and_hash_leave_none_as_it_is():
    [event], _ = record(
        [{"input": {"ssn": None, "card": None}}],
        redact_rules={"$.input.ssn": "mask", "$.input.card": "hash"},
        redact_hash_key=KEY,
    )
    assert event.input == {"ssn": None, "card": None}


def test_rules_run_before_detectors():
    [event], _ = record(
        [{"input": {"email": "ann@example.com", "note": "cc bob@example.org"}}],
        redact_rules={"$.input.email": "hash"},
        redact_detectors="email",
        redact_hash_key=KEY,
    )
    assert event.input == {"email": hashed("ann@example.com"), "note": "cc <email>"}


# -- configuration ------------------------------------------------------------------------------


def test_the_variables_configure_detectors_mode_rules_and_key(monkeypatch):
    monkeypatch.setenv("SIGHTLINE_REDACT_DETECTORS", " email , phone ")
    monkeypatch.setenv("SIGHTLINE_REDACT_DETECTOR_MODE", "hash")
    monkeypatch.setenv("SIGHTLINE_REDACT_RULES", '{"$.input.ssn": "mask", "$..pin": "remove"}')
    monkeypatch.setenv("SIGHTLINE_REDACT_HASH_KEY", KEY)
    config = Config.resolve()
    assert config.redact_detectors == ("email", "phone")
    assert config.redact_detector_mode == "hash"
    assert config.redact_rules == (("$.input.ssn", "mask"), ("$..pin", "remove"))
    assert config.redact_hash_key == KEY and KEY not in repr(config)
    [event], _ = record([{"input": {"ssn": SSN, "pin": "1234", "to": "ann@example.com"}}])
    assert event.input == {"ssn": MASK, "to": f"<email:{digest('ann@example.com')}>"}


def test_a_string_of_detectors_is_comma_split_and_a_string_of_rules_read_as_json():
    config = Config.resolve(
        environ={}, redact_detectors="card, email", redact_rules='{"$.input.x": "mask"}'
    )
    assert config.redact_detectors == ("card", "email")
    assert config.redact_rules == (("$.input.x", "mask"),)


def test_nothing_configured_registers_no_privacy_processor():
    _, plain = record([])
    _, private = record([], redact_detectors="email")
    assert "builtin-privacy" not in [info.name for info in plain.plugins.list()]
    assert ("builtin-privacy", "builtin") in [
        (info.name, info.status) for info in private.plugins.list()
    ]


def test_an_unknown_detector_is_a_config_error_listing_the_known_ones(monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown redact_detectors 'ssn'.*card, email, phone"):
        Client(exporters=["memory"], redact_detectors=["email", "ssn"])
    monkeypatch.setenv("SIGHTLINE_REDACT_DETECTORS", "emails")
    with pytest.raises(ConfigError, match="set by SIGHTLINE_REDACT_DETECTORS"):
        Config.resolve()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"redact_detectors": "email", "redact_detector_mode": "drop"}, "mask, hash, remove"),
        ({"redact_rules": {"$.input.ssn": "drop"}}, "must be one of mask, hash, remove"),
        ({"redact_rules": {"input.ssn": "mask"}}, "must start with '\\$'"),
        ({"redact_rules": {"$.name": "mask"}}, "start with \\$.input, \\$.output"),
        ({"redact_rules": {"$": "mask"}}, "names nothing"),
        ({"redact_rules": {"$.metadata": "remove"}}, "metadata as a whole"),
        ({"redact_rules": {"$.input[?(@.x)]": "mask"}}, "filters, slices and unions"),
        ({"redact_rules": {"$.input[0:2]": "mask"}}, "filters, slices and unions"),
        ({"redact_rules": {"$..*": "mask"}}, "key name is expected"),
        ({"redact_rules": {"$.input.": "mask"}}, "key name is expected"),
        ({"redact_rules": {"$.input['ssn": "mask"}}, "quoted key"),
        ({"redact_rules": {"$.input ssn": "mask"}}, "unexpected ' '"),
        ({"redact_rules": ["$.input.ssn"]}, "mapping of path → action"),
        ({"redact_rules": "[1, 2]"}, "JSON object"),
        ({"redact_rules": "{not json"}, "JSON object"),
        ({"redact_rules": {"$.input.ssn": "hash"}}, "needs a key"),
        ({"redact_detectors": "card", "redact_detector_mode": "hash"}, "needs a key"),
        ({"redact_detectors": "card", "redact_hash_key": "short"}, "at least 16 characters"),
    ],
)
def test_options_that_cannot_work_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        Client(exporters=["memory"], **options)


def test_a_malformed_rules_variable_names_the_variable(monkeypatch):
    monkeypatch.setenv("SIGHTLINE_REDACT_RULES", "$.input.ssn=mask")
    with pytest.raises(ConfigError, match=r"JSON object.*set by SIGHTLINE_REDACT_RULES"):
        Config.resolve()
    monkeypatch.setenv("SIGHTLINE_REDACT_RULES", '{"$.input.ssn": "erase"}')
    with pytest.raises(ConfigError, match="set by SIGHTLINE_REDACT_RULES"):
        Config.resolve()


def test_the_hash_key_is_never_shown_in_an_error():
    with pytest.raises(ConfigError) as caught:
        Client(exporters=["memory"], redact_detectors="email", redact_hash_key="s3cr3t")
    assert "s3cr3t" not in str(caught.value)


# -- capture_content=False, the application's objects, failures ---------------------------------


def test_without_content_only_metadata_error_name_and_tags_are_acted_on():
    [event], _ = record(
        [
            {
                "name": "mail ann@example.com",
                "input": {"ssn": SSN},
                "metadata": {"ssn": SSN, "contact": "ann@example.com"},
                "error": ValueError("bad ann@example.com"),
            }
        ],
        capture_content=False,
        redact_rules={"$..ssn": "remove", "$.input": "mask"},
        redact_detectors="email",
    )
    assert (event.input, event.output) == (None, None)
    assert event.metadata == {"contact": "<email>"}
    assert event.name == "mail <email>"
    assert event.error.message == ""


def test_the_applications_objects_are_never_changed_and_what_is_clean_is_shared():
    untouched = {"plan": "pro", "items": [1, 2, 3]}
    user_input = {"customer": {"ssn": SSN, "email": "ann@example.com"}, "other": untouched}
    snapshot = copy.deepcopy(user_input)
    metadata = {"contact": "bob@example.org", "region": "eu"}
    [event], _ = record(
        [{"input": user_input, "metadata": metadata}],
        redact_rules={"$.input.customer.ssn": "remove"},
        redact_detectors="email",
    )
    assert event.input == {"customer": {"email": "<email>"}, "other": untouched}
    assert event.metadata == {"contact": "<email>", "region": "eu"}
    assert user_input == snapshot and metadata == {"contact": "bob@example.org", "region": "eu"}
    assert event.input is not user_input and event.input["customer"] is not user_input["customer"]
    assert event.input["other"] is untouched  # copy on write: an unchanged branch is not copied


class HostileKey(str):
    """A key the application made whose comparison raises: the rule cannot be applied."""

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("cannot compare")


def test_an_event_a_rule_fails_on_is_dropped_and_counted_never_exported_unredacted(caplog):
    exporter = InMemoryExporter()
    client = Client(exporters=[exporter], flush_interval=0.05, redact_rules={"$.input.ssn": "mask"})
    try:
        with caplog.at_level(logging.ERROR, logger="sightline"):
            client.log_event("tool_call", "hostile", input={HostileKey("ssn"): SSN})
            assert client.flush(5.0) is True
        assert exporter.events == []
        assert client.stats()["processor_errors"] == 1
        assert "'builtin-privacy' raised RuntimeError" in caplog.text and SSN not in caplog.text
        client.log_event("tool_call", "later", input={"ssn": SSN})
        assert client.flush(5.0) is True
        assert [(e.name, e.input) for e in exporter.events] == [("later", {"ssn": MASK})]
        assert ("builtin-privacy", "builtin") in [(i.name, i.status) for i in client.plugins.list()]
    finally:
        client.close()


# -- always-on: secrets written inside text ------------------------------------------------------

GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
PAT = (
    "github_pat_11ABCDEFG0123456789_"
    + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW"
)

TEXT_SECRETS = [
    ("login password=hunter2 ok", f"login password={MASK} ok"),
    ("DB_PASSWORD=s3cret;HOST=db", f"DB_PASSWORD={MASK};HOST=db"),
    ("api_key: xyz", f"api_key: {MASK}"),
    ("X-Api-Key: abc123", f"X-Api-Key: {MASK}"),
    ('{"token": "abc def", "n": 1}', f'{{"token": "{MASK}", "n": 1}}'),
    ("{'secret': 'hunter2', 'pwd': None}", f"{{'secret': '{MASK}', 'pwd': None}}"),
    ("GET /cb?code=1&access_token=abc&x=1", f"GET /cb?code=1&access_token={MASK}&x=1"),
    ("pwd=x", f"pwd={MASK}"),
    ("postgres://app:hunter2@db:5432/main", f"postgres://app:{MASK}@db:5432/main"),
    ("redis://:s3cret@cache/0", f"redis://:{MASK}@cache/0"),
    (f"clone with {GHP} please", f"clone with {MASK} please"),
    (f"GITHUB_TOKEN {PAT}", f"GITHUB_TOKEN {MASK}"),
    ("key AKIAIOSFODNN7EXAMPLE.", f"key {MASK}."),
    ("temporary ASIAIOSFODNN7EXAMPLE", f"temporary {MASK}"),
    # Left as they are: not a secret's name, not a password, not a whole token.
    ("max_tokens=100 tokens: 5", "max_tokens=100 tokens: 5"),
    ("Note: ref=4471 at 12:30", "Note: ref=4471 at 12:30"),
    ("https://user@example.com/x and http://host:8080/y", None),
    ("mail me@example.org", None),
    ("xAKIAIOSFODNN7EXAMPLE and AKIAIOSFODNN7", None),
    ("ghp_short and github_pat_short", None),
    ("password is the word", None),
    ("token: Bearer abcdefghijklmnop", f"token: Bearer {MASK}"),
    (f"password={MASK}", None),
    # An authorization's value, its scheme with it.
    (
        "Headers({'authorization': 'Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b'})",
        f"Headers({{'authorization': '{MASK}'}})",
    ),
    ("Proxy-Authorization: Token 9944b09199c62bcf", f"Proxy-Authorization: {MASK}"),
    ("authorization=Digest abc", f"authorization={MASK}"),
    ('{"Authorization": "ApiKey k-123"}', f'{{"Authorization": "{MASK}"}}'),
    ("Authorization: Bearer abcdefghijklmnop", f"Authorization: Bearer {MASK}"),
    # The shell's working folder is not a password; prose after a colon is not a secret.
    ("PWD=/home/app OLDPWD=~/src", None),
    ("environ({'PWD': '/home/app', 'HOME': '/root'})", None),
    ("MYSQL_PWD=hunter2", f"MYSQL_PWD={MASK}"),
    ("No credentials: check config", None),
    ("secret: you won't guess", None),
    ("password: hunter2 then more", f"password: {MASK} then more"),
]


@pytest.mark.parametrize(("text", "expected"), TEXT_SECRETS)
def test_secrets_written_inside_text_are_masked(text, expected):
    expected = text if expected is None else expected
    assert mask_text_secrets(Sanitizer()(text)) == Sanitizer()(text) == expected


def test_text_secrets_are_masked_in_recorded_values_errors_and_names():
    connection = "postgres://app:hunter2@db/main"
    [event], _ = record(
        [
            {
                "name": f"connect {connection}",
                "input": {"dsn": connection, "short": "pwd=x", "args": ["api_key: xyz"]},
                "metadata": {"env": f"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE {GHP}"},
                "error": ValueError(f"cannot connect to {connection}"),
            }
        ]
    )
    text = json.dumps(event.to_dict())
    for secret in ("hunter2", "AKIAIOSFODNN7EXAMPLE", GHP, "xyz"):
        assert secret not in text
    assert event.input == {
        "dsn": f"postgres://app:{MASK}@db/main",
        "short": f"pwd={MASK}",
        "args": [f"api_key: {MASK}"],
    }
    assert event.metadata == {"env": f"AWS_ACCESS_KEY_ID={MASK} {MASK}"}
    assert event.error.message == f"cannot connect to postgres://app:{MASK}@db/main"
    assert event.name == f"connect postgres://app:{MASK}@db/main"


def test_text_without_secrets_is_kept_as_the_same_object():
    for text in ("Note: ref=4471 at 12:30, step_2 of the customer-facing run", "pwd", "a=b"):
        assert mask_text_secrets(text) is text
        assert Sanitizer()(text) is text
    clean = {"q": "refund for order 4471: ok", "k": "a=b"}
    assert Sanitizer(share_clean=True)(clean) is clean


def test_masking_text_twice_changes_nothing_more():
    for text, _ in TEXT_SECRETS:
        once = Sanitizer()(text)
        assert Sanitizer()(once) == once
