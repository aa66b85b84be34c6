from __future__ import annotations

import time

import pytest
from django.urls import reverse
from helpers_dashboard import agent_form as _agent_form
from helpers_dashboard import client_for, csrf_post, make_approval, make_run, second_admin_approves

from agentops.agents.models import Agent, ToolGrant, Trigger
from agentops.approvals.models import ApprovalStatus
from agentops.audit.models import AuditEvent
from agentops.guardrails.models import ControlState, Drill
from agentops.llm.prices import DEFAULT_MODEL
from agentops.runs.models import Run, RunStatus, Step

PAGES = [
    "/",
    "/runs/",
    "/runs/{run}/",
    "/runs/{run}/steps/?before=2",
    "/approvals/",
    "/agents/",
    "/agents/debugger/",
    "/audit/",
    "/spend/",
    "/drills/",
    "/tokens/",
    "/kill-switch/",
]


def _pages(run: Run) -> list[str]:
    return [p.format(run=run.pk) for p in PAGES]


# --- reading ---------------------------------------------------------------------------------


def test_every_page_sends_anonymous_visitors_to_sign_in(team, run):
    for path in _pages(run) + ["/agents/debugger/edit/"]:
        response = client_for(None).get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith(reverse("login")), path


def test_every_page_refuses_a_signed_in_outsider(team, run, approval):
    for path in _pages(run) + ["/agents/debugger/edit/"]:
        assert client_for(team.outsider).get(path).status_code == 403, path


@pytest.mark.parametrize("role", ["owner", "approver", "viewer"])
def test_every_member_can_read_every_page(team, run, approval, role):
    client = client_for(getattr(team, role))
    for path in _pages(run):
        assert client.get(path).status_code == 200, path


def test_staff_without_a_group_is_a_viewer(team, run):
    team.outsider.is_staff = True
    team.outsider.save()
    assert client_for(team.outsider).get("/").status_code == 200


def test_an_unknown_run_is_a_404(team):
    assert client_for(team.viewer).get("/runs/999999/").status_code == 404


def test_the_overview_shows_active_runs_pending_approvals_spend_and_tiers(team, run, approval):
    body = client_for(team.viewer).get("/").content.decode()
    assert f"#{run.pk}" in body
    assert "send_email" in body
    assert "Don&#x27;t ship" in body or "Beta-ready" in body or "Internal tool only" in body
    assert "/ $20.00" in body  # today's spend against the daily cap


