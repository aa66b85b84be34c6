"""Attacks on the limits: each per-run budget, the daily caps, the rate of work. The model reports
its own usage (it may lie big) and never decides when to stop."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agentops.audit.models import AuditEvent
from agentops.runs.models import Run
from tests.adversarial.checks import assert_not_crashed, explaining_step
from tests.fakes.anthropic_server import delay, message, tool_use
from tests.support.tools import lines

BIG = {"max_tokens": 10**9, "max_cost_usd": Decimal("1000"), "max_tool_calls": 1000, "max_iterations": 1000, "max_wall_clock_s": 3600}


def append_grant(effects):
    return {"test_append": {"path": str(effects)}, "test_echo": {}}


@pytest.mark.parametrize(
    ("measure", "policy", "usage"),
    [
        ("tokens", {"max_tokens": 5000}, {"input_tokens": 120_000, "output_tokens": 10}),
        ("cost_usd", {"max_cost_usd": Decimal("0.05")}, {"input_tokens": 400_000, "output_tokens": 50_000}),
    ],
)
def test_a_turn_that_crosses_a_spend_cap_executes_none_of_its_calls(attack, hostile, effects, measure, policy, usage):
    run = attack(
        [message("Spending.", [tool_use("test_append", {"text": "after the cap"})], **usage)],
        grants=append_grant(effects),
        policy={**BIG, **policy},
    )
    assert run.status == "budget_exceeded", (run.status, run.status_reason)
    step = explaining_step(run, measure, kinds=("guardrail",))
    assert step.get("guard") == "budget"
    assert lines(effects) == []
    assert len(hostile.requests) == 1


def test_the_tool_call_cap_stops_the_fourth_side_effect(attack, hostile, effects):
    counter = iter(range(1000))
    run = attack(
        [],
        grants=append_grant(effects),
        policy={**BIG, "max_tool_calls": 3},
        then=lambda body: message("More.", [tool_use("test_append", {"text": f"effect {next(counter)}"})]),
    )
    assert run.status == "budget_exceeded", (run.status, run.status_reason)
    explaining_step(run, "tool_calls", kinds=("guardrail",))
    assert len(lines(effects)) == 3


def test_the_iteration_cap_stops_a_model_that_never_finishes(attack, hostile):
    counter = iter(range(1000))
    run = attack(
        [],
        grants={"test_echo": {}},
        policy={**BIG, "max_iterations": 3},
        then=lambda body: message("Thinking more.", [tool_use("test_echo", {"text": f"page {next(counter)} of the manual"})]),
    )
    assert run.status == "budget_exceeded", (run.status, run.status_reason)
    explaining_step(run, "iterations", kinds=("guardrail",))
    assert len(hostile.requests) == 3


def test_the_wall_clock_cap_stops_a_slow_model_before_its_calls_run(attack, hostile, effects, settings):
    settings.ANTHROPIC_TIMEOUT_S = 10
    run = attack(
        [delay(2.5, message("Slowly.", [tool_use("test_append", {"text": "late"})]))], grants=append_grant(effects), policy={**BIG, "max_wall_clock_s": 2}
    )
    assert run.status == "budget_exceeded", (run.status, run.status_reason)
    explaining_step(run, "wall_clock", kinds=("guardrail",))
    assert lines(effects) == []


def test_the_daily_cost_cap_refuses_the_model_call_and_says_so(attack, hostile, make_agent, effects):
    from agentops.guardrails.daily import daily_add

    agent = make_agent(trust_phase=1, config={"planner": "anthropic"}, grants=append_grant(effects), policy={**BIG, "daily_max_cost_usd": Decimal("1")})
    daily_add(agent_id=agent.pk, key="cost_usd", amount=Decimal("1"))
    run = attack([message("Spending tomorrow's money.", [tool_use("test_append", {"text": "x"})])], agent=agent)
    assert run.status == "budget_exceeded", (run.status, run.status_reason)
    explaining_step(run, "daily", kinds=("guardrail",))
    assert hostile.requests == [] and lines(effects) == []


def test_the_daily_action_cap_stops_the_third_write(attack, hostile, effects):
    counter = iter(range(1000))
    run = attack(
        [],
        grants=append_grant(effects),
        policy={**BIG, "daily_action_caps": {"tool:test_append": 2}},
        then=lambda body: message("Again.", [tool_use("test_append", {"text": f"write {next(counter)}"})]),
    )
    assert run.status == "budget_exceeded", (run.status, run.status_reason)
    explaining_step(run, "daily", kinds=("guardrail",))
    assert len(lines(effects)) == 2


def test_the_daily_run_cap_refuses_a_second_run_before_any_model_call(attack, hostile, make_agent, start_run):
    from agentops.runs.services import RunRefused

    agent = make_agent(trust_phase=1, config={"planner": "anthropic"}, grants={"test_echo": {}}, policy={**BIG, "daily_max_runs": 1})
    first = attack([message("Done.")], agent=agent)
    assert first.status not in ("queued", "running"), first.status
    requests = len(hostile.requests)
    with pytest.raises(RunRefused, match="daily run cap"):
        start_run(agent, "again", planner_kind="anthropic")
    assert Run.objects.filter(agent=agent).count() == 1
    assert AuditEvent.objects.filter(action="run.refused").exists()
    assert len(hostile.requests) == requests


def test_a_model_that_lies_with_negative_usage_cannot_buy_back_budget(attack, hostile, effects):
    """Usage is data: a negative count must never lower what the run has spent."""
    turns = [
        message("Spending.", [tool_use("test_echo", {"text": "a"})], input_tokens=4000, output_tokens=500),
        message("Refund me.", [tool_use("test_append", {"text": "bought back"})], input_tokens=-1_000_000, output_tokens=-1_000_000),
    ]
    run = attack(turns, grants=append_grant(effects), policy={**BIG, "max_tokens": 5000})
    run.refresh_from_db()
    assert run.status != "succeeded", (run.status, run.status_reason)
    explaining_step(run, "usage", "negative", "malformed", "tokens")
    assert run.total_tokens >= 4500 and run.cost_usd > 0
    assert lines(effects) == []
    assert_not_crashed(run)
