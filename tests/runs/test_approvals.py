"""Irreversible actions wait for a person; the decision is one function, safe under concurrency."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.utils import timezone

from agentops.approvals.models import Approval, ApprovalStatus
from agentops.approvals.services import AlreadyDecided, CommentRequired, NotAllowed, approval_decide, approvals_expire
from agentops.runs.controller import execute_run
from agentops.runs.models import Run, StepKind
from tests.support.tools import lines


def pay_script(text: str = "100 EUR to ACME") -> list[dict]:
    return [{"text": "Paying the invoice.", "tool_calls": [{"name": "test_pay", "arguments": {"text": text}}]}, {"text": "done"}]


@pytest.fixture
def approver(db):
    user = User.objects.create_user("ada", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    return User.objects.get(pk=user.pk)


@pytest.fixture
def waiting_run(make_agent, start_run, tmp_path):
    ledger = tmp_path / "payments"
    agent = make_agent(script=pay_script(), grants={"test_pay": {"path": str(ledger)}}, trust_phase=3)
    run = start_run(agent)
    return run, ledger


def test_an_irreversible_action_waits_for_a_person_and_the_worker_is_freed(waiting_run):
    run, ledger = waiting_run
    assert run.status == "waiting_approval"
    assert run.lease_owner == ""
    approval = Approval.objects.get(run=run)
    assert approval.status == "pending" and approval.tool == "test_pay" and approval.arguments == {"text": "100 EUR to ACME"}
    assert approval.reason == "Paying the invoice."
    assert not ledger.exists()


def test_approving_resumes_the_run_and_the_action_happens_once(waiting_run, approver):
    run, ledger = waiting_run
    approval_decide(approval=Approval.objects.get(run=run), actor=approver, approve=True)
    run.refresh_from_db()
    assert run.status == "queued"
    assert execute_run(run.pk) == "finished"
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert len(lines(ledger)) == 1
    # A duplicate delivery of the resume task finds nothing to claim.
    assert execute_run(run.pk) == "not-claimed"
    assert len(lines(ledger)) == 1


def test_a_rejection_goes_back_to_the_model_with_its_comment(waiting_run, approver):
    run, ledger = waiting_run
    approval_decide(approval=Approval.objects.get(run=run), actor=approver, approve=False, comment="wrong supplier")
    execute_run(run.pk)
    run.refresh_from_db()
    # Nothing was achieved: the run says a person rejected its action, not "succeeded".
    assert run.status == "rejected" and run.outcome == "rejected" and run.refused_calls == 1
    observation = run.steps.filter(kind=StepKind.OBSERVATION).last().payload
    assert observation["is_error"] and "wrong supplier" in observation["output"] and "ada" in observation["output"]
    assert not ledger.exists()


def test_a_rejection_needs_a_comment(waiting_run, approver):
    run, _ = waiting_run
    with pytest.raises(CommentRequired):
        approval_decide(approval=Approval.objects.get(run=run), actor=approver, approve=False, comment="  ")


def test_a_user_without_the_approver_role_cannot_decide(waiting_run, db):
    run, _ = waiting_run
    viewer = User.objects.create_user("vic", password="pw")
    with pytest.raises(NotAllowed):
        approval_decide(approval=Approval.objects.get(run=run), actor=viewer, approve=True)
    assert Approval.objects.get(run=run).status == "pending"


def test_it_rejects_an_expired_approval_and_the_late_click_loses(waiting_run, approver):
    run, ledger = waiting_run
    Approval.objects.filter(run=run).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(AlreadyDecided, match="expired"):
        approval_decide(approval=Approval.objects.get(run=run), actor=approver, approve=True)
    assert Approval.objects.get(run=run).status == ApprovalStatus.EXPIRED
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and run.outcome == "refused" and not ledger.exists()
    assert "Expired" in run.steps.filter(kind=StepKind.OBSERVATION).last().payload["output"]


def test_the_expiry_sweep_expires_pending_approvals(waiting_run):
    run, _ = waiting_run
    Approval.objects.filter(run=run).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert approvals_expire() == 1
    assert Run.objects.get(pk=run.pk).status == "queued"


def test_a_grant_can_require_a_person_for_a_write_tool(make_agent, start_run, tmp_path):
    agent = make_agent(
        script=[{"text": "x", "tool_calls": [{"name": "test_append", "arguments": {"text": "a"}}]}],
        grants={"test_append": {"path": str(tmp_path / "f"), "_approval": "always"}},
    )
    run = start_run(agent)
    assert run.status == "waiting_approval"
    assert Approval.objects.get(run=run).why_needed == "the grant requires a person for every call"


@pytest.mark.django_db(transaction=True)
def test_concurrent_decisions_produce_exactly_one_decision_and_one_execution(make_agent, start_run, approver, tmp_path):
    ledger = tmp_path / "payments"
    agent = make_agent(script=pay_script(), grants={"test_pay": {"path": str(ledger)}}, trust_phase=3)
    run = start_run(agent)
    approval = Approval.objects.get(run=run)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def click(approve: bool) -> None:
        try:
            barrier.wait()
            approval_decide(approval=Approval.objects.get(pk=approval.pk), actor=approver, approve=approve, comment="no")
            outcomes.append("won")
        except AlreadyDecided:
            outcomes.append("lost")
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(i % 2 == 0,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    assert run.steps.filter(kind=StepKind.APPROVAL_DECISION).count() == 1
    runners = [threading.Thread(target=lambda: (execute_run(run.pk), connection.close())) for _ in range(4)]
    for t in runners:
        t.start()
    for t in runners:
        t.join()
    run.refresh_from_db()
    approved = Approval.objects.get(pk=approval.pk).status == "approved"
    # Paid once, or (rejected) nothing achieved and the run says a person said no.
    assert (run.status, run.outcome) == (("succeeded", "acted") if approved else ("rejected", "rejected"))
    assert len(lines(ledger)) == (1 if approved else 0)
