"""One queue page, one API and one CLI for every kind of decision: each shows what is asked, why, the
evidence, who may decide and when it expires; each decides through the one write path; bad input is a
clear 4xx, an outsider gets nothing."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from helpers_dashboard import agent_form, client_for, csrf_post, make_approval, make_run

from agentops.agents.models import Agent, ToolGrant
from agentops.approvals.models import Approval, DecisionKind
from agentops.approvals.services import decision_request
from agentops.runs.models import Run, RunStatus
from dashboard.services import api_token_create

REQUESTS: dict[str, dict[str, Any]] = {
    DecisionKind.BUDGET_EXTENSION: {"cap": "cost", "limit": "2", "used": "2.01", "extend_by": "1"},
    DecisionKind.QUESTION: {"question": "Which environment may I restart?", "options": ["staging", "production"]},
    DecisionKind.LOOP_ESCALATION: {"pattern": "same call repeated", "detail": "read_file(a.py) x4", "nudged_at_seq": 7},
}


@pytest.fixture
def mailer(agent: Agent) -> Agent:
    ToolGrant.objects.create(agent=agent, tool="send_email", scope={"recipient_domains": ["example.com"]})
    return agent


@pytest.fixture
def waiting(mailer: Agent) -> Run:
    run = make_run(mailer, status=RunStatus.WAITING_APPROVAL)
    return run


def ask(run: Run, kind: str, n: int = 1, **fields: Any) -> Approval:
    if kind == DecisionKind.APPROVAL:
        return make_approval(run, call=f"call-{n}")
    tool = {"question": "ask_person"}.get(kind, "")
    return decision_request(
        kind=kind,
        run=run,
        agent=run.agent,
        tool=tool,
        tool_call_id=f"{kind}-{n}",
        why_needed="a person decides",
        request=REQUESTS[kind],
        timeout_s=600,
        **fields,
    )


def page(user: Any) -> str:
    response = client_for(user).get("/approvals/")
    assert response.status_code == 200
    return response.content.decode()


def card(html: str, approval: Approval) -> str:
    start = html.index(f'id="approval-{approval.pk}"')
    return html[start : html.index("</article>", start)]


# --- the page -----------------------------------------------------------------------------------------


def test_the_decisions_page_shows_each_kind_with_what_why_evidence_who_and_expiry(team: Any, waiting: Run) -> None:
    asked: dict[str, Approval] = {
        kind: ask(waiting, kind) for kind in [DecisionKind.APPROVAL, DecisionKind.QUESTION, DecisionKind.BUDGET_EXTENSION, DecisionKind.LOOP_ESCALATION]
    }
    html = page(team.approver)
    assert "<h1>Decisions</h1>" in html and "4 waiting for a person" in html
    for kind, approval in asked.items():
        shown = card(html, approval)
        expiry = "then the run ends: budget exceeded" if kind == "budget_extension" else "then the run halts"
        assert "Who may decide" in shown and "anyone with the approver role" in shown and "left" in shown and expiry in shown, kind
        assert "Evidence" in shown and "Spent so far: cost (USD) <b>0</b> of 5" in shown
    assert "ops@example.com" in card(html, asked["approval"]) and 'name="edited_arguments"' in card(html, asked["approval"])
    question = card(html, asked["question"])
    assert "Which environment may I restart?" in question and 'name="answer" value="staging"' in question and 'value="production"' in question
    budget = card(html, asked["budget_extension"])
    assert "cost cap $2 reached" in budget and 'name="answer"' in budget and "Stop the run" in budget
    loop = card(html, asked["loop_escalation"])
    assert "same call repeated" in loop and ">Continue<" in loop and ">Stop<" in loop


def test_a_viewer_sees_decisions_but_no_buttons_and_an_outsider_gets_nothing(team: Any, waiting: Run) -> None:
    approval = ask(waiting, DecisionKind.QUESTION)
    shown = card(page(team.viewer), approval)
    assert "Only approvers can decide" in shown and "<form" not in shown
    assert client_for(team.outsider).get("/approvals/").status_code == 403
    assert client_for(None).get("/approvals/").status_code == 302
    for user in (team.viewer, team.outsider):
        response = client_for(user).post(f"/approvals/{approval.pk}/decide/", {"decision": "approve", "answer": "staging"})
        assert response.status_code == 403
    assert client_for(team.approver).post("/approvals/999999/decide/", {"decision": "approve"}).status_code == 404
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_the_starter_of_a_run_is_told_why_they_may_not_decide_it(team: Any, mailer: Agent) -> None:
    from agentops.runs.services import run_create

    run = run_create(agent=mailer, input="x", actor=team.approver, enqueue=False)
    approval = ask(run, DecisionKind.LOOP_ESCALATION)
    assert "You may not decide this: you started this run" in card(page(team.approver), approval)
    response = client_for(team.approver).post(f"/approvals/{approval.pk}/decide/", {"decision": "approve", "answer": "continue"})
    assert response.status_code == 403 and "you started this run" in response.content.decode()
    assert Approval.objects.get(pk=approval.pk).status == "pending"


# --- deciding on the page -----------------------------------------------------------------------------


def test_an_approver_edits_the_arguments_and_approves_the_edited_call(team: Any, waiting: Run) -> None:
    approval = ask(waiting, DecisionKind.APPROVAL)
    edited = {"to": ["oncall@example.com"], "subject": "Fix deployed", "body": "Deployed at 03:12."}
    response = csrf_post(
        team.approver, f"/approvals/{approval.pk}/decide/", {"decision": "approve", "edited_arguments": json.dumps(edited)}, page="/approvals/"
    )
    assert response.status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.edited_arguments, approval.arguments["to"]) == ("approved", edited, ["ops@example.com"])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"to": ["ops@example.com"', "not valid JSON"),
        ('["ops@example.com"]', "must be a JSON object"),
        ('{"to": ["boss@elsewhere.org"], "subject": "s", "body": "b"}', "elsewhere.org"),
        ('{"to": ["ops@example.com"]}', "required property"),
    ],
)
def test_a_bad_edit_is_refused_in_place_with_what_was_typed(team: Any, waiting: Run, text: str, why: str) -> None:
    approval = ask(waiting, DecisionKind.APPROVAL)
    response = client_for(team.approver).post(f"/approvals/{approval.pk}/decide/", {"decision": "approve", "edited_arguments": text})
    assert response.status_code == 400
    shown = card(response.content.decode(), approval)
    assert f'id="decision-error-{approval.pk}"' in shown and why in shown.replace("&#x27;", "'").replace("&quot;", '"')
    assert "ops@example.com" in shown and Approval.objects.get(pk=approval.pk).status == "pending"


def test_a_question_a_budget_and_a_loop_are_decided_from_the_page(team: Any, waiting: Run) -> None:
    question, budget, loop = (ask(waiting, kind) for kind in [DecisionKind.QUESTION, DecisionKind.BUDGET_EXTENSION, DecisionKind.LOOP_ESCALATION])
    client = client_for(team.approver)
    refused = client.post(f"/approvals/{question.pk}/decide/", {"decision": "approve", "answer": "everything"})
    assert refused.status_code == 400 and "one of: staging, production" in refused.content.decode()
    assert client.post(f"/approvals/{question.pk}/decide/", {"decision": "approve", "answer": "staging"}).status_code == 302
    assert client.post(f"/approvals/{budget.pk}/decide/", {"decision": "approve", "answer": "25"}).status_code == 400
    assert client.post(f"/approvals/{budget.pk}/decide/", {"decision": "approve", "answer": "1.5"}).status_code == 302
    followed = client.post(f"/approvals/{loop.pk}/decide/", {"decision": "reject", "answer": "stop"}, follow=True)
    assert f"Stopped run {waiting.pk}." in followed.content.decode()
    assert [(a.status, a.answer) for a in Approval.objects.filter(pk__in=[question.pk, budget.pk, loop.pk]).order_by("pk")] == [
        ("approved", "staging"),
        ("approved", "1.5"),
        ("rejected", "stop"),
    ]


def test_a_second_admin_applies_a_phase_4_change_from_the_page(team: Any, agent: Agent) -> None:
    from django.contrib.auth.models import User

    from dashboard.roles import ensure_roles

    form = agent_form(agent, trust_phase=4, trust_reason="forty clean runs", trust_confirm="on", name="Debugger 2")
    followed = client_for(team.owner).post(f"/agents/{agent.slug}/edit/", form, follow=True)
    assert "needs a second admin" in followed.content.decode()
    agent.refresh_from_db()
    assert (agent.name, agent.trust_phase) == ("Debugger 2", 1)
    change = Approval.objects.get(kind="config_change")
    shown = card(page(team.owner), change)
    assert "You may not decide this: you asked for this change" in shown
    second = User.objects.create_user("dora")
    second.groups.add(ensure_roles()["admin"])
    html = page(second)
    assert "trust phase 1 -&gt; 4" in card(html, change) and "Approve and apply (second admin)" in card(html, change)
    assert client_for(second).post(f"/approvals/{change.pk}/decide/", {"decision": "approve"}).status_code == 302
    assert Agent.objects.get(pk=agent.pk).trust_phase == 4
    # The overview lists a configuration change (it has no run) without breaking.
    assert client_for(team.owner).get("/").status_code == 200


def test_the_overview_offers_a_configuration_change_as_a_link(team: Any, agent: Agent) -> None:
    from django.contrib.auth.models import User

    from agentops.agents.services import agent_update
    from dashboard.roles import ensure_roles

    change = agent_update(agent=agent, actor=team.owner, changes={"trust_phase": 4}, reason="r").pending_change
    assert change is not None
    second = User.objects.create_user("dora")
    second.groups.add(ensure_roles()["admin"])
    body = client_for(second).get("/").content.decode()
    assert f"/approvals/#approval-{change.pk}" in body and "asks to change Debugger" in body
    assert "You may not decide this: you asked for this change" in client_for(team.owner).get("/").content.decode()


# --- the API ------------------------------------------------------------------------------------------


def api(client: Any, method: str, path: str, token: str, body: Any = None) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if method == "GET":
        return client.get(path, **headers)
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers)


def test_the_api_lists_decisions_by_kind_and_decides_with_an_edit_or_an_answer(client: Any, team: Any, waiting: Run) -> None:
    approval, question, budget = (ask(waiting, kind) for kind in [DecisionKind.APPROVAL, DecisionKind.QUESTION, DecisionKind.BUDGET_EXTENSION])
    token = api_token_create(user=team.approver, name="bot", scope="operate")[1]
    listed = api(client, "GET", "/api/v1/approvals/?kind=question", token).json()["approvals"]
    assert [a["id"] for a in listed] == [question.pk] and listed[0]["options"] == ["staging", "production"] and listed[0]["who_may_decide"]
    assert api(client, "GET", "/api/v1/approvals/?kind=nonsense", token).status_code == 400
    edited = {"to": ["oncall@example.com"], "subject": "s", "body": "b"}
    decided = api(client, "POST", f"/api/v1/approvals/{approval.pk}/decide/", token, {"approve": True, "edited_arguments": edited})
    assert decided.status_code == 200 and decided.json()["edited_arguments"] == edited and decided.json()["arguments"]["to"] == ["ops@example.com"]
    assert api(client, "POST", f"/api/v1/approvals/{question.pk}/decide/", token, {"approve": True, "answer": "production"}).json()["answer"] == "production"
    assert api(client, "POST", f"/api/v1/approvals/{budget.pk}/decide/", token, {"approve": False}).json()["status"] == "rejected"
    again = api(client, "POST", f"/api/v1/approvals/{budget.pk}/decide/", token, {"approve": True})
    assert again.status_code == 409 and "already rejected by bob" in again.json()["error"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"approve": True, "edited_arguments": ["x"]}, "edited_arguments"),
        ({"approve": True, "edited_arguments": {"to": ["x@evil.org"], "subject": "s", "body": "b"}}, "evil.org"),
        ({"approve": True, "answer": 5}, "answer"),
        ({"approve": True, "answer": "hello"}, "takes no answer"),
        ({"approve": False}, "comment is required"),
        ({"approve": "yes"}, "approve"),
    ],
)
def test_the_api_refuses_bad_decisions_with_a_clear_400(client: Any, team: Any, waiting: Run, body: dict[str, Any], why: str) -> None:
    approval = ask(waiting, DecisionKind.APPROVAL)
    token = api_token_create(user=team.approver, name="bot", scope="operate")[1]
    response = api(client, "POST", f"/api/v1/approvals/{approval.pk}/decide/", token, body)
    assert response.status_code == 400 and why in response.json()["error"]
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_the_api_refuses_a_decider_the_rule_refuses_with_403(client: Any, team: Any, mailer: Agent) -> None:
    from agentops.runs.services import run_create

    approval = ask(run_create(agent=mailer, input="x", actor=team.approver, enqueue=False), DecisionKind.BUDGET_EXTENSION)
    token = api_token_create(user=team.approver, name="bot", scope="operate")[1]
    response = api(client, "POST", f"/api/v1/approvals/{approval.pk}/decide/", token, {"approve": True})
    assert response.status_code == 403 and "you started this run" in response.json()["error"]


# --- the CLI ------------------------------------------------------------------------------------------


def cli(*args: str) -> str:
    out = io.StringIO()
    call_command("agentops", *args, stdout=out)
    return out.getvalue()


def test_the_cli_lists_shows_and_decides_every_kind(team: Any, waiting: Run) -> None:
    approval, question, loop = (ask(waiting, kind) for kind in [DecisionKind.APPROVAL, DecisionKind.QUESTION, DecisionKind.LOOP_ESCALATION])
    listed = cli("approvals", "list")
    assert f"#{question.pk} question pending" in listed and "Which environment may I restart?" in listed and "who may decide" in listed
    assert [json.loads(line)["id"] for line in cli("approvals", "list", "--kind", "loop_escalation", "--json").splitlines()] == [loop.pk]
    assert json.loads(cli("approvals", "show", str(approval.pk)))["tool"] == "send_email"
    edited = '{"to": ["oncall@example.com"], "subject": "s", "body": "b"}'
    assert "approved (edited)" in cli("approvals", "decide", str(approval.pk), "approve", "--edit", edited)
    assert "question" in cli("approvals", "decide", str(question.pk), "approve", "--answer", "staging")
    assert cli("reject", str(loop.pk)).strip() == f"loop escalation {loop.pk}: rejected: stop"
    assert Approval.objects.get(pk=approval.pk).edited_arguments == json.loads(edited)
    assert Approval.objects.get(pk=approval.pk).decided_by_label.startswith("cli:")


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--edit", "{not json"], "--edit is not valid JSON"),
        (["--edit", "[1]"], "must be a JSON object"),
        (["--edit", '{"to": ["a@evil.org"], "subject": "s", "body": "b"}'], "evil.org"),
    ],
)
def test_the_cli_refuses_a_bad_edit(team: Any, waiting: Run, args: list[str], why: str) -> None:
    approval = ask(waiting, DecisionKind.APPROVAL)
    with pytest.raises(CommandError, match=why):
        cli("approvals", "decide", str(approval.pk), "approve", *args)
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_the_cli_cannot_be_the_second_admin(team: Any, agent: Agent) -> None:
    from agentops.agents.services import agent_update

    change = agent_update(agent=agent, actor=team.owner, changes={"trust_phase": 4}, reason="r").pending_change
    assert change is not None
    with pytest.raises(CommandError, match="second admin signed in"):
        cli("approvals", "decide", str(change.pk), "approve")
    with pytest.raises(CommandError, match="no decision 999999"):
        cli("approvals", "decide", "999999", "approve")
