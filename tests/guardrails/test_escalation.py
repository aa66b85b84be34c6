"""The guards' side of human decisions, on plain data: the loop escalation ladder, what a nudge and a
person's "continue" do to the detector, and a run's effective caps (policy + approved extensions)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agentops.guardrails.budgets import approved_extensions, default_extension, describe_amount, extension_question, run_budget
from agentops.guardrails.loops import Action, Detection, LoopDetector, action_key, escalation, nudge_text, shape_key


def failing(detector: LoopDetector, what: str = "x", n: int = 1) -> None:
    for _ in range(n):
        detector.add(Action(action_key("deploy", {"what": what}), "same-error", True, shape_key("deploy", {"what": what})))


@pytest.mark.parametrize(
    ("mode", "ladder"),
    [("stop", ["stop", "stop"]), ("nudge", ["nudge", "stop", "stop"]), ("nudge_ask", ["nudge", "ask", "stop"]), ("bogus", ["stop"])],
)
def test_the_escalation_ladder_climbs_one_rung_per_handled_detection_and_ends_in_a_stop(mode, ladder):
    assert [escalation(mode, handled) for handled in range(len(ladder))] == ladder


def test_a_nudge_resolves_the_detection_but_the_next_repeat_of_the_pattern_is_the_next_detection():
    detector = LoopDetector()
    failing(detector, n=3)
    found = detector.detect()
    assert found is not None and found.pattern == "same_failing_call"
    detector.resolved(found, reset=False)
    assert detector.detect() is None and detector.handled == 1
    failing(detector)  # the model did it again
    again = detector.detect()
    assert again is not None and again.pattern == "same_failing_call" and "4 times" in again.reason


def test_a_persons_continue_starts_the_repetition_counters_again_but_keeps_what_was_rejected():
    detector = LoopDetector()
    failing(detector, n=3)
    found = detector.detect()
    assert found is not None
    detector.resolved(found, reset=False)
    detector.resolved(found, reset=True)  # a person said continue
    failing(detector, n=2)
    assert detector.detect() is None, "the same call may fail twice more before it is a loop again"
    failing(detector)
    assert detector.detect() is not None


def test_continue_keeps_a_rejected_call_rejected():
    detector = LoopDetector()
    key = action_key("pay", {"to": "mallory"})
    for tool_key in (key, action_key("pay", {"to": "a"}), action_key("pay", {"to": "b"})):
        detector.rejected("pay", tool_key)
    found = detector.detect()
    assert found is not None and found.pattern == "rejections"
    detector.resolved(found, reset=True)
    assert detector.detect() is None and detector.was_rejected(key)


def test_an_alternation_is_detected_again_at_once_after_a_nudge_if_the_model_keeps_alternating():
    detector = LoopDetector()
    keys = [action_key("echo", {"t": "a" if i % 2 == 0 else "b"}) for i in range(6)]
    for key in keys[:5]:
        assert detector.detect(key) is None
        detector.add(Action(key, key, False))
    found = detector.detect(keys[5])
    assert found is not None and found.pattern == "alternation"
    detector.resolved(found, reset=False)
    assert detector.detect(keys[5]) is not None, "the refused call changed nothing: proposing it again is the next detection"
    detector.resolved(found, reset=True)
    assert detector.detect(keys[5]) is None


def test_a_detection_survives_the_trip_through_a_step_payload():
    found = Detection("identical_pairs", ("echo:{}", "abc"), "4 identical action/observation pairs")
    assert Detection.from_payload(found.as_payload()) == found
    assert nudge_text(found.reason).startswith("The controller detected a loop: 4 identical")


@pytest.mark.parametrize(
    ("cap", "limit", "proposed", "shown"),
    [
        ("cost", Decimal("2.00"), Decimal("1.00"), "$2.00"),
        ("cost", Decimal("0.01"), Decimal("0.01"), "$0.01"),
        ("tokens", 500_000, Decimal(250_000), "500,000"),
        ("tool_calls", 1, Decimal(1), "1"),
        ("wall_clock", 1800, Decimal(900), "1,800 s"),
    ],
)
def test_an_extension_proposes_half_the_current_cap_and_says_it_in_the_caps_unit(cap, limit, proposed, shown):
    assert default_extension(cap, limit) == proposed
    assert describe_amount(cap, limit) == shown


def test_an_extension_question_says_the_cap_the_spend_and_the_amount_proposed():
    assert (
        extension_question("cost", limit=Decimal("2"), used=Decimal("2.0134"), extend_by=Decimal("1"))
        == "cost cap $2.00 reached (spent $2.01); extend by $1.00?"
    )
    assert extension_question("tool_calls", limit=100, used=100, extend_by=Decimal(50)) == "tool-call cap 100 reached (used 100); extend by 50?"


def decision(run, *, cap: str, answer: str, status: str = "approved", n: int = 1):
    from agentops.approvals.models import Approval

    return Approval.objects.create(
        kind="budget_extension",
        run=run,
        agent=run.agent,
        tool_call_id=f"budget:{cap}:{n}",
        tool="",
        risk_class="read",
        request={"cap": cap, "limit": "1", "used": "1", "extend_by": "1"},
        answer=answer,
        status=status,
        decided_at=None if status == "pending" else timezone.now(),
        expires_at=timezone.now() + timedelta(hours=1),
    )


def test_a_runs_effective_caps_are_the_policys_plus_the_extensions_approved_for_that_run_only(make_agent, start_run):
    agent = make_agent(policy={"max_cost_usd": Decimal("2"), "max_tool_calls": 10, "budget_set_by_person": True})
    run, other = start_run(agent, execute=False), start_run(agent, execute=False)
    decision(run, cap="cost", answer="1.5", n=1)
    decision(run, cap="cost", answer="0.5", n=2)
    decision(run, cap="tool_calls", answer="5", n=3)
    decision(run, cap="tool_calls", answer="100", status="rejected", n=4)
    decision(run, cap="tokens", answer="", status="pending", n=5)
    budget = run_budget(run)
    assert budget.max_cost_usd == Decimal("4") and budget.max_tool_calls == 15
    assert budget.max_tokens == agent.policy.max_tokens
    assert approved_extensions(run) == {"cost": Decimal("2.0"), "tool_calls": Decimal("5")}
    assert run_budget(other).max_cost_usd == Decimal("2") and run_budget(other).max_tool_calls == 10


def test_an_extension_whose_amount_is_not_a_positive_number_extends_nothing(make_agent, start_run):
    run = start_run(make_agent(policy={"max_tool_calls": 10}), execute=False)
    decision(run, cap="tool_calls", answer="lots", n=1)
    decision(run, cap="tool_calls", answer="-5", n=2)
    decision(run, cap="tool_calls", answer="NaN", n=3)
    assert run_budget(run).max_tool_calls == 10
