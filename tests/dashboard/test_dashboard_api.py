from __future__ import annotations

import json

import pytest
from helpers_dashboard import make_approval

from agentops.approvals.models import ApprovalStatus
from agentops.guardrails.models import ControlState
from agentops.runs.models import RunStatus
from dashboard.services import api_token_create


@pytest.fixture
def tokens(team):
    # Each with the widest scope its role may give (an outsider may give none beyond read).
    scopes = {"owner": "admin", "approver": "operate", "viewer": "read", "outsider": "read"}
    return {role: api_token_create(user=getattr(team, role), name=role, scope=scope)[1] for role, scope in scopes.items()}


def call(client, method, path, token=None, body=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if method == "GET":
        return client.get(path, **headers)
    return client.post(path, data=json.dumps(body or {}), content_type="application/json", **headers)


ENDPOINTS = [
    ("GET", "/api/v1/runs/"),
    ("POST", "/api/v1/runs/"),
    ("GET", "/api/v1/runs/{run}/"),
    ("GET", "/api/v1/runs/{run}/steps/"),
    ("POST", "/api/v1/runs/{run}/cancel/"),
    ("GET", "/api/v1/approvals/"),
    ("POST", "/api/v1/approvals/{approval}/decide/"),
    ("GET", "/api/v1/kill-switch/"),
    ("POST", "/api/v1/kill-switch/"),
]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_every_endpoint_needs_a_valid_token(client, team, run, approval, method, path):
    url = path.format(run=run.pk, approval=approval.pk)
    assert call(client, method, url).status_code == 401
    assert call(client, method, url, token="aop_wrong").status_code == 401


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_every_endpoint_refuses_an_outsiders_token(client, tokens, run, approval, method, path):
    assert call(client, method, path.format(run=run.pk, approval=approval.pk), token=tokens["outsider"]).status_code == 403


def test_a_revoked_token_stops_working(client, team, tokens):
    from dashboard.services import api_token_revoke

    api_token_revoke(token=team.viewer.api_tokens.get(), actor=team.viewer)
    assert call(client, "GET", "/api/v1/runs/", token=tokens["viewer"]).status_code == 401


def test_a_viewer_lists_runs_and_reads_steps_after_a_seq(client, tokens, run):
    data = call(client, "GET", "/api/v1/runs/?status=running", token=tokens["viewer"]).json()
    assert [r["id"] for r in data["runs"]] == [run.pk]
    steps = call(client, "GET", f"/api/v1/runs/{run.pk}/steps/?after=1&limit=1", token=tokens["viewer"]).json()
    assert [s["seq"] for s in steps["steps"]] == [2] and steps["next_after"] == 2
    assert call(client, "GET", "/api/v1/runs/?status=bogus", token=tokens["viewer"]).status_code == 400


def test_an_approver_decides_through_the_api_exactly_once(client, tokens, approval):
    assert call(client, "POST", f"/api/v1/approvals/{approval.pk}/decide/", tokens["viewer"], {"approve": True}).status_code == 403
    assert call(client, "POST", f"/api/v1/approvals/{approval.pk}/decide/", tokens["approver"], {"approve": False}).status_code == 400
    first = call(client, "POST", f"/api/v1/approvals/{approval.pk}/decide/", tokens["approver"], {"approve": True})
    second = call(client, "POST", f"/api/v1/approvals/{approval.pk}/decide/", tokens["owner"], {"approve": False, "comment": "no"})
    assert first.status_code == 200 and first.json()["status"] == "approved" and first.json()["decided_by"] == "bob"
    assert second.status_code == 409
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED


def test_the_pending_list_shows_what_will_happen(client, tokens, run):
    make_approval(run, call="c2", arguments={"to": ["a@example.com"], "subject": "s", "body": "b"})
    items = call(client, "GET", "/api/v1/approvals/", tokens["viewer"]).json()["approvals"]
    assert items[0]["tool"] == "send_email" and items[0]["arguments"]["to"] == ["a@example.com"] and items[0]["risk_class"] == "irreversible"


def test_only_an_admin_operates_the_kill_switch_and_needs_a_reason(client, tokens):
    assert call(client, "POST", "/api/v1/kill-switch/", tokens["approver"], {"engaged": True, "reason": "x"}).status_code == 403
    assert call(client, "POST", "/api/v1/kill-switch/", tokens["owner"], {"engaged": True}).status_code == 400
    response = call(client, "POST", "/api/v1/kill-switch/", tokens["owner"], {"engaged": True, "reason": "runaway"})
    assert response.status_code == 200 and response.json()["engaged"] and response.json()["engaged_by"] == "alice"
    assert call(client, "GET", "/api/v1/kill-switch/", tokens["viewer"]).json()["reason"] == "runaway"
    call(client, "POST", "/api/v1/kill-switch/", tokens["owner"], {"engaged": False, "reason": "fixed"})
    assert not ControlState.objects.get(pk=1).engaged


def test_an_approver_cancels_a_run(client, tokens, agent):
    from helpers_dashboard import make_run

    run = make_run(agent, status=RunStatus.QUEUED)
    assert call(client, "POST", f"/api/v1/runs/{run.pk}/cancel/", tokens["viewer"]).status_code == 403
    data = call(client, "POST", f"/api/v1/runs/{run.pk}/cancel/", tokens["approver"], {"reason": "api stop"}).json()
    assert data["status"] == "killed"


def test_a_body_that_is_not_json_is_a_400(client, tokens, approval):
    response = client.post(
        f"/api/v1/approvals/{approval.pk}/decide/", data="nope", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {tokens['approver']}"
    )
    assert response.status_code == 400


def test_the_openapi_schema_describes_every_endpoint(client, db):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) == {
        "/runs/",
        "/runs/{run_id}/",
        "/runs/{run_id}/steps/",
        "/runs/{run_id}/cancel/",
        "/approvals/",
        "/approvals/{approval_id}/decide/",
        "/kill-switch/",
    }
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_an_approver_starts_a_run_through_the_api(client, tokens, agent):
    from agentops.runs.models import Run

    response = call(client, "POST", "/api/v1/runs/", tokens["approver"], {"agent": agent.slug, "input": "check the pool"})
    assert response.status_code == 201
    run = Run.objects.get(pk=response.json()["id"])
    assert (run.agent_id, run.input, run.status, run.trigger_kind) == (agent.pk, "check the pool", RunStatus.QUEUED, "manual")


def test_a_viewer_cannot_start_a_run_through_the_api(client, tokens, agent):
    from agentops.runs.models import Run

    response = call(client, "POST", "/api/v1/runs/", tokens["viewer"], {"agent": agent.slug, "input": "x"})
    assert response.status_code == 403 and not Run.objects.filter(agent=agent).exists()


def test_starting_a_run_needs_a_known_agent_and_an_input_and_says_when_refused(client, tokens, agent):
    assert call(client, "POST", "/api/v1/runs/", tokens["approver"], {"agent": "nope", "input": "x"}).status_code == 404
    assert call(client, "POST", "/api/v1/runs/", tokens["approver"], {"agent": agent.slug, "input": " "}).status_code == 400
    call(client, "POST", "/api/v1/kill-switch/", tokens["owner"], {"engaged": True, "reason": "incident"})
    refused = call(client, "POST", "/api/v1/runs/", tokens["approver"], {"agent": agent.slug, "input": "x"})
    assert refused.status_code == 409 and "kill switch" in refused.json()["error"]
