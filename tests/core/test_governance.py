"""Tool governance (ARCHITECTURE.md §6): ``sightline.guard`` consults ``sightline_authorize_tool``
plugins before a tool runs; they allow, deny (ToolDenied + a decision event with kind guardrail)
or let the tool run with redacted arguments."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

import sightline
from sightline import Decision, EventType, ToolDenied


class Policy:
    """A governance plugin answering with ``answer`` (a value, or a function of the call)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    @sightline.hookimpl
    def sightline_authorize_tool(self, tool_name, arguments, context):
        self.calls.append((tool_name, dict(arguments), dict(context)))
        if callable(self.answer):
            return self.answer(tool_name, arguments)
        return self.answer


def guarded_tools() -> tuple[Callable[..., Any], list[Any]]:
    ran: list[Any] = []

    @sightline.guard
    def delete_account(user_id: str, reason: str = "") -> str:
        ran.append((user_id, reason))
        return f"deleted {user_id}"

    return delete_account, ran


# -- allow ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [None, True, "allow", Decision(True)])
def test_an_allowed_tool_runs_with_its_arguments_and_records_no_decision(
    sightline_capture, install, answer
):
    policy = install(Policy(answer))
    delete_account, ran = guarded_tools()
    assert delete_account("u-1", reason="asked") == "deleted u-1"
    assert ran == [("u-1", "asked")]
    assert [(name, args) for name, args, _ in policy.calls] == [
        ("delete_account", {"user_id": "u-1", "reason": "asked"})
    ]
    assert sightline_capture.find(type="decision") == []


def test_the_plugin_receives_the_ambient_trace_span_and_agent(sightline_capture, install):
    policy = install(Policy(None))
    delete_account, _ = guarded_tools()
    with sightline.trace("run", agent="support-bot") as run:
        delete_account("u-1")
    [(_, _, context)] = policy.calls
    assert context == {
        "trace_id": run.trace_id,
        "span_id": run.span_id,
        "agent": "support-bot",
        "framework": None,
    }


def test_no_plugin_means_the_tool_runs(sightline_capture):
    delete_account, ran = guarded_tools()
    assert delete_account("u-2") == "deleted u-2"
    assert ran == [("u-2", "")]


# -- deny ----------------------------------------------------------------------------------------


def test_a_denied_tool_raises_tool_denied_in_the_caller_and_does_not_run(
    sightline_capture, install
):
    install(Policy(Decision(False, "destructive tools need approval")))
    delete_account, ran = guarded_tools()
    with pytest.raises(ToolDenied) as raised:
        delete_account("u-1")
    assert ran == []
    assert (raised.value.tool, raised.value.reason) == (
        "delete_account",
        "destructive tools need approval",
    )
    assert str(raised.value) == "tool 'delete_account' denied: destructive tools need approval"
    assert isinstance(raised.value, PermissionError)
    assert isinstance(raised.value, sightline.SightlineError)


def test_a_deny_is_recorded_as_a_decision_event_with_kind_guardrail(sightline_capture, install):
    install(Policy(Decision(False, "destructive")))
    delete_account, _ = guarded_tools()
    with sightline.trace("run") as run, pytest.raises(ToolDenied):
        delete_account("u-1")
    decision = sightline_capture.one(type="decision")
    assert decision.name == "authorize:delete_account"
    assert decision.status.value == "error"
    assert (decision.error.kind, decision.error.message) == (
        "guardrail",
        "tool 'delete_account' denied: destructive",
    )
    assert decision.parent_span_id == run.span_id
    assert decision.trace_id == run.trace_id
    assert decision.input == {
        "tool": "delete_account",
        "arguments": {"user_id": "u-1", "reason": ""},
    }
    assert decision.output == {"decision": "deny", "reason": "destructive"}
    assert decision.metadata == {"governance": True}
    assert sightline_capture.one(type="run").status.value == "ok"


@pytest.mark.parametrize("answer", [False, "deny"])
def test_a_plain_false_or_deny_answer_denies_with_a_default_reason(
    sightline_capture, install, answer
):
    install(Policy(answer))
    delete_account, _ = guarded_tools()
    with pytest.raises(ToolDenied, match="denied by policy"):
        delete_account("u-1")


