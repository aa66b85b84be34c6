"""Agents as code: `agentops apply` / `agentops export`."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from agentops.agents.models import Agent, ToolGrant, Trigger
from agentops.agents.spec import SpecError, apply_spec, dump_spec, export_spec, load_spec
from agentops.audit.models import AuditEvent
from agentops.llm.prices import DEFAULT_MODEL

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]

SPEC = {
    "version": 1,
    "agents": [
        {
            "name": "Researcher",
            "slug": "researcher",
            "objective": "Read the docs.\nReport back.",
            "model": DEFAULT_MODEL,
            "trust_phase": 2,
            "config": {"planner": "scripted", "script": []},
            "policy": {"max_cost_usd": "2.5", "alarm_cost_usd": "1", "max_tool_calls": 30, "daily_max_runs": 10, "daily_action_caps": {"irreversible": 2}},
            "tools": [
                {"tool": "http_get", "scope": {"domains": ["docs.example.com"]}},
                {"tool": "send_email", "scope": {"recipient_domains": ["example.com"]}},
            ],
            "triggers": [{"name": "nightly", "kind": "schedule", "rules": {"cron": "0 3 * * *", "input": "nightly"}}],
        }
    ],
}


def test_apply_creates_agents_with_policy_grants_and_triggers():
    result = apply_spec(copy.deepcopy(SPEC), actor="test")
    assert result.created == ["researcher"]
    agent = Agent.objects.get(slug="researcher")
    assert agent.trust_phase == 2 and str(agent.policy.max_cost_usd) == "2.500000"
    assert sorted(ToolGrant.objects.filter(agent=agent).values_list("tool", flat=True)) == ["http_get", "send_email"]
    assert Trigger.objects.get(agent=agent).rules["cron"] == "0 3 * * *"
    assert AuditEvent.objects.filter(action="agent.create", target_id=str(agent.pk)).exists()


def test_applying_the_same_spec_twice_changes_nothing():
    apply_spec(copy.deepcopy(SPEC))
    assert apply_spec(copy.deepcopy(SPEC)).unchanged == ["researcher"]


def test_apply_is_declarative_and_audits_before_and_after():
    apply_spec(copy.deepcopy(SPEC))
    changed = copy.deepcopy(SPEC)
    changed["agents"][0]["tools"] = changed["agents"][0]["tools"][:1]
    changed["agents"][0]["trust_phase"] = 3
    assert apply_spec(changed).updated == ["researcher"]
    agent = Agent.objects.get(slug="researcher")
    assert list(agent.grants.values_list("tool", flat=True)) == ["http_get"]
    event = AuditEvent.objects.get(action="agent.update")
    assert event.before["trust_phase"] == 2 and event.after["trust_phase"] == 3


def test_export_then_apply_round_trips():
    apply_spec(copy.deepcopy(SPEC))
    exported = dump_spec(export_spec())
    Agent.objects.all().delete()
    apply_spec(load_spec(exported))
    assert dump_spec(export_spec()) == exported


def test_a_bad_spec_reports_every_error_with_its_path_and_changes_nothing():
    apply_spec(copy.deepcopy(SPEC))
    bad = copy.deepcopy(SPEC)
    good_new = copy.deepcopy(SPEC["agents"][0]) | {"name": "Other", "slug": "other"}
    agent = bad["agents"][0]
    agent["trust_phase"] = 2
    agent["model"] = "gpt-imaginary"
    agent["policy"]["alarm_cost_usd"] = "3"
    agent["tools"].append({"tool": "launch_rockets", "scope": {}})
    agent["tools"][0]["scope"] = {"domains": "docs.example.com"}
    agent["tools"][1]["approval"] = "never"
    agent["triggers"][0]["rules"]["cron"] = "every night"
    bad["agents"].append(good_new)
    with pytest.raises(SpecError) as caught:
        apply_spec(bad)
    errors = caught.value.errors
    expected = [
        "agents[0].model: no price is known for 'gpt-imaginary'",
        "agents[0].policy.alarm_cost_usd: the alarm (3) must be below the cap max_cost_usd (2.5)",
        "agents[0].tools[2].tool: no tool named 'launch_rockets'",
        "agents[0].tools[0].scope.domains: 'docs.example.com' is not of type 'array'",
        "agents[0].tools[1].approval: send_email is irreversible",
        "agents[0].triggers[0].rules.cron: 'every night' is not a valid cron expression",
    ]
    for prefix in expected:
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert not Agent.objects.filter(slug="other").exists()
    assert Agent.objects.get(slug="researcher").model == DEFAULT_MODEL


def test_schema_errors_name_their_path():
    bad = copy.deepcopy(SPEC)
    bad["agents"][0]["trust_phase"] = 7
    bad["agents"][0]["policy"]["max_tool_calls"] = "many"
    del bad["agents"][0]["objective"]
    with pytest.raises(SpecError) as caught:
        apply_spec(bad)
    text = "\n".join(caught.value.errors)
    assert "agents[0]: 'objective' is a required property" in text
    assert "agents[0].trust_phase: 7 is greater than the maximum of 4" in text
    assert "agents[0].policy.max_tool_calls: 'many' is not of type 'integer'" in text


def test_the_command_prints_errors_and_exits_non_zero(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nagents:\n  - name: x\n    slug: Not A Slug\n")
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("agentops", "apply", str(path))
    err = capsys.readouterr().err
    assert "agents[0].slug" in err and "agents[0]: 'objective' is a required property" in err
    path.write_text("version: 1\nagents: [unclosed")
    with pytest.raises(CommandError):
        call_command("agentops", "apply", str(path))
    assert "not valid YAML" in capsys.readouterr().err


def test_the_command_exports_what_apply_wrote(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    call_command("agentops", "apply", str(path))
    assert "created: researcher" in capsys.readouterr().out
    call_command("agentops", "export")
    assert yaml.safe_load(capsys.readouterr().out)["agents"][0]["slug"] == "researcher"


def test_the_shipped_example_spec_applies():
    example = ROOT / "examples" / "agents.yaml"
    if not example.exists():
        pytest.fail("examples/agents.yaml is missing")
    result = apply_spec(load_spec(example.read_text()))
    assert "debugging-agent" in result.created
    assert len(result.created) >= 2


def test_pausing_through_the_spec_halts_the_agents_runs_and_is_audited():
    from agentops.runs.services import run_create

    apply_spec(copy.deepcopy(SPEC))
    agent = Agent.objects.get(slug="researcher")
    queued = run_create(agent=agent, input="x", enqueue=False)
    paused = copy.deepcopy(SPEC)
    paused["agents"][0]["paused"] = True
    assert apply_spec(paused, actor="test").updated == ["researcher"]
    agent.refresh_from_db()
    queued.refresh_from_db()
    assert agent.paused and queued.status == "killed"
    assert AuditEvent.objects.filter(action="agent.pause", target_id=str(agent.pk)).exists()
    assert apply_spec(copy.deepcopy(SPEC), actor="test").updated == ["researcher"]
    assert not Agent.objects.get(slug="researcher").paused


def test_apply_warns_about_a_deprecated_model_with_its_retirement_date_and_still_applies(tmp_path, capsys):
    from anthropic._data import DEPRECATED_MODELS

    from agentops.llm.prices import price_table

    deprecated = next(m for m in DEPRECATED_MODELS if m in price_table())
    spec = copy.deepcopy(SPEC)
    spec["agents"][0]["model"] = deprecated
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    call_command("agentops", "apply", str(path))
    captured = capsys.readouterr()
    assert f"warning: agents[0].model: {deprecated!r} is deprecated" in captured.err
    assert DEPRECATED_MODELS[deprecated] in captured.err
    assert "created: researcher" in captured.out
    assert Agent.objects.get(slug="researcher").model == deprecated
