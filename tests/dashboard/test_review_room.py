"""The review room (issue 12): the trace viewer, outcomes beside statuses, acting where you look,
the pull request diff view and the everyday habits (time, search, live counters, drills hidden)."""

from __future__ import annotations

import re
import time
from decimal import Decimal

import pytest
from helpers_dashboard import client_for, make_approval, make_run
from trace_seed import seed_pull_request, seed_trace

from agentops.runs.models import Run, RunStatus, Step
from agentops.runs.steps import step_record

pytestmark = pytest.mark.django_db


def _between(body: str, start: str, end: str) -> str:
    i = body.index(start)
    return body[i : body.index(end, i)]


# --- the trace ----------------------------------------------------------------------------------


def test_each_model_turn_is_a_span_with_its_tool_calls_and_their_observations_nested(team, agent):
    run = seed_trace(agent)
    body = client_for(team.viewer).get(f"/runs/{run.pk}/").content.decode()
    steps = list(Step.objects.filter(run=run).order_by("seq"))
    first_turn = next(s for s in steps if s.kind == "model_call")
    call = next(s for s in steps if s.kind == "tool_call")
    obs = next(s for s in steps if s.kind == "observation")
    turn_html = _between(body, f'id="step-{first_turn.seq}"', "</details>\n</li>")
    # the call is inside the turn, and its observation inside the call
    assert f'id="step-{call.seq}"' in turn_html and f'id="step-{obs.seq}"' in turn_html
    assert turn_html.index(f'id="step-{call.seq}"') < turn_html.index('<ol class="result">') < turn_html.index(f'id="step-{obs.seq}"')
    # the turn's totals: duration, tokens and cost
    assert "2.3 s" in turn_html and "3,340 tok" in turn_html and "$0.0117" in turn_html


def test_every_tool_span_shows_how_long_it_took_and_a_waterfall_bar(team, agent):
    run = seed_trace(agent)
    body = client_for(team.viewer).get(f"/runs/{run.pk}/").content.decode()
    tests = next(s for s in Step.objects.filter(run=run, kind="tool_call").order_by("seq") if s.payload["tool"] == "run_tests")
    span = _between(body, f'id="step-{tests.seq}"', "</summary>")
    assert re.search(r'class="m-dur">6\.\d s<', span), span
    assert re.search(r'class="wf-bar l-\d+ w-\d+"', span)


def test_a_file_write_is_a_diff_and_test_output_shows_the_failure_first(team, agent):
    run = seed_trace(agent)
    body = client_for(team.viewer).get(f"/runs/{run.pk}/").content.decode()
    assert 'class="d-file">+++ b/tests/test_cart.py</span>' in body
    assert 'class="d-add">+def test_digital_goods_total():</span>' in body
    failing = _between(body, '<div class="failures">', "</pre>")
    assert "1 failed, 13 passed" in failing and "FAILED tests/test_cart.py::test_digital_goods_total" in failing
    assert "E       TypeError" in failing and "collected 14 items" not in failing


def test_gates_are_a_table_with_their_evidence(team, agent):
    run = seed_trace(agent)
    body = client_for(team.viewer).get(f"/runs/{run.pk}/").content.decode()
    gate = _between(body, "Gate <code>change</code>", "</table>")
    assert "<th>tree</th>" in gate and "9c2d7a4e1b2f" in gate and "checkout/cart.py" in gate
    assert 'id="gates"' in body and "<code>no_weakened_tests</code>" in body


def test_the_trace_links_to_the_first_error_guardrail_and_failed_gate(team, agent):
    run = make_run(agent, steps=0)
    for i in range(300):
        step_record(run=run, kind="observation", payload={"output": f"line {i}"})
    err = step_record(run=run, kind="error", payload={"error": "boom"})
    guard = step_record(run=run, kind="guardrail", payload={"guard": "budget", "reason": "over"})
    gate = step_record(run=run, kind="gate", payload={"gate": "tests", "passed": False, "detail": "2 failed"})
    for i in range(200):
        step_record(run=run, kind="observation", payload={"output": f"later {i}"})
    client = client_for(team.viewer)
    body = client.get(f"/runs/{run.pk}/").content.decode()
    for seq in (err.seq, guard.seq, gate.seq):
        assert f'href="?around={seq}#step-{seq}"' in body
    assert f'id="step-{err.seq}"' not in body  # outside the newest window
    around = client.get(f"/runs/{run.pk}/?around={err.seq}").content.decode()
    assert f'id="step-{err.seq}"' in around and "go to the latest" in around
    assert 'data-gap="1"' in around
    # the kind filters count every kind of the whole run
    assert re.search(r'data-kind-filter="observation" checked> observations <b>500</b>', body)
    assert client.get(f"/runs/{run.pk}/?around=abc").status_code == 404