def test_a_denied_monitored_tool_is_recorded_failed_with_kind_guardrail(sightline_capture, install):
    install(Policy(Decision(False, "no")))

    @sightline.monitor(name="wipe_disk")
    @sightline.guard
    def wipe_disk(device: str) -> None:
        raise AssertionError("must not run")

    with pytest.raises(ToolDenied):
        wipe_disk("/dev/sda")
    tool = sightline_capture.one(type="tool_call")
    decision = sightline_capture.one(type="decision")
    assert (tool.status.value, tool.error.kind, tool.error.type) == (
        "error",
        "guardrail",
        "ToolDenied",
    )
    assert decision.parent_span_id == tool.span_id


def test_an_abstaining_plugin_leaves_the_answer_to_the_next(sightline_capture, install):
    deny = install(Policy(Decision(False, "second says no")), "test-deny")
    abstain = install(Policy(None), "test-abstain")
    delete_account, _ = guarded_tools()
    with pytest.raises(ToolDenied, match="second says no"):
        delete_account("u-1")
    assert len(abstain.calls) == len(deny.calls) == 1


def test_the_first_answer_wins(sightline_capture, install):
    later = install(Policy(Decision(False, "never asked")), "test-later")
    install(Policy(True), "test-first")
    delete_account, _ran = guarded_tools()
    assert delete_account("u-1") == "deleted u-1"
    assert later.calls == []


async def test_a_guarded_coroutine_is_denied_when_awaited(sightline_capture, install):
    install(Policy(lambda tool, args: Decision(args["amount"] <= 100, "over the limit")))

    @sightline.guard(name="refund")
    async def issue_refund(order: str, amount: int) -> str:
        return f"refunded {amount} on {order}"

    assert await issue_refund("o-1", 50) == "refunded 50 on o-1"
    with pytest.raises(ToolDenied, match="over the limit"):
        await issue_refund("o-2", amount=500)
    [decision] = sightline_capture.find(type=EventType.DECISION)
    assert decision.name == "authorize:refund"


# -- redact --------------------------------------------------------------------------------------


def redact_card(tool: str, arguments: dict[str, Any]) -> Decision:
    return Decision(True, "card numbers are masked", {**arguments, "card": "****4242"})


def test_a_redacting_plugin_lets_the_tool_run_with_the_replaced_arguments(
    sightline_capture, install
):
    install(Policy(redact_card))
    received = []

    @sightline.guard
    def charge(card: str, amount: int) -> str:
        received.append((card, amount))
        return "charged"

    assert charge("4111111111114242", amount=30) == "charged"
    assert received == [("****4242", 30)]
    decision = sightline_capture.one(type="decision")
    assert decision.status.value == "ok"
    assert decision.error is None
    assert decision.output == {"decision": "allow_redacted", "reason": "card numbers are masked"}


def test_redacted_values_never_reach_the_recorded_events(sightline_capture, install):
    install(Policy(redact_card))

    @sightline.monitor(name="charge-call")
    def call_charge(amount: int) -> str:
        return charge(card="4111111111114242", amount=amount)

    @sightline.guard
    def charge(card: str, amount: int) -> str:
        return "charged"

    with sightline.trace("checkout"):
        call_charge(30)
    wire = json.dumps([e.to_dict() for e in sightline_capture.events])
    assert "4111111111114242" not in wire
    assert sightline_capture.one(type="decision").input == {
        "tool": "charge",
        "arguments": {"card": "****4242", "amount": 30},
    }


# -- how arguments are passed --------------------------------------------------------------------


def test_a_guarded_tool_with_var_positional_and_var_keyword_arguments_gets_them_unchanged(
    sightline_capture, install
):
    policy = install(Policy(None))

    @sightline.guard
    def search(*queries: str, limit: int = 3, **options: Any) -> Any:
        return queries, limit, options

    assert search("a", "b", limit=2, fuzzy=True) == (("a", "b"), 2, {"fuzzy": True})
    [(_, arguments, _)] = policy.calls
    assert arguments == {"queries": ("a", "b"), "limit": 2, "options": {"fuzzy": True}}


