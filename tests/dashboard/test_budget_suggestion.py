"""The agent page suggests the cost limits the controller enforces: one history rule, in guardrails."""

from __future__ import annotations

from decimal import Decimal

from helpers_dashboard import client_for, make_run

from agentops.runs.models import RunStatus


def test_the_agent_page_suggests_exactly_the_cost_limits_the_controller_enforces(team, agent):
    from agentops.guardrails.budgets import effective_budget
    from dashboard.templatetags.dashboard_tags import usd

    for cost in ["0.10", "0.20", "0.30", "0.40", "0.50"]:
        make_run(agent, status=RunStatus.SUCCEEDED, steps=0, cost_usd=Decimal(cost))
    # Free runs (scripted, replayed) say nothing about what a real run costs: neither counts them.
    for _ in range(4):
        make_run(agent, status=RunStatus.SUCCEEDED, steps=0, cost_usd=Decimal("0"))
    agent.policy.refresh_from_db()
    enforced = effective_budget(agent.policy)
    assert enforced.alarm_cost_usd == Decimal("3.000000") and enforced.max_cost_usd == Decimal("15.000000")
    body = client_for(team.viewer).get(f"/agents/{agent.slug}/").content.decode()
    assert "last 5 succeeded runs" in body
    # Shown as the page shows money (whatever its format), the numbers are the enforced ones.
    assert f"<b>{usd(enforced.alarm_cost_usd)}</b>" in body and f"<b>{usd(enforced.max_cost_usd)}</b>" in body
