"""Configuration a person can read: scopes as chips (posted through GrantForm and the one validator),
trigger rules as sentences, numbers in one format with units, a reason and a confirmation for
raising the trust phase, objectives whose line endings survive a save, and audit entries as the
fields that changed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse
from helpers_dashboard import agent_form as _agent_form
from helpers_dashboard import client_for, second_admin_approves

from agentops.agents.models import Agent, ToolGrant, Trigger
from agentops.audit.models import AuditEvent
from dashboard.templatetags.dashboard_tags import duration, thousands, tokens, usd

pytestmark = pytest.mark.django_db


# --- numbers in one format, with units ---------------------------------------------------------


@pytest.mark.parametrize(("value", "shown"), [(600000, "600,000"), (0, "0"), (None, "—"), ("x", "—")])
def test_counts_are_shown_with_thousands_separators(value, shown):
    assert thousands(value) == shown
    assert tokens(1234567) == "1,234,567"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("5"), "$5.00"),
        (Decimal("1234.5"), "$1,234.50"),
        (Decimal("0.0117"), "$0.0117"),
        (Decimal("0.5"), "$0.50"),
        (Decimal("0.123456"), "$0.1235"),
        (Decimal("0.00001"), "<$0.0001"),
        (Decimal("1.000000"), "$1.00"),
        (None, "—"),
        ("nan", "—"),
    ],
)
def test_money_is_shown_in_dollars_with_two_to_four_decimals(value, shown):
    assert usd(value) == shown


@pytest.mark.parametrize(("value", "shown"), [(1800, "30m"), (86400, "24h"), (90, "1m 30s"), (0, "0s"), (3725, "1h 2m 5s"), (None, "—")])
def test_seconds_are_shown_as_durations(value, shown):
    assert duration(value) == shown


def test_the_agent_page_shows_numbers_in_one_format_with_units(team, agent):
    policy = agent.policy
    policy.max_tokens, policy.max_cost_usd, policy.max_wall_clock_s, policy.approval_timeout_s = 600000, Decimal("1.000000"), 1800, 86400
    policy.save()
    body = client_for(team.viewer).get(f"/agents/{agent.slug}/").content.decode()
    assert "600,000" in body and "600000" not in body
    assert "$1.00" in body and "1.000000" not in body
    assert "30m" in body and "24h, then expires" in body
    assert "$20.00" in body  # the daily cap


# --- scopes and rules as a person reads them ------------------------------------------------------


def test_the_agent_page_shows_scopes_as_labelled_chips_not_dict_reprs(team, agent):
    ToolGrant.objects.create(agent=agent, tool="repo_read_file", scope={"paths": ["checkout/*", "tests/*"]})
    ToolGrant.objects.create(agent=agent, tool="git_commit", scope={"branch_prefix": "agent/"})
    ToolGrant.objects.create(agent=agent, tool="write_file", scope={})
    body = client_for(team.viewer).get(f"/agents/{agent.slug}/").content.decode()
    assert "{&#x27;" not in body and "{'domains'" not in body
    assert '<dt>Domains</dt><dd><span class="chip">example.com</span>' in body
    assert '<span class="chip">checkout/*</span><span class="chip">tests/*</span>' in body
    assert '<dt>Branch prefix</dt><dd><span class="chip">agent/</span>' in body
    # what an absent key means, said plainly
    assert '<dt>Repositories</dt><dd><span class="muted">its own repository</span>' in body
    assert '<dt>Paths</dt><dd><span class="muted">every path</span>' in body


def test_the_agent_page_shows_trigger_rules_as_sentences(team, agent):
    Trigger.objects.create(
        agent=agent,
        name="checkout-critical",
        kind="error",
        rules={"project": "checkout", "min_level": "error", "tags": {"service": "checkout"}, "min_count": 3, "window_s": 300},
    )
    Trigger.objects.create(agent=agent, name="weekly", kind="schedule", rules={"cron": "0 3 * * 1"})
    body = client_for(team.viewer).get(f"/agents/{agent.slug}/").content.decode()
    assert "error or worse" in body and "at least 3 events within 5m" in body and "service = checkout" in body
    assert "At 03:00, only on Monday" in body
    assert "{&#x27;project" not in body


def test_the_edit_page_edits_a_scope_as_chips(team, agent):
    body = client_for(team.owner).get(f"/agents/{agent.slug}/edit/").content.decode()
    grant = agent.grants.get()
    assert f'name="g{grant.pk}-scope.domains" value="example.com" checked' in body
    assert f'class="chip-new" name="g{grant.pk}-scope.domains"' in body
    assert f'name="g{grant.pk}-scope.present" value="domains"' in body
    assert f'id="id_g{grant.pk}-scope"' not in body  # no JSON textarea for a scope the tool describes


def test_a_chip_scope_is_saved_through_the_grant_form_and_audited_field_by_field(team, agent):
    grant = agent.grants.get()
    data = {
        f"g{grant.pk}-tool": "http_get",
        f"g{grant.pk}-approval": "default",
        f"g{grant.pk}-scope.present": ["domains", "timeout_s"],
        f"g{grant.pk}-scope.domains": ["example.com", "api.example.org, docs.example.org"],
        f"g{grant.pk}-scope.timeout_s": "10",
    }
    response = client_for(team.owner).post(f"/agents/{agent.slug}/grants/{grant.pk}/", data)
    assert response.status_code == 302
    grant.refresh_from_db()
    assert grant.scope == {"domains": ["example.com", "api.example.org", "docs.example.org"], "timeout_s": 10}
    event = AuditEvent.objects.get(action="grant.update")
    assert event.before["scope"] == {"domains": ["example.com"]}
    audit = client_for(team.viewer).get("/audit/").content.decode()
    assert '<th scope="row">scope.domains</th>' in audit and '<th scope="row">scope.timeout_s</th>' in audit
    assert '<th scope="row">tool</th>' not in audit  # unchanged fields are not listed


def test_removing_every_chip_of_a_required_list_is_refused_by_the_one_validator(team, agent):
    grant = agent.grants.get()
    data = {f"g{grant.pk}-tool": "http_get", f"g{grant.pk}-approval": "default", f"g{grant.pk}-scope.present": ["domains"], f"g{grant.pk}-scope.domains": [""]}
    # domains is required; emptied, it is kept as [] (nothing allowed) rather than going missing
    response = client_for(team.owner).post(f"/agents/{agent.slug}/grants/{grant.pk}/", data)
    assert response.status_code == 302
    grant.refresh_from_db()
    assert grant.scope == {"domains": []}


def test_a_chip_the_tool_does_not_know_is_refused_with_the_validators_message(team, agent):
    data = {
        "new-tool": "send_email",
        "new-approval": "default",
        "new-scope.present": ["recipient_domains", "domains"],
        "new-scope.recipient_domains": ["example.com"],
        "new-scope.domains": ["evil.example"],
    }
    response = client_for(team.owner).post(f"/agents/{agent.slug}/grants/new/", data)
    assert response.status_code == 400
    assert "Additional properties are not allowed" in response.content.decode()
    assert not agent.grants.filter(tool="send_email").exists()


def test_the_grant_form_goes_through_the_one_validator(team, agent, monkeypatch):
    from agentops.agents import spec

    calls = []
    real = spec.agent_errors

    def spy(candidate, where=""):
        calls.append(candidate)
        return real(candidate, where)

    monkeypatch.setattr(spec, "agent_errors", spy)
    monkeypatch.setattr("agentops.agents.services.agent_errors", spy)
    data = {"new-tool": "send_email", "new-approval": "default", "new-scope.present": ["recipient_domains"], "new-scope.recipient_domains": ["example.com"]}
    assert client_for(team.owner).post(f"/agents/{agent.slug}/grants/new/", data).status_code == 302
    assert calls and any(t["tool"] == "send_email" for t in calls[-1]["tools"])


def test_an_unreadable_number_in_a_scope_is_a_400_not_a_500(team, agent):
    grant = agent.grants.get()
    data = {
        f"g{grant.pk}-tool": "http_get",
        f"g{grant.pk}-approval": "default",
        f"g{grant.pk}-scope.present": ["domains", "timeout_s"],
        f"g{grant.pk}-scope.domains": ["example.com"],
        f"g{grant.pk}-scope.timeout_s": "soon",
    }
    response = client_for(team.owner).post(f"/agents/{agent.slug}/grants/{grant.pk}/", data)
    assert response.status_code == 400 and "is not a number" in response.content.decode()


def test_a_scope_posted_as_json_still_works(team, agent):
    response = client_for(team.owner).post(
        f"/agents/{agent.slug}/grants/new/", {"new-tool": "send_email", "new-scope": '{"recipient_domains": ["example.com"]}', "new-approval": "default"}
    )
    assert response.status_code == 302
    # An irreversible tool: applied once a second admin approves.
    assert second_admin_approves(agent) == 1
    assert agent.grants.get(tool="send_email").scope == {"recipient_domains": ["example.com"]}


def test_saving_an_unchanged_grant_records_no_change(team, agent):
    grant = agent.grants.get()
    grant.scope = {"domains": ["example.com"], "timeout_s": 5}
    grant.save()
    data = {
        f"g{grant.pk}-tool": "http_get",
        f"g{grant.pk}-approval": grant.approval,
        f"g{grant.pk}-scope.present": ["domains", "timeout_s"],
        f"g{grant.pk}-scope.domains": ["example.com", ""],
        f"g{grant.pk}-scope.timeout_s": "5",
    }
    assert client_for(team.owner).post(f"/agents/{agent.slug}/grants/{grant.pk}/", data).status_code == 302
    assert not AuditEvent.objects.filter(action="grant.update").exists()


# --- raising the trust phase -------------------------------------------------------------------------


def test_raising_the_trust_phase_without_a_reason_or_confirmation_is_refused(team, agent):
    response = client_for(team.owner).post(f"/agents/{agent.slug}/edit/", _agent_form(agent, trust_phase=3))
    assert response.status_code == 400
    body = response.content.decode()
    assert "say why this agent may now do more on its own" in body and "confirm that it may open pull requests ready for review" in body
    agent.refresh_from_db()
    assert agent.trust_phase == 1 and not AuditEvent.objects.filter(action="agent.update").exists()


def test_raising_the_trust_phase_with_a_reason_and_confirmation_records_the_reason(team, agent):
    response = client_for(team.owner).post(
        f"/agents/{agent.slug}/edit/", _agent_form(agent, trust_phase=3, trust_reason="40 runs at phase 2, every PR merged unchanged", trust_confirm="on")
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.trust_phase == 3
    event = AuditEvent.objects.get(action="agent.update")
    assert event.before == {"trust_phase": 1} and event.after == {"trust_phase": 3}
    assert event.detail == "40 runs at phase 2, every PR merged unchanged"
    assert "40 runs at phase 2" in client_for(team.viewer).get("/audit/").content.decode()


def test_lowering_the_trust_phase_needs_no_reason(team, agent):
    Agent.objects.filter(pk=agent.pk).update(trust_phase=3)
    agent.refresh_from_db()
    response = client_for(team.owner).post(f"/agents/{agent.slug}/edit/", _agent_form(agent, trust_phase=1))
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.trust_phase == 1


def test_the_service_refuses_to_raise_the_trust_phase_without_a_reason_whoever_calls(agent):
    from django.core.exceptions import ValidationError

    from agentops.agents.services import agent_update

    with pytest.raises(ValidationError):
        agent_update(agent=agent, actor="api", changes={"trust_phase": 2})
    agent.refresh_from_db()
    assert agent.trust_phase == 1


def test_the_edit_page_offers_the_reason_and_the_confirmation(team, agent):
    body = client_for(team.owner).get(f"/agents/{agent.slug}/edit/").content.decode()
    assert "data-trust-raise" in body and 'name="trust_reason"' in body and 'name="trust_confirm"' in body
    assert 'data-current-phase="1"' in body


# --- line endings --------------------------------------------------------------------------------------


def test_saving_with_crlf_line_endings_changes_nothing_and_audits_nothing(team, agent):
    Agent.objects.filter(pk=agent.pk).update(objective="Fix production errors.\nNever weaken a test.\n")
    agent.refresh_from_db()
    form = _agent_form(agent, objective="Fix production errors.\r\nNever weaken a test.\r\n")
    assert client_for(team.owner).post(f"/agents/{agent.slug}/edit/", form).status_code == 302
    agent.refresh_from_db()
    assert agent.objective == "Fix production errors.\nNever weaken a test.\n"
    assert not AuditEvent.objects.filter(action="agent.update").exists()


def test_an_objective_typed_with_crlf_is_stored_with_lf_and_its_audit_is_a_line_diff(team, agent):
    Agent.objects.filter(pk=agent.pk).update(objective="one\ntwo\nthree")
    agent.refresh_from_db()
    assert client_for(team.owner).post(f"/agents/{agent.slug}/edit/", _agent_form(agent, objective="one\r\nTWO\r\nthree")).status_code == 302
    agent.refresh_from_db()
    assert agent.objective == "one\nTWO\nthree"
    event = AuditEvent.objects.get(action="agent.update")
    assert event.before == {"objective": "one\ntwo\nthree"} and event.after == {"objective": "one\nTWO\nthree"}
    audit = client_for(team.viewer).get("/audit/").content.decode()
    assert '<span class="td-del">two</span>' in audit and '<span class="td-add">TWO</span>' in audit


def test_an_objective_stored_with_crlf_keeps_its_line_endings_when_saved_unchanged(team, agent):
    Agent.objects.filter(pk=agent.pk).update(objective="a\r\nb")
    agent.refresh_from_db()
    assert client_for(team.owner).post(f"/agents/{agent.slug}/edit/", _agent_form(agent, objective="a\r\nb")).status_code == 302
    agent.refresh_from_db()
    assert agent.objective == "a\r\nb" and not AuditEvent.objects.filter(action="agent.update").exists()


# --- audit entries as field-level diffs ---------------------------------------------------------------


def test_the_audit_shows_only_the_policy_fields_that_changed_with_before_and_after(team, agent):
    client_for(team.owner).post(f"/agents/{agent.slug}/edit/", _agent_form(agent, max_tokens=123456))
    body = client_for(team.viewer).get("/audit/").content.decode()
    assert '<th scope="row">max_tokens</th>' in body
    assert "<del>500000</del>" in body and "<ins>123456</ins>" in body
    assert '<th scope="row">max_cost_usd</th>' not in body


def test_field_changes_compares_nested_objects_key_by_key():
    from dashboard.readable import field_changes

    changes = field_changes({"tool": "t", "scope": {"paths": ["a"], "x": 1}}, {"tool": "t", "scope": {"paths": ["a", "b"]}})
    assert [(c.path, c.change) for c in changes] == [("scope.paths", "changed"), ("scope.x", "removed")]
    created = field_changes(None, {"tool": "t", "approval": "always"})
    assert [(c.path, c.before, c.after) for c in created] == [("tool", None, "t"), ("approval", None, "always")]
    # a key only on one side of an update is context (a trigger's id), not a removal
    assert [c.path for c in field_changes({"trigger": 3, "enabled": True}, {"enabled": False})] == ["enabled"]


# --- who may see it ------------------------------------------------------------------------------------


def test_an_outsider_gets_403_on_the_agent_edit_and_audit_pages(team, agent):
    outsider = client_for(team.outsider)
    for path in (f"/agents/{agent.slug}/", f"/agents/{agent.slug}/edit/", "/audit/"):
        assert outsider.get(path).status_code == 403, path
    grant = agent.grants.get()
    response = outsider.post(
        reverse("dashboard:grant_save", args=[agent.slug, grant.pk]),
        {f"g{grant.pk}-tool": "http_get", f"g{grant.pk}-scope.present": ["domains"], f"g{grant.pk}-scope.domains": ["evil.example"]},
    )
    assert response.status_code == 403
    grant.refresh_from_db()
    assert grant.scope == {"domains": ["example.com"]}
