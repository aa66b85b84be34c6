"""A second `manage.py demo` resumes: it neither re-applies the example spec over what a person
changed nor reports the error again once a run took it on; the run's URL is printed for watching."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command

from agentops.agents.models import Agent, Trigger
from agentops.llm.scripted import ScriptError, load_script
from agentops.runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


def demo(*args: str) -> str:
    out = io.StringIO()
    call_command("demo", *args, stdout=out)
    return out.getvalue()


def test_a_second_demo_keeps_what_a_person_changed_in_the_dashboard(settings, tmp_path):
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    demo()
    agent = Agent.objects.get(slug="debugging-agent")
    Agent.objects.filter(pk=agent.pk).update(trust_phase=2, objective="Changed by a person.")
    agent.policy.max_tokens = 123_456
    agent.policy.save()
    Trigger.objects.filter(agent=agent, kind="error").update(enabled=False)
    second = demo()
    agent.refresh_from_db()
    agent.policy.refresh_from_db()
    assert (agent.trust_phase, agent.objective, agent.policy.max_tokens) == (2, "Changed by a person.", 123_456)
    assert not Trigger.objects.get(agent=agent, kind="error").enabled
    assert "kept as configured: debugging-agent, debugging-agent-mcp, test-expansion-agent" in second


def test_a_demo_creates_only_the_agents_that_are_missing(settings, tmp_path):
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    demo()
    Agent.objects.filter(slug="test-expansion-agent").delete()
    Agent.objects.filter(slug="debugging-agent").update(objective="Changed by a person.")
    out = demo()
    assert "created ['test-expansion-agent']" in out
    assert Agent.objects.get(slug="debugging-agent").objective == "Changed by a person."


def test_a_second_demo_does_not_report_the_error_again(settings, tmp_path, live_server):
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    url_file = tmp_path / "run-url"
    first = demo("--send-error", live_server.url, "--run-url-file", str(url_file))
    assert "failed with ConnectionPoolExhaustedError" in first
    run = Run.objects.get(agent__slug="debugging-agent")
    assert f"run: {live_server.url}/runs/{run.pk}/" in first
    assert url_file.read_text().strip() == f"{live_server.url}/runs/{run.pk}/"
    second = demo("--send-error", live_server.url, "--run-url-file", str(url_file))
    time.sleep(0.5)
    assert Run.objects.count() == 2  # the error's run and the MCP variant's, each started once
    assert "not reporting it again" in second and "failed with ConnectionPoolExhaustedError" not in second
    assert f"run: {live_server.url}/runs/{run.pk}/" in second


def test_the_demo_agent_is_paced_for_a_person_watching_and_replays_the_recorded_turns():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    paced = load_script(root / "examples" / "scripts" / "debugging-agent-demo.yaml")
    recorded = load_script(root / "examples" / "scripts" / "debugging-agent.yaml")
    assert [t.get("text") for t in paced] == [t.get("text") for t in recorded]
    assert all(t["delay_s"] == 2 for t in paced) and not any("delay_s" in t for t in recorded)


@pytest.mark.parametrize("bad", [{"turns": [], "pace_s": -1}, {"turns": [], "pace_s": True}, {"turns": [], "pace": 1}, {"turns": "other.yaml"}])
def test_a_bad_paced_script_is_refused(bad):
    with pytest.raises(ScriptError):
        load_script(bad)
