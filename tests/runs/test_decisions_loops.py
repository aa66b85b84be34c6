"""Loop recovery: the controller nudges the model first, then (policy) asks a person continue/stop, then
stops; calls that only wait are never a loop. Scripted planner over the real controller and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone

from agentops.approvals.models import Approval
from agentops.approvals.services import approval_decide, approvals_expire
from agentops.runs import conversation as conv
from agentops.runs.controller import execute_run
from agentops.runs.models import Run, Step, StepKind
from agentops.runs.turns import ModelTurns

NUDGE = "The controller detected a loop"


def call(name: str, **arguments: Any) -> dict:
    return {"name": name, "arguments": arguments}


def turn(*calls: dict, text: str = "trying") -> dict:
    return {"text": text, "tool_calls": list(calls)}


def loop_steps(run: Run) -> list[dict]:
    return [s.payload for s in run.steps.filter(kind=StepKind.GUARDRAIL, payload__guard="loop_detector").order_by("seq")]


def observations(run: Run) -> list[dict]:
    return [s.payload for s in run.steps.filter(kind=StepKind.OBSERVATION).order_by("seq")]


def rebuilt_messages(run: Run) -> list[dict]:
    """The conversation a worker taking the run over would show the model."""
    return conv.rebuild(list(Step.objects.filter(run=run).order_by("seq")), {}, run.context or {}).messages


def texts(messages: list[dict]) -> list[str]:
    return [b["text"] for m in messages if m["role"] == "user" and isinstance(m["content"], list) for b in m["content"] if b.get("type") == "text"]


@pytest.fixture
def dies_once(monkeypatch):
    """The next model call fails as if the database went away: the worker gives up the run with its
    lease still set (``database-unavailable``), and another worker takes it over once it expires."""

    def arm() -> None:
        real = ModelTurns.take
        state = {"armed": True}

        def take(self: ModelTurns) -> None:
            if state["armed"]:
                state["armed"] = False
                raise OperationalError("terminating connection due to administrator command")
            real(self)

        monkeypatch.setattr(ModelTurns, "take", take)

    return arm


def take_over(run: Run) -> str:
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    return execute_run(run.pk, owner="worker-2")


def test_the_first_detection_nudges_the_model_by_name_and_the_next_one_stops_the_run(make_agent, start_run):
    agent = make_agent(script=[turn(call("test_fail", what="deploy")) for _ in range(8)], grants={"test_fail": {}})
    assert agent.policy.loop_escalation == "nudge"
    run = start_run(agent)
    assert run.status == "failed" and run.outcome == "loop" and "loop detected" in run.status_reason
    nudge, stop = loop_steps(run)
    assert nudge["escalation"] == "nudge" and nudge["stops_run"] is False and "failed 3 times" in nudge["reason"]
    assert nudge["note"] == f"{NUDGE}: {nudge['reason']}. Change approach or finish; the next detection stops the run."
    assert stop["stops_run"] is True and "failed 4 times" in stop["reason"]
    # The model was told once, after the third failure, and the fourth repeat ended the run.
    assert len(observations(run)) == 4 and run.iterations == 4
    assert texts(rebuilt_messages(run)) == [nudge["note"]]


def test_a_nudge_at_a_proposed_call_refuses_that_call_with_the_message_as_its_observation(make_agent, start_run):
    script = [turn(call("test_echo", text="ping" if i % 2 == 0 else "pong")) for i in range(12)]
    run = start_run(make_agent(script=script, grants={"test_echo": {}}))
    nudged = [o for o in observations(run) if o.get("refused") == "loop_detector"]
    assert len(nudged) == 1 and nudged[0]["output"].startswith(f"{NUDGE}: A-B-A-B pattern")
    assert nudged[0]["counts_for_loops"] is False and nudged[0]["is_error"] is True
    assert loop_steps(run)[0]["tool_call_id"] == nudged[0]["tool_call_id"]
    assert run.status == "failed" and run.outcome == "loop"
    # The refused call is a tool call and a refused one, like every refusal.
    assert run.refused_calls == 1 and run.tool_calls == len(observations(run))


def test_the_stop_policy_stops_at_the_first_detection_as_before(make_agent, start_run):
    run = start_run(make_agent(script=[turn(call("test_fail")) for _ in range(8)], grants={"test_fail": {}}, policy={"loop_escalation": "stop"}))
    assert run.status == "failed" and run.outcome == "loop"
    assert len(observations(run)) == 3 and [s.get("escalation") for s in loop_steps(run)] == [None]


def nudge_ask_agent(make_agent, n: int = 12):
    return make_agent(script=[turn(call("test_fail", what="deploy")) for _ in range(n)], grants={"test_fail": {}}, policy={"loop_escalation": "nudge_ask"})


def test_nudge_ask_asks_a_person_and_continue_starts_the_counters_again_then_the_next_detection_stops(make_agent, start_run):
    run = start_run(nudge_ask_agent(make_agent))
    # Nudged after the third failure, asked after the fourth: the run waits with its worker freed.
    assert run.status == "waiting_approval" and run.lease_owner == ""
    decision = Approval.objects.get(run=run)
    nudge = loop_steps(run)[0]
    assert decision.kind == "loop_escalation" and decision.tool_call_id == "loop:1" and decision.on_expiry == "halt"
    assert decision.request["pattern"] == "same_failing_call" and "failed 4 times" in decision.request["detail"]
    assert decision.request["nudged_at_seq"] == run.steps.get(kind=StepKind.GUARDRAIL, payload__escalation="nudge").seq
    assert nudge["escalation"] == "nudge" and len(observations(run)) == 4
    approval_decide(approval=decision, actor="cli:ops", approve=True, answer="continue")
    assert execute_run(run.pk) == "failed"
    run.refresh_from_db()
    assert [s.get("escalation") for s in loop_steps(run)] == ["nudge", "ask", "continue", None]
    # After "continue" the same call may fail three more times before the loop is seen again; then it stops.
    assert len(observations(run)) == 7
    assert run.status == "failed" and run.outcome == "loop" and Approval.objects.filter(run=run).count() == 1


def test_a_person_who_says_stop_ends_the_run_as_a_loop_stopped_by_a_person(make_agent, start_run):
    run = start_run(nudge_ask_agent(make_agent))
    approval_decide(approval=Approval.objects.get(run=run), actor="cli:ops", approve=False)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and run.outcome == "loop"
    assert "chose to stop" in run.status_reason and "cli:ops" in run.status_reason
    assert len(observations(run)) == 4 and run.iterations == 4


def test_a_loop_question_nobody_answers_in_time_halts_the_run(make_agent, start_run):
    run = start_run(nudge_ask_agent(make_agent))
    Approval.objects.filter(run=run).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert approvals_expire() == 1
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and run.outcome == "loop" and "no one decided in time" in run.status_reason
    assert len(observations(run)) == 4


def test_a_run_waiting_on_a_loop_question_cannot_be_claimed_and_a_takeover_after_continue_does_not_ask_again(make_agent, start_run, dies_once):
    run = start_run(nudge_ask_agent(make_agent))
    assert execute_run(run.pk, owner="worker-x") == "not-claimed", "a waiting run belongs to no worker"
    approval_decide(approval=Approval.objects.get(run=run), actor="cli:ops", approve=True, answer="continue")
    dies_once()
    assert execute_run(run.pk, owner="worker-1") == "database-unavailable"
    assert [s.get("escalation") for s in loop_steps(Run.objects.get(pk=run.pk))] == ["nudge", "ask", "continue"]
    assert take_over(run) == "failed"
    run.refresh_from_db()
    # The new worker replayed the nudge, the question and the reset from the steps: same end, one question.
    assert [s.get("escalation") for s in loop_steps(run)] == ["nudge", "ask", "continue", None]
    assert len(observations(run)) == 7 and Approval.objects.filter(run=run).count() == 1
    assert run.status == "failed" and run.outcome == "loop"


def test_a_nudge_survives_a_takeover_the_model_still_sees_it_and_the_next_detection_stops(make_agent, start_run, dies_once, monkeypatch):
    agent = make_agent(script=[turn(call("test_fail", what="deploy")) for _ in range(8)], grants={"test_fail": {}})
    shown: list[list[dict]] = []
    real = ModelTurns.call_planner

    def spy(self: ModelTurns, **kw: Any) -> Any:
        shown.append([dict(m) for m in kw["messages"]])
        return real(self, **kw)

    monkeypatch.setattr(ModelTurns, "call_planner", spy)
    run = start_run(agent, execute=False)
    # Three failures, then the nudge; the worker dies at the model call right after it.
    real_take = ModelTurns.take
    calls = {"n": 0}

    def take(self: ModelTurns) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OperationalError("the database went away")
        real_take(self)

    monkeypatch.setattr(ModelTurns, "take", take)
    assert execute_run(run.pk, owner="worker-1") == "database-unavailable"
    assert [s["escalation"] for s in loop_steps(Run.objects.get(pk=run.pk))] == ["nudge"]
    assert take_over(run) == "failed"
    run.refresh_from_db()
    assert [s.get("escalation") for s in loop_steps(run)] == ["nudge", None], "no second nudge after the takeover"
    assert run.status == "failed" and run.outcome == "loop" and len(observations(run)) == 4
    # The new worker showed the model the nudge, rebuilt from the steps.
    assert any(NUDGE in t for t in texts(shown[-1]))


def test_calls_that_only_wait_are_never_a_loop(make_agent, start_run):
    script = [turn(call("wait", seconds=0)) for _ in range(10)] + [{"text": "done"}]
    run = start_run(make_agent(script=script, grants={"wait": {}}))
    assert loop_steps(run) == []
    assert run.tool_calls == 10 and run.outcome == "no_change"
    assert all(o["counts_for_loops"] is False for o in observations(run))


def test_a_slow_call_streaming_progress_is_one_action_not_a_loop(make_agent, start_run):
    # Like a long test run printing as it goes: many progress steps, one call.
    pieces = [f"test_{i} PASSED\n" for i in range(40)]
    script = [turn(call("test_stream", pieces=pieces, pause_s=0.02)), {"text": "done"}]
    run = start_run(make_agent(script=script, grants={"test_stream": {}}))
    assert run.steps.filter(kind=StepKind.PROGRESS).count() >= 2
    assert loop_steps(run) == [] and run.tool_calls == 1 and run.outcome == "no_change"


def test_waiting_for_a_persons_answers_is_not_a_loop_even_when_the_answers_are_the_same(make_agent, start_run):
    questions = ["Deploy to eu-1?", "Deploy to eu-2?", "Deploy to us-1?", "Deploy to us-2?", "Deploy to ap-1?"]
    script = [turn(call("ask_person", question=q, options=["yes", "no"])) for q in questions] + [{"text": "done"}]
    run = start_run(make_agent(script=script, grants={"ask_person": {}}))
    for _ in questions:
        assert run.status == "waiting_approval"
        approval_decide(approval=Approval.objects.get(run=run, status="pending"), actor="cli:ops", approve=True, answer="yes")
        execute_run(run.pk)
        run.refresh_from_db()
    assert loop_steps(run) == []
    assert [o["output"] for o in observations(run)] == ["A person answered: yes"] * 5
    assert run.tool_calls == 5 and run.status in ("failed", "succeeded") and run.outcome == "no_change"