def test_the_policy_sees_the_defaults_the_tool_runs_with(sightline_capture, install):
    # A limit on amount must hold when the caller leaves amount at its default.
    policy = install(
        Policy(lambda tool, args: Decision(args["amount"] <= 100, "over the refund limit"))
    )

    @sightline.guard
    def refund(order: str, amount: int = 5000, *notes: str, **extra: Any) -> str:
        return f"refunded {amount} on {order}"

    with pytest.raises(ToolDenied, match="over the refund limit"):
        refund("o-1")
    assert refund("o-2", 40) == "refunded 40 on o-2"
    assert [arguments for _, arguments, _ in policy.calls] == [
        {"order": "o-1", "amount": 5000},  # an empty *notes / **extra is not shown
        {"order": "o-2", "amount": 40},
    ]


def test_a_guarded_tool_with_positional_only_parameters_gets_them_unchanged(
    sightline_capture, install
):
    install(Policy(None))

    @sightline.guard
    def divide(a: float, b: float, /) -> float:
        return a / b

    assert divide(6, 3) == 2


def test_a_redaction_of_a_var_keyword_argument_reaches_the_tool(sightline_capture, install):
    install(Policy(lambda tool, args: Decision(True, "", {**args, "options": {"token": "***"}})))

    @sightline.guard
    def call_api(path: str, **options: Any) -> Any:
        return path, options

    assert call_api("/v1/me", token="secret-value") == ("/v1/me", {"token": "***"})


def test_a_guarded_method_keeps_its_instance(sightline_capture, install):
    install(Policy(None))

    class Toolbox:
        factor = 3

        @sightline.guard
        def scale(self, x: int) -> int:
            return x * self.factor

    assert Toolbox().scale(2) == 6


def test_a_disabled_client_does_not_consult_the_plugins(install):
    policy = Policy(Decision(False, "no"))
    client = sightline.Client(enabled=False)
    previous = sightline.set_client(client)
    try:
        delete_account, _ran = guarded_tools()
        assert delete_account("u-1") == "deleted u-1"
    finally:
        sightline.set_client(previous)
    assert policy.calls == []


def test_enforced_says_whether_a_policy_is_registered(sightline_capture, install):
    from sightline.governance import enforced

    client = sightline_capture.client
    assert enforced(client) is False
    assert enforced() is False  # the global client (the capture's)
    install(Policy(None))
    assert enforced(client) is True and enforced() is True
    disabled = sightline.Client(exporters=["memory"], enabled=False)
    assert enforced(disabled) is False
    assert enforced(object()) is False  # never raises


def test_the_decision_event_names_the_agent_the_policy_was_told(sightline_capture, install):
    from sightline.governance import authorize

    install(Policy(Decision(False, "no")))
    delete_account, _ = guarded_tools()
    with sightline.trace("run", agent="ops-bot"), pytest.raises(ToolDenied):
        delete_account("u-1")
    with pytest.raises(ToolDenied):
        authorize("wipe", {}, agent="framework-agent")  # an integration knowing its agent
    assert [d.agent for d in sightline_capture.find(type="decision")] == [
        "ops-bot",
        "framework-agent",
    ]


def test_an_integration_naming_the_tools_run_gets_the_decision_under_it(sightline_capture, install):
    # A framework's tool run whose span is made later: known only by its ids.
    from sightline.governance import authorize

    policy = install(Policy(Decision(False, "no")))
    trace_id, span_id = "0" * 31 + "7", "00000000000000a1"
    with sightline.trace("elsewhere"), pytest.raises(ToolDenied):
        authorize("wipe", {"all": True}, framework="x", run=(trace_id, span_id))
    [(_, _, context)] = policy.calls
    assert (context["trace_id"], context["span_id"]) == (trace_id, span_id)
    [decision] = sightline_capture.find(type="decision")
    assert (decision.trace_id, decision.parent_span_id) == (trace_id, span_id)


def test_log_event_under_a_span_known_by_its_ids(sightline_capture):
    client = sightline.get_client()
    with sightline.trace("ambient"):
        event = client.log_event("tool_call", "t", trace_id="ab" * 16, parent_span_id="cd" * 8)
    assert event is not None
    assert (event.trace_id, event.parent_span_id) == ("ab" * 16, "cd" * 8)
