from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

from django.utils import timezone

from dashboard.maturity import BETA, DONT_SHIP, INTERNAL, PRODUCTION, maturity_tier

NOW = timezone.now()


def policy(**caps):
    base = {"max_tokens": 1000, "max_cost_usd": Decimal("5"), "max_tool_calls": 10, "max_iterations": 10, "max_wall_clock_s": 600}
    return SimpleNamespace(**{**base, **caps})


def grant(tool, scope, approval="default"):
    return SimpleNamespace(tool=tool, scope=scope, approval=approval)


SCOPED = [grant("http_get", {"domains": ["example.com"]}), grant("send_email", {"recipient_domains": ["example.com"]})]


def tier(**kwargs):
    args = {"policy": policy(), "grants": SCOPED, "drill_passed_at": NOW - timedelta(days=2), "now": NOW}
    args.update(kwargs)
    return maturity_tier(SimpleNamespace(), **args)


def test_caps_approvals_scopes_and_a_recent_drill_make_it_production_grade():
    assert tier()[0] == PRODUCTION


def test_no_passed_drill_makes_it_beta_ready():
    name, reasons = tier(drill_passed_at=None)
    assert name == BETA and "drill" in reasons[0]


def test_a_drill_older_than_30_days_does_not_count():
    assert tier(drill_passed_at=NOW - timedelta(days=31))[0] == BETA


def test_a_grant_without_a_scope_makes_it_an_internal_tool():
    name, reasons = tier(grants=[grant("http_get", {})])
    assert name == INTERNAL and "http_get" in reasons[0]


def test_a_tool_with_nothing_to_narrow_needs_no_scope():
    # wait has an empty scope schema: it can only ever wait.
    assert tier(grants=SCOPED + [grant("wait", {})])[0] == PRODUCTION


def test_the_shipped_debugging_agent_is_beta_ready_until_a_drill_passes():
    from pathlib import Path

    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "agents.yaml").read_text())
    debugging = next(a for a in spec["agents"] if a["slug"] == "debugging-agent")
    grants = [grant(g["tool"], g.get("scope", {}), g.get("approval", "default")) for g in debugging["tools"]]
    assert tier(grants=grants, drill_passed_at=None)[0] == BETA
    assert tier(grants=grants)[0] == PRODUCTION


def test_a_scope_that_fails_the_tools_schema_is_not_narrow():
    assert tier(grants=[grant("send_email", {"domains": ["x"]})])[0] == INTERNAL


def test_no_policy_means_dont_ship():
    assert tier(policy=None)[0] == DONT_SHIP


def test_a_zero_cap_means_dont_ship():
    assert tier(policy=policy(max_tool_calls=0))[0] == DONT_SHIP


def test_an_irreversible_tool_without_a_person_means_dont_ship():
    name, reasons = tier(grants=[grant("send_email", {"recipient_domains": ["example.com"]}, approval="never")])
    assert name == DONT_SHIP and "send_email" in reasons[0]


def test_an_unknown_tool_is_treated_as_irreversible():
    assert tier(grants=[grant("launch_missiles", {"x": 1}, approval="never")])[0] == DONT_SHIP


def test_an_agent_row_is_read_when_nothing_is_passed_in(agent):
    from agentops.guardrails.models import Drill

    Drill.objects.create(status="passed")
    assert maturity_tier(agent)[0] == PRODUCTION
