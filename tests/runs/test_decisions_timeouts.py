"""The timeout policy of a grant: an approval nobody decides in time halts the run (the default, fail
closed) or, with on_timeout=continue, tells the model the call did not run and lets it go on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agentops.agents.models import ToolGrant
from agentops.approvals.models import Approval
from agentops.approvals.services import approvals_expire
from agentops.runs.controller import execute_run
from agentops.runs.models import Run, StepKind
from tests.support.tools import lines


def pay_script() -> list[dict]:
    return [{"text": "Paying.", "tool_calls": [{"name": "test_pay", "arguments": {"text": "100 EUR"}}]}, {"text": "I could not pay."}]


@pytest.fixture
def paying(make_agent, start_run, tmp_path):
    def make(on_timeout: str | None = None, approver_group: str = "") -> tuple[Run, object]:
        ledger = tmp_path / "payments"
        agent = make_agent(script=pay_script(), grants={"test_pay": {"path": str(ledger)}}, trust_phase=3)
        if on_timeout:
            ToolGrant.objects.filter(agent=agent).update(on_timeout=on_timeout, approver_group=approver_group)
        run = start_run(agent)
        assert run.status == "waiting_approval"
        return run, ledger

    return make


def expire(run: Run) -> Run:
    Approval.objects.filter(run=run).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert approvals_expire() == 1
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def last_observation(run: Run) -> dict:
    return run.steps.filter(kind=StepKind.OBSERVATION).order_by("-seq").first().payload


def test_the_grants_timeout_policy_and_approver_group_are_copied_onto_the_decision(paying):
    run, _ = paying("continue", "payments")
    approval = Approval.objects.get(run=run)
    assert approval.on_expiry == "continue" and approval.approver_group == "payments"
    assert run.steps.get(kind=StepKind.APPROVAL_REQUEST).payload["on_expiry"] == "continue"


def test_by_default_an_approval_nobody_decides_in_time_halts_the_run_and_the_call_never_runs(paying):
    run, ledger = paying()
    assert Approval.objects.get(run=run).on_expiry == "halt"
    run = expire(run)
    assert run.status == "failed" and run.outcome == "refused" and "in time" in run.status_reason
    assert run.iterations == 1, "the model was not asked to go on"
    assert "Expired" in last_observation(run)["output"] and not lines(ledger)
    assert run.steps.filter(kind=StepKind.GUARDRAIL, payload__guard="approval_timeout").exists()


def test_with_on_timeout_continue_the_model_is_told_the_call_did_not_run_and_goes_on(paying):
    run, ledger = paying("continue")
    run = expire(run)
    observation = last_observation(run)
    assert observation["output"] == "Not approved in time; the call did not run." and observation["is_error"] is True
    assert observation["refused"] == "approval_expired" and run.refused_calls == 1
    assert run.iterations == 2 and run.status == "failed" and run.outcome == "refused" and not lines(ledger)
