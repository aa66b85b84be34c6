"""Fixtures and helpers shared by the decision tests: people with roles, and a run waiting on each kind of decision."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from agentops.agents.models import Agent
from agentops.approvals.models import Approval, DecisionKind
from agentops.approvals.services import decision_request
from agentops.runs.models import Run, RunStatus
from agentops.runs.services import run_create
from dashboard.roles import ensure_roles

REQUESTS: dict[str, dict[str, Any]] = {
    DecisionKind.BUDGET_EXTENSION: {"cap": "cost", "limit": "2", "used": "2.01", "extend_by": "1"},
    DecisionKind.QUESTION: {"question": "Which environment may I restart?", "options": ["staging", "production"]},
    DecisionKind.LOOP_ESCALATION: {"pattern": "same call repeated", "detail": "read_file(a.py) x4", "nudged_at_seq": 7},
}


def person(username: str, role: str | None = "approver", *, groups: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(username, password="pw")
    if role:
        user.groups.add(ensure_roles()[role])
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return User.objects.get(pk=user.pk)  # fresh: no cached permissions


def waiting_run(agent: Agent, *, actor: Any = "test") -> Run:
    """A run of `agent` waiting for a person (started by `actor`, as run_create records it)."""
    run = run_create(agent=agent, input="do the thing", actor=actor, enqueue=False)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.WAITING_APPROVAL)
    run.refresh_from_db()
    return run


def ask(run: Run, kind: str = DecisionKind.APPROVAL, *, n: int = 1, **fields: Any) -> Approval:
    """A pending decision of `kind` in `run`, as the controller asks it."""
    values: dict[str, Any] = {"kind": kind, "run": run, "agent": run.agent, "why_needed": "a person decides", "timeout_s": 600}
    if kind == DecisionKind.APPROVAL:
        values |= {"tool_call_id": f"call-{n}", "tool": "send_email", "risk_class": "irreversible"}
        values["arguments"] = {"to": ["ops@example.com"], "subject": "Restarted", "body": "The service was restarted."}
    elif kind == DecisionKind.QUESTION:
        values |= {"tool_call_id": f"ask-{n}", "tool": "ask_person", "request": REQUESTS[kind]}
    elif kind == DecisionKind.BUDGET_EXTENSION:
        values |= {"tool_call_id": f"budget:cost:{n}", "request": REQUESTS[kind]}
    else:
        values |= {"tool_call_id": f"loop:{n}", "request": REQUESTS[kind]}
    return decision_request(**(values | fields))


@pytest.fixture
def mailer(make_agent: Any) -> Agent:
    """An agent that may send email to example.com (irreversible: every message waits for a person)."""
    return make_agent(grants={"send_email": {"recipient_domains": ["example.com"]}}, trust_phase=3)
