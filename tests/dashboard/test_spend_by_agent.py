"""Spend, stacked by agent, with each agent's own daily cap line, and cost per run and per step."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.utils import timezone
from helpers_dashboard import client_for

from agentops.agents.models import Agent, Policy
from agentops.llm.prices import DEFAULT_MODEL
from agentops.runs.models import Run, RunStatus, Step, StepKind
from agentops.runs.services import run_create
from agentops.runs.steps import step_record

pytestmark = pytest.mark.django_db


def _spent(agent: Agent, cost: str, *, turns: list[str] = ()) -> Run:
    run = run_create(agent=agent, input="incident", actor="system", enqueue=False)
    for turn_cost in turns:
        step_record(
            run=run,
            kind=StepKind.MODEL_CALL,
            payload={"text": "thinking"},
            model_id=DEFAULT_MODEL,
            input_tokens=1200,
            output_tokens=80,
            cost_usd=Decimal(turn_cost),
            latency_ms=900,
        )
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, cost_usd=Decimal(cost), model_calls=len(turns), finished_at=timezone.now())
    run.refresh_from_db()
    return run


@pytest.fixture
def second_agent(db) -> Agent:
    other = Agent.objects.create(name="Triage", slug="triage", objective="Label issues.", model=DEFAULT_MODEL)
    Policy.objects.create(agent=other, daily_max_cost_usd=Decimal("0.50"))
    return other


def test_each_agent_has_its_own_cap_line_in_its_colour(team, agent, second_agent):
    _spent(agent, "6.00", turns=["4.00", "2.00"])
    _spent(second_agent, "0.80", turns=["0.80"])
    body = client_for(team.viewer).get("/spend/").content.decode()
    lines = re.findall(r'<span class="cap-line agent-cap h-(\d+) b-(\d)" title="([^"]+)"', body)
    titles = {title for _, _, title in lines}
    assert "Debugger: daily cap $20.00" in titles and "Triage: daily cap $0.50" in titles
    # one line per agent per day column, each agent in its own colour, at its own height
    by_agent = {title: (h, c) for h, c, title in lines}
    assert by_agent["Debugger: daily cap $20.00"] != by_agent["Triage: daily cap $0.50"]
    assert by_agent["Debugger: daily cap $20.00"][0] == "100" and by_agent["Triage: daily cap $0.50"][0] in ("2", "3")  # of $20
    assert "Debugger cap $20.00/day" in body and "Triage cap $0.50/day" in body
    assert "daily cap (all agents)" not in body


def test_a_day_an_agent_spent_over_its_own_cap_is_marked(team, agent, second_agent):
    _spent(second_agent, "0.80", turns=["0.80"])
    _spent(agent, "0.10", turns=["0.10"])
    body = client_for(team.viewer).get("/spend/").content.decode()
    assert re.search(r'class="seg-bar h-\d+ c-\d over-cap" title="Triage [0-9-]+: \$0.80 — over its daily cap"', body)
    assert not re.search(r'over-cap" title="Debugger', body)


def test_spend_shows_cost_per_run_per_model_turn_and_per_step(team, agent, second_agent):
    run = _spent(agent, "1.25", turns=["0.75", "0.50"])
    body = client_for(team.viewer).get("/spend/").content.decode()
    per_agent = body[body.index("<h2>Per agent</h2>") : body.index("<h2>Most expensive runs</h2>")]
    assert "Debugger" in per_agent and "$1.25" in per_agent and "$0.625" in per_agent  # per run · per model turn
    runs = body[body.index("<h2>Most expensive runs</h2>") : body.index("<h2>Most expensive steps")]
    steps = run.next_seq - 1
    assert f'<td class="num opt">{steps}</td>' in runs
    steps_table = body[body.index("<h2>Most expensive steps") : body.index("<h2>Tokens per model</h2>")]
    first = Step.objects.filter(run=run, kind=StepKind.MODEL_CALL).order_by("-cost_usd").first()
    assert f"/runs/{run.pk}/#step-{first.seq}" in steps_table and "$0.75" in steps_table
    assert steps_table.index("$0.75") < steps_table.index("$0.50")


def test_spend_today_is_measured_against_each_agents_daily_cap(team, agent, second_agent):
    _spent(second_agent, "0.40", turns=["0.40"])
    body = client_for(team.viewer).get("/spend/").content.decode()
    per_agent = body[body.index("<h2>Per agent</h2>") : body.index("<h2>Most expensive runs</h2>")]
    assert "$0.40 / $0.50" in per_agent and 'class="meter warn"' in per_agent


def test_the_drill_agent_stays_off_spend(team, agent, settings):
    from dashboard.views import _drill_slug

    drill = Agent.objects.create(name="Drill agent", slug=_drill_slug(), objective="drill", model=DEFAULT_MODEL)
    Policy.objects.create(agent=drill, daily_max_cost_usd=Decimal("9"))
    _spent(drill, "3.00", turns=["3.00"])
    body = client_for(team.viewer).get("/spend/").content.decode()
    assert "Drill agent" not in body


def test_an_outsider_gets_403_on_spend(team):
    assert client_for(team.outsider).get("/spend/").status_code == 403


def test_a_cap_far_above_what_was_spent_is_named_above_the_chart_instead_of_flattening_it(team, agent, second_agent):
    _spent(agent, "1.25", turns=["0.75", "0.50"])
    _spent(second_agent, "0.80", turns=["0.80"])
    body = client_for(team.viewer).get("/spend/").content.decode()
    assert 'title="Debugger: daily cap' not in body
    assert 'Debugger cap $20.00/day <span class="muted">(above the chart)</span>' in body
    assert re.search(r'class="cap-line agent-cap h-(\d+) b-\d" title="Triage: daily cap \$0.50"', body)
    assert re.search(r'class="seg-bar h-100 c-\d" title="Debugger', body) or re.search(r'class="seg-bar h-6\d c-\d" title="Debugger', body)
