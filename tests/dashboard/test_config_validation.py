"""One validator for agent configuration: the dashboard's forms refuse exactly what `apply` refuses,
with a 400 and nothing written — never a 500, never a value the controller cannot use."""

from __future__ import annotations

import copy

import pytest
from helpers_dashboard import agent_form as _agent_form
from helpers_dashboard import client_for, csrf_post

from agentops.agents.models import Agent, Trigger
from agentops.agents.services import policy_update
from agentops.agents.spec import agent_errors, export_agent
from agentops.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def _unchanged(agent: Agent, before: dict, audits: int) -> None:
    agent.refresh_from_db()
    assert export_agent(agent) == before
    assert AuditEvent.objects.count() == audits


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_cost_usd", "-1"),
        ("max_cost_usd", "0"),
        ("daily_max_cost_usd", "0"),
        ("max_tokens", "0"),
        ("max_iterations", "0"),
        ("max_tokens", str(10**30)),
        ("max_tool_calls", str(2**40)),
        ("max_cost_usd", "NaN"),
        ("max_cost_usd", "Infinity"),
        ("max_cost_usd", "1" * 40),
        ("approval_timeout_s", "3"),
        ("model", "claude-unknown-9"),
        ("model", "a\x00b"),
        ("name", "x\x00"),
        ("objective", "fix\x00it"),
        ("daily_action_caps", '{"irreversible": -1}'),
        ("daily_action_caps", '{"irreversible": NaN}'),
        ("daily_action_caps", '{"irreversible": 1e999}'),
        ("daily_action_caps", '{"k\\u0000": 1}'),
        ("daily_action_caps", '{"k": "\\ud800"}'),
        ("daily_action_caps", "[" * 5000 + "]" * 5000),
        ("daily_action_caps", '{"a":' * 5000 + "1" + "}" * 5000),
    ],
)
def test_the_policy_form_refuses_what_apply_refuses_with_a_400_and_writes_nothing(team, agent, field, value):
    before, audits = export_agent(agent), AuditEvent.objects.count()
    response = csrf_post(team.owner, "/agents/debugger/edit/", _agent_form(agent, **{field: value}), page="/agents/debugger/edit/")
    assert response.status_code == 400, (field, value)
    _unchanged(agent, before, audits)


@pytest.mark.parametrize(
    "rules",
    [
        '{"cron": "0 3 * * *", "input": "a\\u0000b"}',
        '{"cron": NaN}',
        '{"cron": "0 3 * * *", "input": "\\udfff"}',
        '{"cron": "99 99 * * *"}',
        '{"x":' * 3000 + "1" + "}" * 3000,
    ],
)
def test_the_trigger_form_refuses_bad_rules_with_a_400_and_writes_nothing(team, agent, rules):
    client = client_for(team.owner)
    response = client.post("/agents/debugger/triggers/new/", {"newt-name": "nightly", "newt-kind": "schedule", "newt-rules": rules, "newt-enabled": "on"})
    assert response.status_code == 400
    assert not Trigger.objects.filter(agent=agent).exists()


def test_an_error_trigger_without_a_project_is_refused_by_the_form_as_by_apply(team, agent):
    client = client_for(team.owner)
    response = client.post(
        "/agents/debugger/triggers/new/", {"newt-name": "errors", "newt-kind": "error", "newt-rules": '{"min_level": "loud"}', "newt-enabled": "on"}
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "project" in body and "min_level" in body
    assert not Trigger.objects.filter(agent=agent).exists()


def test_a_grant_with_an_unparsable_scope_is_refused_by_the_service_itself(team, agent):
    response = client_for(team.owner).post(
        "/agents/debugger/grants/new/", {"new-tool": "http_get", "new-scope": '{"domains": "not-a-list"}', "new-approval": "default"}
    )
    assert response.status_code == 400
    assert agent.grants.get(tool="http_get").scope == {"domains": ["example.com"]}


def test_the_service_refuses_a_policy_apply_would_refuse_whoever_calls_it(agent):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        policy_update(agent=agent, actor="api", changes={"max_cost_usd": -1})
    assert "max_cost_usd" in caught.value.message_dict
    agent.refresh_from_db()
    assert agent.policy.max_cost_usd > 0


def test_the_validator_accepts_every_valid_exported_agent_and_the_form_saves_a_valid_change(team, agent):
    assert agent_errors(export_agent(agent)) == []
    response = csrf_post(
        team.owner, "/agents/debugger/edit/", _agent_form(agent, max_cost_usd="2.5", daily_action_caps='{"irreversible": 3}'), page="/agents/debugger/edit/"
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    assert str(agent.policy.max_cost_usd.normalize()) == "2.5" and agent.policy.daily_action_caps == {"irreversible": 3}


def test_every_error_names_its_path_under_the_agent():
    spec = {"name": "x", "slug": "x", "objective": "o", "model": "claude-unknown-9", "policy": {"max_cost_usd": "0"}}
    errors = agent_errors(copy.deepcopy(spec), "agents[3]")
    assert any(e.startswith("agents[3].policy.max_cost_usd:") for e in errors), errors


# --- property: whatever a person types, a 302 with a valid configuration or a 400 with nothing written

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["-1", "0", "0.0", "NaN", "-Infinity", "1e400", "9" * 30, "\x00", "1.5", "25", ""]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    field=st.sampled_from(
        [
            "max_tokens",
            "max_cost_usd",
            "max_tool_calls",
            "max_iterations",
            "max_wall_clock_s",
            "approval_timeout_s",
            "daily_max_runs",
            "daily_max_cost_usd",
            "model",
            "trust_phase",
        ]
    ),
    value=_TEXT,
    caps=_JSON,
)
def test_any_policy_input_is_saved_valid_or_refused_with_a_400_and_nothing_written(team, agent, field, value, caps):
    import json

    before, audits = export_agent(agent), AuditEvent.objects.count()
    try:
        caps_text = json.dumps(caps)
    except ValueError:
        caps_text = "{}"
    response = csrf_post(
        team.owner, "/agents/debugger/edit/", _agent_form(agent, **{field: value, "daily_action_caps": caps_text}), page="/agents/debugger/edit/"
    )
    assert response.status_code in (302, 400), (field, value, caps_text)
    agent.refresh_from_db()
    if response.status_code == 400:
        _unchanged(agent, before, audits)
    else:
        assert agent_errors(export_agent(agent)) == []
