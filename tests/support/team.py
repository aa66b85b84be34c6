"""A team of people in each role, and the runs and decisions they look at: shared by the dashboard
tests and the MCP tests (configuration pages, agentops as an MCP server)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User

from agentops.agents.models import Agent
from agentops.runs.models import Run, RunStatus, StepKind
from agentops.runs.steps import step_record


@dataclass
class Team:
    owner: User  # admin
    approver: User
    viewer: User
    outsider: User  # signed in, but in no role

    @property
    def admin(self) -> User:
        # The MCP tests name the owner by the role it has.
        return self.owner


@pytest.fixture
def team(db: Any) -> Team:
    """alice (admin), bob (approver), carol (viewer) and mallory (no role); each one's password is
    "pw-" and the name."""
    from dashboard.roles import ensure_roles

    groups = ensure_roles()

    def make(name: str, group: str | None) -> User:
        user = User.objects.create_user(name, f"{name}@example.com", "pw-" + name)
        if group:
            user.groups.add(groups[group])
        return user

    return Team(owner=make("alice", "admin"), approver=make("bob", "approver"), viewer=make("carol", "viewer"), outsider=make("mallory", None))


def make_run(agent: Agent, *, status: str = RunStatus.RUNNING, steps: int = 2, model_id: str = "claude-sonnet-4-5", **fields: Any) -> Run:
    """A run of `agent` with `steps` model calls, then set to `status` (and `fields`)."""
    from agentops.runs.services import run_create

    run = run_create(agent=agent, input="TypeError in checkout", actor="system", enqueue=False)
    for i in range(steps):
        step_record(
            run=run,
            kind=StepKind.MODEL_CALL,
            payload={"text": f"thinking {i}"},
            model_id=model_id,
            input_tokens=100,
            output_tokens=10,
            cost_usd=Decimal("0.001"),
        )
    Run.objects.filter(pk=run.pk).update(status=status, **fields)
    run.refresh_from_db()
    return run


def make_approval(run: Run, *, tool: str = "send_email", call: str = "call-1", arguments: dict | None = None, timeout_s: int = 3600) -> Any:
    """A pending decision on an irreversible call of `run`, which then waits for it."""
    from agentops.approvals.services import approval_request

    Run.objects.filter(pk=run.pk).update(status=RunStatus.WAITING_APPROVAL)
    return approval_request(
        run=run,
        step_id=None,
        tool_call_id=call,
        tool=tool,
        arguments=arguments or {"to": ["ops@example.com"], "subject": "Fix deployed", "body": "Done."},
        risk_class="irreversible",
        reason="The fix is merged; tell the on-call.",
        why_needed="irreversible tool",
        timeout_s=timeout_s,
    )
