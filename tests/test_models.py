"""Rules that must never break are enforced by the database itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from agentops.agents.models import Agent, ToolGrant
from agentops.approvals.models import Approval
from agentops.guardrails.models import ControlState
from agentops.runs.models import Run, Step, ToolExecution

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(make_agent):
    return Run.objects.create(agent=make_agent())


def test_step_seq_is_unique_per_run(run, make_agent):
    Step.objects.create(run=run, seq=1, kind="input")
    Step.objects.create(run=Run.objects.create(agent=run.agent), seq=1, kind="input")
    with pytest.raises(IntegrityError), transaction.atomic():
        Step.objects.create(run=run, seq=1, kind="model_call")


def test_step_record_numbers_steps_without_gaps(run):
    from agentops.runs.steps import step_record

    seqs = [step_record(run=run, kind="guardrail", payload={"n": i}).seq for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]


def test_an_idempotency_key_executes_once(run):
    ToolExecution.objects.create(key="run-1:toolu_1", run=run, tool="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        ToolExecution.objects.create(key="run-1:toolu_1", run=run, tool="x")


def test_one_approval_per_tool_call_and_a_decision_needs_its_time(run):
    expires = timezone.now() + timedelta(hours=1)
    Approval.objects.create(run=run, tool_call_id="t1", tool="x", risk_class="irreversible", expires_at=expires)
    with pytest.raises(IntegrityError), transaction.atomic():
        Approval.objects.create(run=run, tool_call_id="t1", tool="x", risk_class="irreversible", expires_at=expires)
    with pytest.raises(IntegrityError), transaction.atomic():
        Approval.objects.create(run=run, tool_call_id="t2", tool="x", risk_class="irreversible", expires_at=expires, status="approved")


def test_at_most_one_active_run_per_fingerprint(make_agent):
    agent = make_agent()
    Run.objects.create(agent=agent, fingerprint="error:1", status="running")
    Run.objects.create(agent=agent, fingerprint="error:1", status="succeeded")
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(agent=agent, fingerprint="error:1", status="queued")


def test_trust_phase_is_between_1_and_4(make_agent):
    agent = make_agent()
    with pytest.raises(IntegrityError), transaction.atomic():
        Agent.objects.filter(pk=agent.pk).update(trust_phase=5)


def test_one_grant_per_tool_per_agent(make_agent):
    agent = make_agent(grants={"http_get": {"domains": ["example.com"]}})
    with pytest.raises(IntegrityError), transaction.atomic():
        ToolGrant.objects.create(agent=agent, tool="http_get", scope={})


def test_the_control_state_is_a_single_row(db):
    ControlState.objects.create(pk=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        ControlState.objects.create(pk=2)