def test_a_10000_step_run_renders_within_300_ms_with_a_bounded_number_of_queries(team, agent, django_assert_max_num_queries):
    run = make_run(agent, steps=0)
    Step.objects.bulk_create(
        Step(
            run=run,
            seq=i,
            kind=("model_call" if i % 3 == 2 else "tool_call" if i % 3 == 0 else "observation"),
            payload=(
                {"tool": "run_tests", "tool_call_id": f"c{i - i % 3}", "output": f"line {i} " * 20}
                if i % 3 == 1
                else {"tool": "run_tests", "tool_call_id": f"c{i}", "arguments": {}}
            ),
        )
        for i in range(2, 10_002)
    )
    Run.objects.filter(pk=run.pk).update(next_seq=10_002)
    client = client_for(team.viewer)
    client.get("/")
    client.get(f"/runs/{run.pk}/")  # warm the template cache
    with django_assert_max_num_queries(16):
        started = time.perf_counter()
        response = client.get(f"/runs/{run.pk}/")
        elapsed = time.perf_counter() - started
    assert response.status_code == 200 and response.content.decode().count('class="step ') == 100
    assert elapsed < 0.3, f"{elapsed * 1000:.0f} ms"


def test_a_live_step_message_says_which_call_an_observation_belongs_to(team, run):
    from asgiref.sync import async_to_sync
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from dashboard.routing import websocket_urlpatterns

    step_record(run=run, kind="tool_call", payload={"tool": "run_tests", "tool_call_id": "toolu_9", "arguments": {}})
    step_record(run=run, kind="observation", payload={"tool": "run_tests", "tool_call_id": "toolu_9", "output": "1 passed", "is_error": False})

    async def scenario():
        comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/?after=3")
        comm.scope["user"] = team.viewer
        assert (await comm.connect())[0]
        message = await comm.receive_json_from()
        await comm.disconnect()
        return message

    message = async_to_sync(scenario)()
    call, obs = message["steps"]
    assert call["kind"] == "tool_call" and 'data-call-id="toolu_9"' in call["html"] and "running" in call["html"]
    assert obs["call_id"] == "toolu_9" and 'data-for-call="toolu_9"' in obs["html"]
    assert 'id="fact-steps">5<' in message["summary_html"]


# --- outcomes beside statuses --------------------------------------------------------------------


def test_the_outcome_shows_beside_the_status_on_lists_and_the_run_page(team, agent):
    stopped = make_run(agent, status=RunStatus.KILLED, outcome="stopped_by_person", outcome_detail="stopped by bob: wrong repository")
    switch = make_run(agent, status=RunStatus.KILLED, outcome="killed_by_switch", outcome_detail="kill switch: agents are emailing customers")
    gate = make_run(agent, status=RunStatus.FAILED, outcome="gate_failed", outcome_detail="gate secrets failed")
    client = client_for(team.viewer)
    runs = client.get("/runs/").content.decode()
    for label, detail in [
        ("stopped by a person", "wrong repository"),
        ("kill switch", "agents are emailing customers"),
        ("stopped by a gate", "gate secrets failed"),
    ]:
        assert label in runs and detail in runs
    page = client.get(f"/runs/{stopped.pk}/").content.decode()
    assert "stopped by a person" in page and "stopped by bob: wrong repository" in page and "s-killed" in page
    assert "o-stop" in client.get(f"/runs/{switch.pk}/").content.decode()
    assert "o-bad" in client.get(f"/runs/{gate.pk}/").content.decode()


