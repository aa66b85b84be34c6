"""Budget extension instead of a dead run: a per-run cap the policy marks extendable pauses the run
(worker freed) with a budget_extension decision; approved raises that run's cap only, refused or
expired ends it budget_exceeded. Daily caps are never extendable. Real controller, PostgreSQL, the
scripted planner, and the hostile-model harness (real anthropic SDK) for real model spend."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from agentops.approvals.models import Approval
from agentops.approvals.services import InvalidDecision, approval_decide, approvals_expire
from agentops.guardrails.budgets import run_budget
from agentops.runs.controller import execute_run
from agentops.runs.models import Run, StepKind
from dashboard.timeline import budget_bars
from tests.adversarial.conftest import attack, effects, hostile, installation_secrets  # noqa: F401  the hostile-model harness
from tests.fakes.anthropic_server import message, tool_use
from tests.support.takeover import resumed_after_a_takeover
from tests.support.tools import lines

EXTENDABLE = ["cost", "tokens", "tool_calls", "iterations", "wall_clock"]


def call(name: str, **arguments: Any) -> dict:
    return {"name": name, "arguments": arguments}


def turn(*calls: dict, text: str = "working") -> dict:
    return {"text": text, "tool_calls": list(calls)}


def appends(path, n: int) -> list[dict]:
    return [turn(call("test_append", text=f"effect {i}")) for i in range(n)] + [{"text": "done"}]


def decide(run: Run, *, approve: bool = True, answer: str | None = None) -> Run:
    approval_decide(approval=Approval.objects.get(run=run, status="pending"), actor="cli:ops", approve=approve, answer=answer)
    execute_run(run.pk)
    run.refresh_from_db()
    return run


@pytest.fixture
def capped(make_agent, start_run, tmp_path):
    """A run that reaches its tool-call cap of 2 with two more effects to go."""

    def make(n: int = 4, **policy: Any) -> tuple[Run, Any]:
        effects = tmp_path / "effects"
        agent = make_agent(
            script=appends(effects, n),
            grants={"test_append": {"path": str(effects)}},
            policy={"max_tool_calls": 2, "extendable_caps": ["tool_calls"], **policy},
        )
        return start_run(agent), effects

    return make


def test_reaching_an_extendable_cap_asks_a_person_and_the_run_waits_with_its_worker_freed(capped):
    run, effects = capped()
    assert run.status == "waiting_approval" and run.lease_owner == ""
    assert len(lines(effects)) == 2
    ask = Approval.objects.get(run=run)
    assert ask.kind == "budget_extension" and ask.tool_call_id == "budget:tool_calls:1" and ask.on_expiry == "halt"
    assert ask.request == {"cap": "tool_calls", "limit": "2", "used": "2", "extend_by": "1"}
    assert ask.reason == "tool-call cap 2 reached (used 2); extend by 1?"
    assert ask.evidence["spend"]["tool_calls"] == 2 and ask.evidence["trace"], "the person sees the spend and the latest steps"
    assert run.steps.filter(kind=StepKind.GUARDRAIL, payload__guard="budget", payload__measure="tool_calls").exists()


def test_an_approved_extension_raises_this_runs_cap_only_and_the_meters_show_it(capped):
    run, effects = capped()
    other, _ = capped()
    run = decide(run, answer="2")
    assert len(lines(effects)) == 4 + 2, "both runs wrote to the same file: this one did its last two effects"
    assert run.status == "succeeded" and run.outcome == "acted" and run.tool_calls == 4
    assert run_budget(run).max_tool_calls == 4 and run_budget(other).max_tool_calls == 2
    bars = {bar.label: bar for bar in budget_bars(run, run.agent.policy)}
    assert bars["Tool calls"].cap == "4" and bars["Tool calls"].value == "4"
    assert other.status == "waiting_approval"


def test_a_refused_extension_ends_the_run_budget_exceeded_and_nothing_more_happens(capped):
    run, effects = capped()
    run = decide(run, approve=False)
    assert run.status == "budget_exceeded" and run.outcome == "budget"
    assert "refused by cli:ops" in run.status_reason and len(lines(effects)) == 2


def test_an_extension_nobody_gives_in_time_ends_the_run_budget_exceeded(capped):
    run, effects = capped()
    Approval.objects.filter(run=run).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert approvals_expire() == 1
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "budget_exceeded" and "not extended in time" in run.status_reason and len(lines(effects)) == 2


def test_the_run_asks_at_most_max_extensions_per_run_times(capped):
    run, effects = capped(6, max_extensions_per_run=2)
    run = decide(run, answer="1")
    assert run.status == "waiting_approval" and Approval.objects.filter(run=run).count() == 2
    second = Approval.objects.get(run=run, status="pending")
    # The second question shows this run's cap as it is now, the first extension included.
    assert second.request["limit"] == "3" and second.evidence["spend"]["max_tool_calls"] == 3
    run = decide(run, answer="1")
    assert run.status == "budget_exceeded" and "the most its policy allows" in run.status_reason
    assert Approval.objects.filter(run=run).count() == 2 and len(lines(effects)) == 4


def test_an_extension_must_be_a_positive_whole_number_for_a_counted_cap(capped):
    run, _ = capped()
    ask = Approval.objects.get(run=run)
    for bad in ("0", "-1", "1.5", "many"):
        with pytest.raises(InvalidDecision):
            approval_decide(approval=ask, actor="cli:ops", approve=True, answer=bad)
    assert Approval.objects.get(pk=ask.pk).status == "pending"


def test_a_cap_the_policy_does_not_list_ends_the_run_as_before(capped):
    run, _ = capped(extendable_caps=["cost"])
    assert run.status == "budget_exceeded" and not Approval.objects.filter(run=run).exists()


def test_daily_caps_are_never_extendable(make_agent, start_run, tmp_path):
    effects = tmp_path / "effects"
    agent = make_agent(
        script=appends(effects, 3), grants={"test_append": {"path": str(effects)}}, policy={"extendable_caps": EXTENDABLE, "daily_action_caps": {"write": 1}}
    )
    run = start_run(agent)
    assert run.status == "budget_exceeded" and "daily cap" in run.status_reason
    assert not Approval.objects.filter(run=run).exists() and len(lines(effects)) == 1


def test_alarms_still_fire_on_the_way_to_an_extendable_cap(capped):
    run, _ = capped(alarm_tool_calls=1)
    assert run.status == "waiting_approval"
    assert list(run.steps.filter(kind=StepKind.ALARM).values_list("payload__measure", flat=True)) == ["tool_calls"]


def test_the_cost_question_names_the_cap_the_spend_and_half_the_cap_and_the_approved_amount_applies(make_agent, start_run):
    agent = make_agent(script=[{"text": "done"}], policy={"max_cost_usd": Decimal("2"), "budget_set_by_person": True, "extendable_caps": ["cost"]})
    run = start_run(agent, execute=False)
    Run.objects.filter(pk=run.pk).update(cost_usd=Decimal("2.013"))  # spent by model calls before this turn
    execute_run(run.pk)
    run.refresh_from_db()
    ask = Approval.objects.get(run=run)
    assert ask.reason == "cost cap $2.00 reached (spent $2.01); extend by $1.00?"
    assert ask.request == {"cap": "cost", "limit": "2.000000", "used": "2.013000", "extend_by": "1.00"}
    run = decide(run, answer="0.5")
    assert run_budget(run).max_cost_usd == Decimal("2.5") and run.status == "failed" and run.outcome == "no_change"


def test_time_waiting_for_a_person_does_not_count_toward_the_wall_clock_cap(make_agent, start_run):
    script = [turn(call("ask_person", question="Go?")), turn(call("wait", seconds=0.5)), {"text": "done"}]
    run = start_run(make_agent(script=script, grants={"ask_person": {}, "wait": {}}, policy={"max_wall_clock_s": 2}))
    assert run.status == "waiting_approval"
    time.sleep(2.5)  # longer than the whole cap, spent waiting for a person
    run = decide(run, answer="go")
    assert run.status == "failed" and run.outcome == "no_change", run.status_reason
    assert run.active_seconds < 2


def test_the_wall_clock_cap_reached_inside_a_call_asks_for_more_time(make_agent, start_run):
    script = [turn(call("wait", seconds=5)), turn(call("test_echo", text="after")), {"text": "done"}]
    agent = make_agent(script=script, grants={"wait": {}, "test_echo": {}}, policy={"max_wall_clock_s": 1, "extendable_caps": ["wall_clock"]})
    started = time.monotonic()
    run = start_run(agent)
    assert time.monotonic() - started < 4, "the call was cut at the cap, not waited out"
    assert run.status == "waiting_approval"
    ask = Approval.objects.get(run=run)
    assert ask.request["cap"] == "wall_clock" and ask.request["limit"] == "1" and ask.reason.startswith("wall-clock cap 1 s reached")
    assert run.steps.filter(kind=StepKind.OBSERVATION, payload__output__startswith="Cancelled").exists()
    run = decide(run, answer="9")
    assert run.status == "failed" and run.outcome == "no_change" and run.iterations == 3


def test_a_takeover_after_an_approved_extension_keeps_the_raised_cap_and_asks_nothing_again(capped, monkeypatch):
    run, effects = capped()
    assert execute_run(run.pk, owner="worker-x") == "not-claimed", "a run waiting for a person belongs to no worker"
    approval_decide(approval=Approval.objects.get(run=run), actor="cli:ops", approve=True, answer="2")
    run = resumed_after_a_takeover(run, monkeypatch)
    assert run.status == "succeeded" and run.tool_calls == 4 and len(lines(effects)) == 4
    assert Approval.objects.filter(run=run).count() == 1 and run.attempts == 3


@pytest.mark.django_db
def test_a_real_model_that_spends_past_an_extendable_cost_cap_waits_and_goes_on_once_a_person_extends_it(attack, hostile, effects):
    policy = {
        "max_tokens": 10**9,
        "max_cost_usd": Decimal("0.05"),
        "budget_set_by_person": True,
        "max_tool_calls": 100,
        "max_iterations": 100,
        "max_wall_clock_s": 3600,
        "extendable_caps": ["cost"],
    }
    expensive = message("Spending.", [tool_use("test_append", {"text": "after the cap"})], input_tokens=20_000, output_tokens=3_000)
    run = attack([expensive], grants={"test_append": {"path": str(effects)}}, policy=policy)
    assert run.status == "waiting_approval", (run.status, run.status_reason)
    ask = Approval.objects.get(run=run)
    assert ask.request["cap"] == "cost" and Decimal(ask.request["used"]) > Decimal("0.05")
    assert lines(effects) == [], "the turn that crossed the cap executed none of its calls"
    run = decide(run, answer="0.45")
    assert run.status == "succeeded", (run.status, run.status_reason)
    assert len(lines(effects)) == 1 and len(hostile.requests) == 2
