"""Races around a decision: a person deciding while the kill switch is engaged. The switch wins or
the decision wins, never both: the run ends killed, and nothing the decision allowed happens."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from agentops.approvals.models import Approval
from agentops.approvals.services import AlreadyDecided, approval_decide
from agentops.guardrails.killswitch import kill_switch_engage, kill_switch_release
from agentops.runs.controller import execute_run
from agentops.runs.models import StepKind
from tests.support.tools import lines

KINDS = {
    # kind: (script, grants, policy, the answer that lets the run go on)
    "approval": (lambda p: [{"text": "pay", "tool_calls": [{"name": "test_pay", "arguments": {"text": "100"}}]}], "test_pay", {}, None),
    "question": (lambda p: [{"text": "ask", "tool_calls": [{"name": "ask_person", "arguments": {"question": "Pay?"}}]}], "ask_person", {}, "yes"),
    "budget_extension": (
        lambda p: [{"text": "pay", "tool_calls": [{"name": "test_append", "arguments": {"text": f"{i}"}}]} for i in range(3)],
        "test_append",
        {"max_tool_calls": 1, "extendable_caps": ["tool_calls"]},
        "5",
    ),
    "loop_escalation": (
        lambda p: [{"text": "again", "tool_calls": [{"name": "test_append", "arguments": {"text": "same"}}]} for _ in range(8)],
        "test_append",
        {"loop_escalation": "nudge_ask"},
        "continue",
    ),
}


def race(decision_pk: int, answer: str | None, *, decide_late: float, kill_late: float, reason: str) -> str:
    """A person decides while the kill switch is engaged, each in its own thread and connection;
    "won" or "lost" for the person."""
    barrier = threading.Barrier(2)
    result: dict[str, str] = {}

    def decide() -> None:
        try:
            barrier.wait()
            time.sleep(decide_late)
            approval_decide(approval=Approval.objects.get(pk=decision_pk), actor="cli:ops", approve=True, answer=answer)
            result["decide"] = "won"
        except AlreadyDecided:
            result["decide"] = "lost"
        finally:
            connection.close()

    def kill() -> None:
        try:
            barrier.wait()
            time.sleep(kill_late)
            kill_switch_engage(actor="cli:ops", reason=reason)
            result["kill"] = "engaged"
        finally:
            connection.close()

    threads = [threading.Thread(target=decide), threading.Thread(target=kill)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert result.get("kill") == "engaged", "the kill switch never fails because someone decided at that moment"
    return result["decide"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", list(KINDS))
def test_deciding_while_the_kill_switch_is_engaged_ends_the_run_killed_and_never_both(kind, make_agent, start_run, tmp_path):
    script, tool, policy, answer = KINDS[kind]
    outcomes: list[str] = []
    # Who goes first: at the same instant, or one of them a moment late (so that both orders happen).
    for attempt, (decide_late, kill_late) in enumerate([(0, 0), (0.2, 0), (0, 0), (0.2, 0), (0, 0.2)]):
        ledger = tmp_path / f"effects-{attempt}"
        scope: dict[str, Any] = {"path": str(ledger)} if tool != "ask_person" else {}
        run = start_run(make_agent(script=script(ledger), grants={tool: scope}, trust_phase=3, policy=policy))
        assert run.status == "waiting_approval", (kind, run.status, run.status_reason)
        decision = Approval.objects.get(run=run, status="pending")
        assert decision.kind == kind
        effects_before = len(lines(ledger))
        outcome = race(decision.pk, answer, decide_late=decide_late, kill_late=kill_late, reason=f"race {attempt}")
        # A worker picking up the resume (if the decision won) finds the run killed.
        assert execute_run(run.pk) == "not-claimed"
        run.refresh_from_db()
        decided = Approval.objects.get(pk=decision.pk)
        assert run.status == "killed" and run.outcome == "killed_by_switch", (kind, run.status)
        if outcome == "won":
            assert decided.status == "approved" and decided.decided_by_label == "cli:ops"
        else:
            assert decided.status == "rejected" and decided.decided_by_label == "system"
        assert run.steps.filter(kind=StepKind.APPROVAL_DECISION).count() <= 1
        assert len(lines(ledger)) == effects_before, "nothing the decision allowed happened"
        outcomes.append(outcome)
        kill_switch_release(actor="cli:ops", reason="next attempt")
    assert set(outcomes) == {"won", "lost"}, f"both orders were exercised: {outcomes}"
