"""Edit on approve: a person approves a call with arguments of their own. The edited call is checked
exactly as a model's call is (at decide time and again before it runs, fail closed), runs once (the
ledger keys on the call id), the trace keeps both versions, and the model is told what ran."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import OperationalError
from django.utils import timezone

from agentops.agents.models import ToolGrant
from agentops.approvals.models import Approval
from agentops.approvals.services import InvalidDecision, approval_decide
from agentops.runs import conversation as conv
from agentops.runs.calls import validate_call
from agentops.runs.controller import execute_run
from agentops.runs.dispatch import Dispatcher
from agentops.runs.models import Run, Step, StepKind, ToolExecution
from tests.support.tools import lines

PREFIX = "A person edited this call before approving it; the call that ran: "


def pay_script(text: str = "100 EUR to ACME") -> list[dict]:
    return [{"text": "Paying the invoice.", "tool_calls": [{"name": "test_pay", "arguments": {"text": text}}]}, {"text": "done"}]


def mail_script(to: str = "cfo@example.com") -> list[dict]:
    return [{"text": "mail", "tool_calls": [{"name": "send_email", "arguments": {"to": [to], "subject": "Report", "body": "All good."}}]}, {"text": "done"}]


def observations(run: Run) -> list[dict]:
    return [s.payload for s in run.steps.filter(kind=StepKind.OBSERVATION).order_by("seq")]


@pytest.fixture
def paying(make_agent, start_run, tmp_path):
    ledger = tmp_path / "payments"
    run = start_run(make_agent(script=pay_script(), grants={"test_pay": {"path": str(ledger)}}, trust_phase=3))
    assert run.status == "waiting_approval"
    return run, ledger


@pytest.fixture
def mailing(make_agent, start_run, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    run = start_run(make_agent(script=mail_script(), grants={"send_email": {"recipient_domains": ["example.com"]}}, trust_phase=3))
    assert run.status == "waiting_approval"
    return run


def test_the_edited_call_runs_once_the_trace_keeps_both_versions_and_the_model_is_told_what_ran(paying):
    run, ledger = paying
    approval_decide(approval=Approval.objects.get(run=run), actor="cli:ada", approve=True, edited_arguments={"text": "90 EUR to ACME"})
    assert execute_run(run.pk) == "finished"
    run.refresh_from_db()
    assert run.status == "succeeded" and run.tool_calls == 1
    assert [line.split(" ", 1)[1].rsplit(" pid=", 1)[0] for line in lines(ledger)] == ["90 EUR to ACME"]
    approval = Approval.objects.get(run=run)
    assert approval.arguments == {"text": "100 EUR to ACME"} and approval.edited_arguments == {"text": "90 EUR to ACME"}
    original, edited = [s.payload for s in run.steps.filter(kind=StepKind.TOOL_CALL).order_by("seq")]
    assert original["arguments"] == {"text": "100 EUR to ACME"}
    assert edited["arguments"] == {"text": "90 EUR to ACME"} and edited["original_arguments"] == {"text": "100 EUR to ACME"}
    assert edited["edited_by"] == "cli:ada" and edited["tool_call_id"] == original["tool_call_id"]
    ran = f"{PREFIX}test_pay({json.dumps({'text': '90 EUR to ACME'})})"
    observation = observations(run)[-1]
    assert observation["output"].startswith(ran + "\n\nappended 90 EUR to ACME") and observation["edited_arguments"] == {"text": "90 EUR to ACME"}
    assert ToolExecution.objects.get(run=run).arguments == {"text": "90 EUR to ACME"}
    # What a worker taking the run over would show the model: the same observation, from the steps.
    messages = conv.rebuild(list(Step.objects.filter(run=run).order_by("seq")), {}, {}).messages
    results = [b["content"] for m in messages if isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_result"]
    assert results == [observation["output"]]


def test_approving_without_an_edit_runs_the_models_call_as_before(paying):
    run, ledger = paying
    approval_decide(approval=Approval.objects.get(run=run), actor="cli:ada", approve=True, edited_arguments={"text": "100 EUR to ACME"})
    execute_run(run.pk)
    assert "100 EUR to ACME" in lines(ledger)[0] and not observations(Run.objects.get(pk=run.pk))[-1]["output"].startswith(PREFIX)


def test_edited_arguments_outside_the_grants_scope_are_refused_at_decide_time(mailing):
    approval = Approval.objects.get(run=mailing)
    edit = {"to": ["someone@evil.example"], "subject": "Report", "body": "All good."}
    with pytest.raises(InvalidDecision, match="outside the allowed recipient domains"):
        approval_decide(approval=approval, actor="cli:ada", approve=True, edited_arguments=edit)
    with pytest.raises(InvalidDecision, match="Additional properties"):
        approval_decide(approval=approval, actor="cli:ada", approve=True, edited_arguments={**edit, "to": ["ok@example.com"], "bcc": "x@evil.example"})
    assert Approval.objects.get(pk=approval.pk).status == "pending" and mail.outbox == []


def test_edited_arguments_no_longer_valid_when_the_call_runs_are_refused_and_nothing_is_sent(mailing):
    approval = Approval.objects.get(run=mailing)
    approval_decide(approval=approval, actor="cli:ada", approve=True, edited_arguments={"to": ["ops@example.com"], "subject": "Report", "body": "Edited."})
    # Between the decision and the execution an admin narrows the grant: the edited call is checked again.
    ToolGrant.objects.filter(agent=mailing.agent, tool="send_email").update(scope={"recipient_domains": ["corp.example"]})
    execute_run(mailing.pk)
    run = Run.objects.get(pk=mailing.pk)
    assert mail.outbox == []
    refusal = observations(run)[-1]
    assert refusal["refused"] == "edited_arguments" and "outside the allowed recipient domains" in refusal["output"]
    assert run.refused_calls == 1 and run.steps.filter(kind=StepKind.GUARDRAIL, payload__guard="edited_arguments").exists()


def test_an_edited_email_goes_to_the_edited_recipient_only(mailing):
    approval_decide(
        approval=Approval.objects.get(run=mailing),
        actor="cli:ada",
        approve=True,
        edited_arguments={"to": ["ops@example.com"], "subject": "Report", "body": "Edited."},
    )
    execute_run(mailing.pk)
    assert [(m.to, m.body) for m in mail.outbox] == [(["ops@example.com"], "Edited.")]


def test_a_takeover_after_the_edited_call_acted_never_acts_again(paying, monkeypatch):
    run, ledger = paying
    approval_decide(approval=Approval.objects.get(run=run), actor="cli:ada", approve=True, edited_arguments={"text": "90 EUR to ACME"})
    real = Dispatcher.observe
    state = {"armed": True}

    def observe(self: Dispatcher, call: Any, text: str, **kw: Any) -> None:
        if state["armed"] and text.startswith(PREFIX):
            state["armed"] = False
            raise OperationalError("the database went away")  # after the payment, before its observation
        real(self, call, text, **kw)

    monkeypatch.setattr(Dispatcher, "observe", observe)
    assert execute_run(run.pk, owner="worker-1") == "database-unavailable"
    assert len(lines(ledger)) == 1
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert execute_run(run.pk, owner="worker-2") == "finished"
    run.refresh_from_db()
    assert len(lines(ledger)) == 1 and run.status == "succeeded"
    assert observations(run)[-1]["output"].startswith(f"{PREFIX}test_pay(") and run.tool_calls == 1


def test_validate_call_gives_every_reason_a_call_may_not_run(make_agent, start_run):
    agent = make_agent(grants={"send_email": {"recipient_domains": ["example.com"]}, "http_get": {"domains": 3}, "merge_pull_request": {}}, trust_phase=1)
    run = start_run(agent, execute=False)
    ok = {"to": ["a@example.com"], "subject": "s", "body": "b"}
    assert validate_call(run=run, tool_name="send_email", arguments=ok) == []
    assert "no tool named" in validate_call(run=run, tool_name="launch_rockets", arguments={})[0]
    assert "no grant" in validate_call(run=run, tool_name="test_echo", arguments={"text": "x"})[0]
    assert "scope is invalid" in validate_call(run=run, tool_name="http_get", arguments={"url": "https://example.com"})[0]
    assert "trust phase" in validate_call(run=run, tool_name="merge_pull_request", arguments={"number": 1})[0]
    assert "expected a JSON object" in validate_call(run=run, tool_name="send_email", arguments=["a@example.com"])[0]
    assert "subject" in validate_call(run=run, tool_name="send_email", arguments={"to": ["a@example.com"], "body": "b"})[0]
    assert "outside the allowed recipient domains" in validate_call(run=run, tool_name="send_email", arguments={**ok, "to": ["a@evil.example"]})[0]