def test_the_overview_serves_only_its_live_fragment_to_htmx(team, run):
    response = client_for(team.viewer).get("/", HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="live">')
    assert "<html" not in body


def test_a_viewer_sees_the_kill_switch_but_not_its_form(team):
    body = client_for(team.viewer).get("/").content.decode()
    assert "Kill switch" in body
    assert reverse("dashboard:killswitch_engage") not in body


def test_an_admin_sees_the_kill_switch_form_on_every_page(team, run):
    client = client_for(team.owner)
    for path in ["/", f"/runs/{run.pk}/", "/approvals/", "/agents/"]:
        assert reverse("dashboard:killswitch_engage") in client.get(path).content.decode(), path


def test_the_runs_list_filters_by_agent_status_trigger_and_date(team, agent):
    other = Agent.objects.create(name="Other", slug="other", objective="x", model="m")
    from agentops.agents.models import Policy

    Policy.objects.create(agent=other)
    mine = make_run(agent, status=RunStatus.SUCCEEDED)
    theirs = make_run(other, status=RunStatus.FAILED)
    client = client_for(team.viewer)
    body = client.get("/runs/?agent=debugger").content.decode()
    assert f"/runs/{mine.pk}/" in body and f"/runs/{theirs.pk}/" not in body
    body = client.get("/runs/?status=failed").content.decode()
    assert f"/runs/{theirs.pk}/" in body and f"/runs/{mine.pk}/" not in body
    body = client.get("/runs/?trigger=schedule").content.decode()
    assert f"/runs/{mine.pk}/" not in body
    body = client.get("/runs/?since=2000-01-01&until=2000-01-02").content.decode()
    assert "No run matches" in body


def test_the_run_page_shows_budget_bars_status_reason_and_diff(team, agent):
    run = make_run(
        agent,
        status=RunStatus.FAILED,
        status_reason="tests failed in the sandbox",
        result={"diff": "--- a/x.py\n+++ b/x.py\n-old\n+new", "pull_request": {"url": "http://forge/pr/1", "number": 1, "title": "Fix checkout"}},
    )
    body = client_for(team.viewer).get(f"/runs/{run.pk}/").content.decode()
    for text in ["Tokens", "Cost", "Tool calls", "Time", "tests failed in the sandbox", 'class="d-add">+new', "Fix checkout", "http://forge/pr/1"]:
        assert text in body, text


def test_a_10000_step_run_page_shows_a_window_with_bounded_queries(team, agent, django_assert_max_num_queries):
    run = make_run(agent, steps=0)
    Step.objects.bulk_create(Step(run=run, seq=i, kind="observation", payload={"output": f"line {i}"}) for i in range(2, 10_002))
    Run.objects.filter(pk=run.pk).update(next_seq=10_002)
    client = client_for(team.viewer)
    client.get("/")  # warm the session and permission caches
    with django_assert_max_num_queries(14):
        response = client.get(f"/runs/{run.pk}/")
    body = response.content.decode()
    assert body.count('class="step ') == 100
    assert 'id="step-10001"' in body and 'id="step-9901"' not in body
    assert "?before=9902" in body
    with django_assert_max_num_queries(8):
        earlier = client.get(f"/runs/{run.pk}/steps/?before=9902").content.decode()
    assert earlier.count('class="step ') == 100 and 'id="step-9901"' in earlier and "?before=9802" in earlier


def test_a_long_step_text_links_to_the_whole_text(team, run):
    from agentops.runs.steps import step_record

    step = step_record(run=run, kind="observation", payload={"output": "x" * 5000})
    body = client_for(team.viewer).get(f"/runs/{run.pk}/").content.decode()
    assert f"/runs/{run.pk}/steps/{step.seq}/output/" in body
    whole = client_for(team.viewer).get(f"/runs/{run.pk}/steps/{step.seq}/output/")
    assert len(whole.content) == 5000


def test_the_approvals_queue_shows_exactly_what_will_happen(team, run):
    make_approval(run, tool="merge_pull_request", arguments={"number": 7, "diff": "+fixed line"})
    body = client_for(team.viewer).get("/approvals/").content.decode()
    for text in ["merge_pull_request", "irreversible", "The fix is merged; tell the on-call.", 'class="d-add">+fixed line', "left", "&quot;number&quot;: 7"]:
        assert text in body, text


def test_the_spend_page_charts_cost_per_day_per_agent_and_tokens_per_model(team, agent):
    make_run(agent, status=RunStatus.SUCCEEDED, cost_usd="1.25", input_tokens=1000, output_tokens=50)
    body = client_for(team.viewer).get("/spend/?days=7").content.decode()
    assert "seg-bar" in body and "Debugger" in body and DEFAULT_MODEL in body and "$1.25" in body


def test_the_audit_log_filters_by_action(team, agent):
    AuditEvent.objects.create(actor_label="alice", action="kill_switch.engage", detail="drill")
    AuditEvent.objects.create(actor_label="bob", action="approval.approved")
    body = client_for(team.viewer).get("/audit/?action=kill_switch").content.decode()
    assert "kill_switch.engage" in body and "approval.approved" not in body


# --- acting: CSRF on every POST --------------------------------------------------------------

POSTS = [
    ("dashboard:killswitch_engage", {}, {"reason": "x"}),
    ("dashboard:killswitch_release", {}, {"reason": "x"}),
    ("dashboard:drill_start", {}, {}),
    ("dashboard:agent_edit", {"slug": "debugger"}, {}),
    ("dashboard:agent_pause", {"slug": "debugger"}, {"reason": "x"}),
    ("dashboard:agent_resume", {"slug": "debugger"}, {}),
    ("dashboard:grant_add", {"slug": "debugger"}, {}),
    ("dashboard:trigger_add", {"slug": "debugger"}, {}),
    ("dashboard:run_stop", {"run_id": 0}, {}),
    ("dashboard:pull_request_merge", {"pk": 0}, {}),
    ("dashboard:approval_decide", {"approval_id": 0}, {"decision": "approve"}),
    ("dashboard:tokens", {}, {"name": "x"}),
]


def _url(name: str, kwargs: dict, run: Run, approval) -> str:
    kwargs = dict(kwargs)
    if "run_id" in kwargs:
        kwargs["run_id"] = run.pk
    if "approval_id" in kwargs:
        kwargs["approval_id"] = approval.pk
    return reverse(name, kwargs=kwargs)


@pytest.mark.parametrize("name,kwargs,data", POSTS)
def test_every_post_without_a_csrf_token_is_refused(team, run, approval, name, kwargs, data):
    response = client_for(team.owner, csrf=True).post(_url(name, kwargs, run, approval), data)
    assert response.status_code == 403
    assert not ControlState.objects.filter(engaged=True).exists()
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


@pytest.mark.parametrize("name,kwargs,data", POSTS)
def test_every_post_refuses_an_outsider(team, run, approval, name, kwargs, data):
    assert client_for(team.outsider).post(_url(name, kwargs, run, approval), data).status_code == 403


@pytest.mark.parametrize("name,kwargs,data", [p for p in POSTS if p[0] != "dashboard:tokens"])
def test_every_action_refuses_a_viewer(team, run, approval, name, kwargs, data):
    assert client_for(team.viewer).post(_url(name, kwargs, run, approval), data).status_code == 403


# --- the kill switch -------------------------------------------------------------------------


def test_an_admin_engages_the_kill_switch_with_a_reason_and_every_page_shows_the_banner(team, run):
    response = csrf_post(team.owner, "/kill-switch/engage/", {"reason": "agents are looping", "next": "/runs/"})
    assert response.status_code == 302 and response["Location"] == "/runs/"
    state = ControlState.objects.get(pk=1)
    assert state.engaged and state.engaged_by_label == "alice" and state.reason == "agents are looping"
    for path in ["/", "/runs/", "/approvals/", f"/runs/{run.pk}/"]:
        body = client_for(team.viewer).get(path).content.decode()
        assert "KILL SWITCH ENGAGED" in body and "agents are looping" in body and "alice" in body, path


def test_the_kill_switch_needs_a_reason(team):
    csrf_post(team.owner, "/kill-switch/engage/", {"reason": "  "})
    assert not ControlState.objects.filter(engaged=True).exists()


def test_an_approver_cannot_engage_the_kill_switch(team):
    assert csrf_post(team.approver, "/kill-switch/engage/", {"reason": "stop"}).status_code == 403
    assert not ControlState.objects.filter(engaged=True).exists()


def test_releasing_needs_an_admin_and_a_reason(team):
    from agentops.guardrails.killswitch import kill_switch_engage

    kill_switch_engage(actor=team.owner, reason="incident")
    assert csrf_post(team.approver, "/kill-switch/release/", {"reason": "ok"}).status_code == 403
    csrf_post(team.owner, "/kill-switch/release/", {"reason": ""})
    assert ControlState.objects.get(pk=1).engaged
    csrf_post(team.owner, "/kill-switch/release/", {"reason": "incident resolved"})
    state = ControlState.objects.get(pk=1)
    assert not state.engaged and state.release_reason == "incident resolved"


def test_the_kill_switch_redirect_never_leaves_the_site(team):
    response = csrf_post(team.owner, "/kill-switch/engage/", {"reason": "x", "next": "https://evil.example/"})
    assert response["Location"] == "/"


# --- approvals -------------------------------------------------------------------------------


def test_an_approver_approves_an_action(team, approval):
    response = csrf_post(team.approver, f"/approvals/{approval.pk}/decide/", {"decision": "approve"}, page="/approvals/")
    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED and approval.decided_by == team.approver


def test_rejecting_needs_a_comment(team, approval):
    csrf_post(team.approver, f"/approvals/{approval.pk}/decide/", {"decision": "reject", "comment": " "})
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING
    csrf_post(team.approver, f"/approvals/{approval.pk}/decide/", {"decision": "reject", "comment": "wrong recipient"})
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.REJECTED and approval.comment == "wrong recipient"


def test_a_double_click_produces_one_decision(team, approval):
    client = client_for(team.approver)
    first = client.post(f"/approvals/{approval.pk}/decide/", {"decision": "approve"}, follow=True)
    second = client.post(f"/approvals/{approval.pk}/decide/", {"decision": "reject", "comment": "oops"}, follow=True)
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED
    assert "Approved" in first.content.decode()
    assert "already approved" in second.content.decode()
    assert AuditEvent.objects.filter(action__startswith="approval.").count() == 1


def test_a_viewer_cannot_decide(team, approval):
    assert client_for(team.viewer).post(f"/approvals/{approval.pk}/decide/", {"decision": "approve"}).status_code == 403
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


# --- runs ------------------------------------------------------------------------------------


def test_an_approver_starts_a_run_by_hand_and_lands_on_it(team, agent):
    response = csrf_post(team.approver, f"/agents/{agent.slug}/runs/start/", {"input": "look at the checkout errors"}, page=f"/agents/{agent.slug}/")
    run = Run.objects.get(agent=agent)
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert (run.status, run.trigger_kind, run.input) == (RunStatus.QUEUED, "manual", "look at the checkout errors")
    assert AuditEvent.objects.filter(action="run.create", actor_label=team.approver.username).exists()


def test_a_viewer_cannot_start_a_run_and_an_outsider_gets_403(team, agent):
    for user in (team.viewer, team.outsider):
        assert csrf_post(user, f"/agents/{agent.slug}/runs/start/", {"input": "x"}).status_code == 403
    assert not Run.objects.filter(agent=agent).exists()


def test_starting_a_run_without_a_csrf_token_is_refused(team, agent):
    response = client_for(team.approver, csrf=True).post(f"/agents/{agent.slug}/runs/start/", {"input": "x"})
    assert response.status_code == 403 and not Run.objects.filter(agent=agent).exists()


def test_a_refused_run_says_why(team, agent):
    from agentops.guardrails.killswitch import kill_switch_engage

    kill_switch_engage(actor=team.owner, reason="incident")
    client = client_for(team.approver)
    page = client.post(f"/agents/{agent.slug}/runs/start/", {"input": "x"}, follow=True)
    assert not Run.objects.filter(agent=agent).exists()
    assert "Run refused: kill switch engaged" in page.content.decode()


def test_an_approver_stops_a_run(team, agent):
    run = make_run(agent, status=RunStatus.QUEUED)
    csrf_post(team.approver, f"/runs/{run.pk}/stop/", {"reason": "looks wrong"}, page=f"/runs/{run.pk}/")
    run.refresh_from_db()
    assert run.status == RunStatus.KILLED and "looks wrong" in run.status_reason


def test_merging_a_pull_request_that_does_not_exist_is_a_404(team, agent):
    make_run(agent, status=RunStatus.SUCCEEDED, result={"pull_request": {"id": 1}})
    assert client_for(team.approver).post("/pulls/999999/merge/").status_code == 404


def test_an_approver_merges_the_runs_local_pull_request_once(team, agent, monkeypatch):
    from agentops.forges.models import PullRequest
    from dashboard import views

    merged = []
    monkeypatch.setattr(views.forge, "pull_request_merge", lambda *, pr, actor: merged.append((pr.pk, actor)) or "sha")
    run = make_run(agent, status=RunStatus.SUCCEEDED, result={"pull_request": {"number": 1, "url": "/forge/app/pulls/1", "title": "Fix"}})
    pr = PullRequest.objects.create(repo="app", number=1, title="Fix", branch="agentops/fix", base="main", diff="+ok", run=run)
    body = client_for(team.approver).get(f"/runs/{run.pk}/").content.decode()
    assert "Merge pull request" in body and 'class="d-add">+ok' in body
    assert "Merge pull request" not in client_for(team.viewer).get(f"/runs/{run.pk}/").content.decode()
    assert f'action="/pulls/{pr.pk}/merge/"' in body  # one merge path: the pull request's own
    assert client_for(team.viewer).post(f"/pulls/{pr.pk}/merge/").status_code == 403
    csrf_post(team.approver, f"/pulls/{pr.pk}/merge/", {}, page=f"/runs/{run.pk}/")
    assert merged == [(pr.pk, team.approver)]


# --- agents ----------------------------------------------------------------------------------


def test_an_admin_changes_the_trust_phase_and_it_is_audited_with_before_and_after(team, agent):
    response = csrf_post(
        team.owner,
        "/agents/debugger/edit/",
        _agent_form(agent, trust_phase=3, trust_reason="a month of merged fixes", trust_confirm="on"),
        page="/agents/debugger/edit/",
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.trust_phase == 3
    event = AuditEvent.objects.get(action="agent.update")
    assert event.before == {"trust_phase": 1} and event.after == {"trust_phase": 3} and event.actor_label == "alice"


def test_changing_the_cost_cap_marks_the_budget_as_set_by_a_person(team, agent):
    client_for(team.owner).post("/agents/debugger/edit/", _agent_form(agent, max_cost_usd="2.5", alarm_cost_usd="1"))
    agent.policy.refresh_from_db()
    assert agent.policy.budget_set_by_person and str(agent.policy.max_cost_usd) == "2.500000"
    event = AuditEvent.objects.get(action="policy.update")
    assert event.after["budget_set_by_person"] is True and event.before["max_cost_usd"] == "5.000000"


def test_an_alarm_above_its_cap_is_shown_beside_the_field(team, agent):
    response = client_for(team.owner).post("/agents/debugger/edit/", _agent_form(agent, alarm_tokens=10**9))
    assert response.status_code == 400
    assert "an alarm must sit below its cap" in response.content.decode()


def test_an_approver_cannot_configure_an_agent(team, agent):
    assert client_for(team.approver).get("/agents/debugger/edit/").status_code == 403
    assert client_for(team.approver).post("/agents/debugger/edit/", _agent_form(agent, trust_phase=4)).status_code == 403
    agent.refresh_from_db()
    assert agent.trust_phase == 1


def test_a_grant_scope_is_validated_against_the_tools_scope_schema(team, agent):
    response = client_for(team.owner).post(
        "/agents/debugger/grants/new/", {"new-tool": "send_email", "new-scope": '{"domains": ["x.com"]}', "new-approval": "default"}
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "field-error" in body and "recipient_domains" in body
    assert not ToolGrant.objects.filter(tool="send_email").exists()


def test_broken_json_in_a_scope_says_where(team, agent):
    response = client_for(team.owner).post(
        "/agents/debugger/grants/new/", {"new-tool": "send_email", "new-scope": '{"recipient_domains": [}', "new-approval": "default"}
    )
    assert response.status_code == 400 and "not valid JSON" in response.content.decode()


def test_an_irreversible_tool_cannot_be_set_to_never_ask(team, agent):
    response = client_for(team.owner).post(
        "/agents/debugger/grants/new/", {"new-tool": "send_email", "new-scope": '{"recipient_domains": ["example.com"]}', "new-approval": "never"}
    )
    assert response.status_code == 400 and "always needs a person" in response.content.decode()


def test_an_admin_grants_changes_and_removes_a_tool_with_an_audit_trail(team, agent):
    client = client_for(team.owner)
    client.post("/agents/debugger/grants/new/", {"new-tool": "send_email", "new-scope": '{"recipient_domains": ["example.com"]}', "new-approval": "always"})
    # An irreversible tool: granted once a second admin approves.
    assert not ToolGrant.objects.filter(agent=agent, tool="send_email").exists() and second_admin_approves(agent) == 1
    grant = ToolGrant.objects.get(agent=agent, tool="send_email")
    client.post(
        f"/agents/debugger/grants/{grant.pk}/",
        {f"g{grant.pk}-tool": "send_email", f"g{grant.pk}-scope": '{"recipient_domains": ["corp.example"]}', f"g{grant.pk}-approval": "always"},
    )
    grant.refresh_from_db()
    assert grant.scope == {"recipient_domains": ["corp.example"]}
    client.post(f"/agents/debugger/grants/{grant.pk}/delete/")
    assert not ToolGrant.objects.filter(pk=grant.pk).exists()
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[-5:] == ["config_change.request", "agent.update", "config_change.approved", "grant.update", "grant.delete"]
    update = AuditEvent.objects.get(action="grant.update")
    assert update.before["scope"] == {"recipient_domains": ["example.com"]} and update.after["scope"] == {"recipient_domains": ["corp.example"]}


def test_an_admin_adds_a_schedule_trigger_and_a_bad_cron_is_refused(team, agent):
    client = client_for(team.owner)
    bad = client.post(
        "/agents/debugger/triggers/new/", {"newt-name": "nightly", "newt-kind": "schedule", "newt-rules": '{"cron": "not cron"}', "newt-enabled": "on"}
    )
    assert bad.status_code == 400 and "valid" in bad.content.decode()
    client.post(
        "/agents/debugger/triggers/new/", {"newt-name": "nightly", "newt-kind": "schedule", "newt-rules": '{"cron": "0 3 * * *"}', "newt-enabled": "on"}
    )
    trigger = Trigger.objects.get(agent=agent, name="nightly")
    assert trigger.rules == {"cron": "0 3 * * *"}
    client.post(
        f"/agents/debugger/triggers/{trigger.pk}/",
        {f"t{trigger.pk}-name": "nightly", f"t{trigger.pk}-kind": "schedule", f"t{trigger.pk}-rules": '{"cron": "0 4 * * *"}'},
    )
    trigger.refresh_from_db()
    assert trigger.rules == {"cron": "0 4 * * *"} and trigger.enabled is False
    assert AuditEvent.objects.filter(action__in=["trigger.create", "trigger.update"]).count() == 2


def test_an_admin_pauses_and_resumes_an_agent(team, agent):
    csrf_post(team.owner, "/agents/debugger/pause/", {"reason": "noisy"}, page="/agents/debugger/")
    agent.refresh_from_db()
    assert agent.paused and agent.paused_reason == "noisy"
    csrf_post(team.owner, "/agents/debugger/resume/", {}, page="/agents/debugger/")
    agent.refresh_from_db()
    assert not agent.paused


def test_the_policy_page_suggests_budgets_from_history(team, agent):
    for cost in ["0.10", "0.20", "0.30"]:
        make_run(agent, status=RunStatus.SUCCEEDED, cost_usd=cost)
    body = client_for(team.viewer).get("/agents/debugger/").content.decode()
    assert "<b>$0.20</b>" in body and "<b>$2.00</b>" in body and "<b>$10.00</b>" in body


# --- drills ----------------------------------------------------------------------------------


def test_an_admin_starts_a_drill_through_the_domain_function(team, monkeypatch):
    from agentops.guardrails import drills
    from agentops.guardrails.models import Drill

    calls = []

    def fake_drill_start(*, actor, synthetic_runs=5):
        calls.append((actor, synthetic_runs))
        return Drill.objects.create(started_by=actor, synthetic_runs=synthetic_runs)

    monkeypatch.setattr(drills, "drill_start", fake_drill_start)
    response = client_for(team.owner).post("/drills/start/", {"synthetic_runs": "3"}, follow=True)
    assert calls == [(team.owner, 3)]
    page = response.content.decode()
    assert "started on a worker" in page and 'hx-trigger="every 2s"' in page


def test_an_approver_cannot_start_a_drill(team):
    assert client_for(team.approver).post("/drills/start/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_a_drill_started_from_the_dashboard_returns_at_once_and_the_worker_task_records_its_result(team, monkeypatch):
    from agentops.runs import tasks

    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda name, *args, **kw: queued.append((name, args)))
    started = time.monotonic()
    response = csrf_post(team.owner, "/drills/start/", {"synthetic_runs": "2"}, page="/drills/")
    elapsed = time.monotonic() - started
    assert response.status_code == 302
    assert elapsed < 1.0, f"the drill view held the request for {elapsed:.1f} s"
    drill = Drill.objects.get()
    assert drill.status == "running" and not ControlState.objects.filter(engaged=True).exists(), "the switch is engaged by the worker, not the request"
    assert queued == [("agentops.runs.tasks.execute_drill", (drill.pk,))]
    polled = client_for(team.owner).get("/drills/?part=history", HTTP_HX_REQUEST="true")
    assert 'hx-trigger="every 2s"' in polled.content.decode()

    assert tasks.execute_drill(drill.pk) == "passed"
    drill.refresh_from_db()
    assert drill.status == "passed" and drill.synthetic_runs == 2 and drill.actions_after_engage == 0
    assert not ControlState.objects.get(pk=1).engaged
    assert tasks.execute_drill(drill.pk) == "passed", "a duplicate job must not run the drill again"
    assert Run.objects.filter(agent__slug="kill-switch-drill").count() == 2
    done = client_for(team.owner).get("/drills/?part=history", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in done and "passed" in done


def test_a_second_drill_is_refused_while_one_is_running(team, monkeypatch):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **kw: None)
    client_for(team.owner).post("/drills/start/", {"synthetic_runs": "1"})
    response = client_for(team.owner).post("/drills/start/", {"synthetic_runs": "1"}, follow=True)
    assert "another drill is running" in response.content.decode()
    assert Drill.objects.count() == 1


# --- tokens ----------------------------------------------------------------------------------


def test_a_member_creates_a_token_shown_once_and_revokes_it(team):
    client = client_for(team.viewer)
    body = client.post("/tokens/", {"name": "chatbot", "scope": "read", "expires_in_days": "90"}).content.decode()
    assert 'id="new-token">aop_' in body
    token = team.viewer.api_tokens.get()
    assert "aop_" not in client.get("/tokens/").content.decode().split("Your tokens")[1].replace(token.prefix, "")
    client.post(f"/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_nobody_revokes_someone_elses_token(team):
    from dashboard.services import api_token_create

    token, _ = api_token_create(user=team.owner, name="mine", scope="read")
    assert client_for(team.viewer).post(f"/tokens/{token.pk}/revoke/").status_code == 404


# --- the agent-configuration write path ------------------------------------------------------


def test_agent_configuration_is_written_by_the_agents_domain_for_any_caller(agent):
    import dashboard.services
    from agentops.agents import services

    for name in ["agent_update", "policy_update", "grant_save", "grant_delete", "trigger_save", "grant_scope_errors"]:
        assert not hasattr(dashboard.services, name), name
    services.agent_update(agent=agent, actor="cli", changes={"trust_phase": 2}, reason="drafts reviewed for a month")
    grant = services.grant_save(agent=agent, actor="cli", tool="write_file", scope={"paths": ["src/*"]}, approval="always")
    services.grant_delete(grant=grant, actor="cli")
    assert list(AuditEvent.objects.filter(actor_label="cli").order_by("id").values_list("action", flat=True)) == [
        "agent.update",
        "grant.create",
        "grant.delete",
    ]
    # An irreversible tool waits for a second admin, whoever asks.
    with pytest.raises(services.SecondAdminRequired):
        services.grant_save(agent=agent, actor="cli", tool="send_email", scope={"recipient_domains": ["example.com"]}, approval="always")
