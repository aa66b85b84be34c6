"""Builders shared by the dashboard tests (imported by conftest and the test modules)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from agentops.agents.models import Agent
from tests.support.team import make_approval, make_run  # noqa: F401  the dashboard tests import them from here


def client_for(user: User | None, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    if user is not None:
        client.force_login(user)
    return client


def csrf_post(user: User, path: str, data: dict, *, page: str = "/") -> Any:
    """POST like a browser: fetch a page for the CSRF cookie, then send the token with the form."""
    client = client_for(user, csrf=True)
    client.get(page)
    token = client.cookies["csrftoken"].value
    return client.post(path, {**data, "csrfmiddlewaretoken": token})


def agent_form(agent: Agent, **overrides: object) -> dict:
    """The agent edit page's form as a person would submit it unchanged, with `overrides`."""
    policy = agent.policy
    data: dict[str, object] = {"name": agent.name, "objective": agent.objective, "model": agent.model, "trust_phase": agent.trust_phase}
    for field in ["max_tokens", "max_cost_usd", "max_tool_calls", "max_iterations", "max_wall_clock_s", "approval_timeout_s"]:
        data[field] = getattr(policy, field)
    data["daily_max_runs"] = policy.daily_max_runs or ""
    data["daily_max_cost_usd"] = policy.daily_max_cost_usd or ""
    data["daily_action_caps"] = "{}"
    # Human decisions: as the page shows them (an unticked checkbox is not posted).
    data["extendable_caps"] = list(policy.extendable_caps)
    for field in ["max_extensions_per_run", "loop_escalation", "grant_change_cooldown_h"]:
        data[field] = getattr(policy, field)
    if policy.self_approval_allowed:
        data["self_approval_allowed"] = "on"
    data.update(overrides)
    return data


def second_admin_approves(agent: Agent) -> int:
    """Another admin approves the agent's pending two-admin changes (granting an irreversible tool,
    phase 4): what one admin asked is applied. Returns how many were applied."""
    from agentops.approvals.models import Approval
    from agentops.approvals.services import approval_decide
    from dashboard.roles import ensure_roles

    second, created = User.objects.get_or_create(username="second-admin")
    if created:
        second.groups.add(ensure_roles()["admin"])
        second = User.objects.get(pk=second.pk)
    pending = list(Approval.objects.filter(agent=agent, kind="config_change", status="pending"))
    for decision in pending:
        approval_decide(approval=decision, actor=second, approve=True)
    return len(pending)