def test_a_pull_request_outcome_links_to_the_pull_request(team, agent):
    run = make_run(agent, status=RunStatus.SUCCEEDED, outcome="pr_opened", result={"pull_request": {"number": 4, "url": "http://forge/pr/4"}})
    body = client_for(team.viewer).get("/").content.decode()
    assert '<a href="http://forge/pr/4">PR opened #4</a>' in body
    assert f"/runs/{run.pk}/" in body


# --- act where you look ---------------------------------------------------------------------------


def test_an_approver_decides_from_the_run_page_and_a_viewer_sees_no_buttons(team, run):
    approval = make_approval(run)
    page = client_for(team.approver).get(f"/runs/{run.pk}/").content.decode()
    actions = _between(page, 'id="run-actions"', "</section>")
    assert f'action="/approvals/{approval.pk}/decide/"' in actions and "Approve" in actions and 'name="comment" required' in actions
    assert f'name="next" value="/runs/{run.pk}/"' in actions
    assert "Approve" not in _between(client_for(team.viewer).get(f"/runs/{run.pk}/").content.decode(), 'id="run-actions"', "</section>")
    response = client_for(team.approver).post(f"/approvals/{approval.pk}/decide/", {"decision": "approve", "comment": "", "next": f"/runs/{run.pk}/"})
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    fragment = client_for(team.approver).get(f"/runs/{run.pk}/?part=actions", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.startswith('<div id="run-actions"') and "Approve" not in fragment


def test_the_overview_counts_a_pull_request_waiting_to_be_merged_and_offers_decisions(team, agent):
    run = seed_trace(agent)
    seed_pull_request(run)
    waiting = make_run(agent)
    approval = make_approval(waiting)
    body = client_for(team.approver).get("/").content.decode()
    tile = _between(body, 'class="tile attention"', "</a>")
    assert '<span class="tile-n">2</span>' in tile and "1 to merge" in tile
    assert f'action="/approvals/{approval.pk}/decide/"' in body and "checkout-service#2" in body
    assert f'action="/runs/{waiting.pk}/stop/"' in body


def test_the_header_counters_are_served_as_json_to_members_only(team, agent):
    make_approval(make_run(agent))
    counts = client_for(team.viewer).get("/live/counts/").json()
    assert counts == {"approvals": 1, "active": 1, "pulls": 0}
    assert client_for(team.outsider).get("/live/counts/").status_code == 403
    assert client_for(None).get("/live/counts/").status_code in (302, 403)


def test_the_runs_and_approvals_pages_serve_their_live_fragment(team, run):
    make_approval(run)
    for path in ("/runs/", "/approvals/"):
        body = client_for(team.viewer).get(path, HTTP_HX_REQUEST="true").content.decode()
        assert body.lstrip().startswith('<div id="live">') and "<html" not in body, path


# --- the pull request page -----------------------------------------------------------------------


def test_the_diff_has_a_file_tree_line_numbers_colours_and_both_layouts(team, agent):
    pr = seed_pull_request(seed_trace(agent))
    body = client_for(team.viewer).get(f"/pulls/{pr.pk}/").content.decode()
    tree = _between(body, 'class="file-tree', "</nav>")
    assert 'href="#file-checkout-cart-py"' in tree and 'href="#file-tests-test_cart-py"' in tree and "+4" in tree
    assert '<table class="code unified">' in body and '<table class="code split">' in body
    # line 2 deleted and added again: numbered on each side, coloured by Pygments
    assert re.search(r'<tr class="del"><td class="ln">2</td><td class="ln"></td>', body)
    assert re.search(r'<tr class="add"><td class="ln"></td><td class="ln">23</td>', body)
    assert '<span class="hl-k">def</span>' in body


def test_the_description_is_rendered_markdown_without_script(team, agent):
    pr = seed_pull_request(seed_trace(agent))
    body = client_for(team.viewer).get(f"/pulls/{pr.pk}/").content.decode()
    description = _between(body, '<div class="markdown">', "</section>")
    assert "<h2>Root cause</h2>" in description and "<strong>digital goods</strong>" in description and "<table>" in description
    assert "<script>" not in description and "&lt;script&gt;" in description


def test_markdown_drops_script_links_and_attributes():
    from dashboard.templatetags.dashboard_tags import markdown

    html = markdown('[x](javascript:alert(1)) [y](https://ok.example) ![i](https://img) <b onclick="x">b</b>')
    assert 'href="javascript' not in html and "<b onclick" not in html and "<img" not in html
    assert 'href="https://ok.example"' in html and 'rel="nofollow noopener noreferrer"' in html


def test_merging_asks_for_a_confirmation_that_names_the_target_branch(team, agent):
    pr = seed_pull_request(seed_trace(agent))
    body = client_for(team.approver).get(f"/pulls/{pr.pk}/").content.decode()
    confirm = _between(body, '<details class="confirm" id="merge">', "</details>")
    assert f'action="/pulls/{pr.pk}/merge/"' in confirm and "Confirm: merge into main" in confirm and "<code>agentops/fix-cart-total-2</code>" in confirm


def test_the_pull_request_links_to_its_run_and_error_and_the_run_back(team, agent):
    from agentops.triggers.models import ErrorGroup, ErrorProject

    project = ErrorProject.objects.create(name="Checkout", slug="checkout")
    from django.utils import timezone

    group = ErrorGroup.objects.create(
        project=project, fingerprint="f" * 32, title="TypeError in cart.total", first_seen=timezone.now(), last_seen=timezone.now()
    )
    run = seed_trace(agent, fingerprint=group.run_fingerprint)
    pr = seed_pull_request(run)
    body = client_for(team.viewer).get(f"/pulls/{pr.pk}/").content.decode()
    assert f'href="/runs/{run.pk}/"' in body and f'href="/errors/{group.pk}/"' in body
    back = client_for(team.viewer).get(f"/runs/{run.pk}/").content.decode()
    assert f'href="/pulls/{pr.pk}/"' in back and f'href="/errors/{group.pk}/"' in back


# --- habits ----------------------------------------------------------------------------------------


def test_times_are_relative_with_the_absolute_time_and_zone_on_hover(team, run):
    body = client_for(team.viewer).get("/runs/").content.decode()
    assert re.search(r'<time class="rel" datetime="[^"]+" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">', body)


def test_runs_can_be_searched_by_input_agent_and_error(team, agent):
    hit = make_run(agent, status=RunStatus.FAILED, final_error="KeyError: 'sku' in inventory.py")
    other = make_run(agent)
    Run.objects.filter(pk=other.pk).update(input="rotate the logs")
    client = client_for(team.viewer)
    body = client.get("/runs/?q=sku").content.decode()
    assert f"/runs/{hit.pk}/" in body and f"/runs/{other.pk}/" not in body
    assert f"/runs/{other.pk}/" in client.get("/runs/?q=ROTATE").content.decode()
    assert f"/runs/{hit.pk}/" in client.get(f"/runs/?q=%23{hit.pk}").content.decode()
    assert "No run matches" in client.get("/runs/?q=%27%22<script>").content.decode()


def test_the_drill_agent_and_its_runs_stay_off_the_everyday_pages(team, agent):
    from agentops.guardrails.drills import drill_agent

    drill = drill_agent()
    synthetic = make_run(drill, status=RunStatus.KILLED, cost_usd=Decimal("0"))
    client = client_for(team.viewer)
    for path in ("/", "/runs/", "/agents/"):
        body = client.get(path).content.decode()
        assert drill.name not in body and f"/runs/{synthetic.pk}/" not in body, path
    assert f"/runs/{synthetic.pk}/" in client.get(f"/runs/?agent={drill.slug}").content.decode()


# --- spend ---------------------------------------------------------------------------------------


def test_spend_draws_the_daily_cap_line_and_lists_cost_per_run_and_per_turn(team, agent):
    run = seed_trace(agent)
    body = client_for(team.viewer).get("/spend/?days=7").content.decode()
    # each agent's own daily cap, in its colour (issue 12: not one line for the sum of the caps)
    assert "Debugger cap $20.00/day" in body
    costly = _between(body, "Most expensive runs", "</table>")
    assert f"/runs/{run.pk}/" in costly and "$0.0738" in costly and "$0.0185" in costly  # 0.0738 over 4 turns
