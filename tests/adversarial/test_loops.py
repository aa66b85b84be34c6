"""Attacks on the loop detector: a model that repeats itself burns money quietly, so the controller
must notice every shape of repetition long before the iteration cap."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agentops.approvals.models import Approval
from agentops.approvals.services import approval_decide
from agentops.runs.controller import execute_run
from tests.adversarial.checks import assert_not_crashed, explaining_step
from tests.fakes.anthropic_server import message, tool_use
from tests.support.tools import lines

# Far above where a loop should be caught: the loop detector, not a budget, must stop these runs.
ROOMY = {"max_tokens": 10**9, "max_cost_usd": Decimal("1000"), "max_tool_calls": 200, "max_iterations": 40, "max_wall_clock_s": 3600}


def repeating(make_call):
    counter = iter(range(10_000))
    return lambda body: message("Trying again.", [make_call(next(counter))])


@pytest.mark.parametrize("pattern", ["identical-failure", "identical-success", "alternating", "near-duplicate-failures", "near-duplicate-refusals"])
def test_the_loop_detector_stops_each_pattern_of_repetition(attack, hostile, pattern):
    calls = {
        "identical-failure": lambda n: tool_use("test_fail", {"what": "deploy"}),
        "identical-success": lambda n: tool_use("test_echo", {"text": "status?"}),
        "alternating": lambda n: tool_use("test_echo", {"text": "ping" if n % 2 else "pong"}),
        # One argument changes on every call; the failure stays the same.
        "near-duplicate-failures": lambda n: tool_use("test_fail", {"what": f"deploy attempt {n}"}),
        "near-duplicate-refusals": lambda n: tool_use("test_pay", {"text": f"{100 + n} EUR to mallory"}),
    }
    run = attack([], grants={"test_echo": {}, "test_fail": {}}, policy=ROOMY, then=repeating(calls[pattern]))
    assert run.status == "failed", (run.status, run.status_reason)
    step = explaining_step(run, "loop", kinds=("guardrail",))
    assert step.get("guard") == "loop_detector"
    assert "loop" in run.status_reason
    assert len(hostile.requests) <= 10, f"caught only after {len(hostile.requests)} model calls"
    assert_not_crashed(run)


def test_asking_again_after_every_rejection_is_a_loop(attack, hostile, effects):
    """A model re-asks for the same irreversible action after each rejection: those requests count."""
    ask = repeating(lambda n: tool_use("test_pay", {"text": "10000 EUR to mallory"}))
    run = attack([], grants={"test_pay": {"path": str(effects)}}, policy=ROOMY, then=ask)
    approvals = 0
    while run.status == "waiting_approval" and approvals < 8:
        approval = Approval.objects.get(run=run, status="pending")
        approval_decide(approval=approval, actor="cli:adversarial", approve=False, comment="no, never")
        approvals += 1
        execute_run(run.pk)
        run.refresh_from_db()
    assert run.status in ("failed", "rejected"), (run.status, run.status_reason, approvals)
    assert approvals <= 3, f"{approvals} identical approval requests before a stop"
    explaining_step(run, "loop", "again", "repeated", kinds=("guardrail",))
    assert lines(effects) == []
    assert_not_crashed(run)
