"""The red button pressed while the model is answering, while a person is asked, and before a run
starts: nothing the model asks for after it happens, and the run says why it stopped."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection

from agentops.approvals.models import Approval
from agentops.runs.models import Run
from tests.adversarial.checks import explaining_step
from tests.fakes.anthropic_server import message, tool_use
from tests.support.tools import lines


def pressing(action: Callable[[], None], then: dict) -> Callable[[dict], dict]:
    """A model whose answer arrives just after a person acted (from the server's thread)."""

    def handler(body: dict) -> dict:
        try:
            action()
        finally:
            connection.close()  # this thread's own connection
        return then

    return handler


def engage() -> None:
    from agentops.guardrails.killswitch import kill_switch_engage

    kill_switch_engage(actor="cli:adversarial", reason="incident 42")


@pytest.mark.parametrize("who", ["kill-switch", "stop", "pause"])
def test_a_stop_during_a_model_call_runs_none_of_the_answers_calls_and_says_why(attack, hostile, effects, make_agent, transactional_db, who):
    from agentops.guardrails.killswitch import agent_pause
    from agentops.runs.services import run_cancel

    agent = make_agent(trust_phase=1, config={"planner": "anthropic"}, grants={"test_append": {"path": str(effects)}})

    def act() -> None:
        run = Run.objects.get(agent=agent)
        if who == "kill-switch":
            engage()
        elif who == "stop":
            run_cancel(run=run, actor="cli:adversarial", reason="looks wrong")
        else:
            agent_pause(agent=agent, actor="cli:adversarial", reason="maintenance")

    answer = message("Writing now.", [tool_use("test_append", {"text": "after the stop"})])
    run = attack([], agent=agent, then=pressing(act, answer))
    assert run.status == "killed", (run.status, run.status_reason)
    explaining_step(run, {"kill-switch": "kill switch", "stop": "person", "pause": "pause"}[who], kinds=("guardrail",))
    assert lines(effects) == []
    assert len(hostile.requests) == 1


def test_the_kill_switch_rejects_a_pending_approval_and_the_action_never_happens(attack, hostile, effects):
    from agentops.approvals.services import AlreadyDecided, approval_decide

    run = attack([message("Paying.", [tool_use("test_pay", {"text": "5000 EUR"})])], grants={"test_pay": {"path": str(effects)}})
    assert run.status == "waiting_approval"
    engage()
    run.refresh_from_db()
    assert run.status == "killed"
    approval = Approval.objects.get(run=run)
    assert approval.status != "pending"
    with pytest.raises(AlreadyDecided):
        approval_decide(approval=approval, actor="cli:adversarial", approve=True)
    assert lines(effects) == []
    explaining_step(run, "kill switch", kinds=("guardrail", "status", "approval_decision"))


def test_no_run_starts_while_the_kill_switch_is_engaged(attack, hostile, make_agent, start_run):
    from agentops.runs.services import RunRefused

    engage()
    agent = make_agent(trust_phase=1, config={"planner": "anthropic"}, grants={"test_echo": {}})
    with pytest.raises(RunRefused, match="kill switch"):
        start_run(agent, "go", planner_kind="anthropic")
    assert not Run.objects.filter(agent=agent).exists()
    assert hostile.requests == []
