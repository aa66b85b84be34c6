"""agentops as an MCP server, for real: daphne serving `agentops.asgi:application` in a subprocess on
the test database, the MCP SDK's own streamable HTTP client over a real socket, and API tokens made
by the dashboard's own service. What is checked is what a person at an MCP client would see, and
what the database then holds."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from django.contrib.auth.models import User
from django.test import Client as DjangoClient
from django.utils import timezone
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from agentops.agents.models import Agent, Policy
from agentops.approvals.models import Approval, ApprovalStatus
from agentops.audit.models import AuditEvent
from agentops.guardrails.models import ControlState
from agentops.llm.prices import DEFAULT_MODEL
from agentops.mcp.server import REQUIREMENTS
from agentops.runs.models import Run, RunStatus, StepKind
from dashboard.models import ApiToken, TokenScope
from dashboard.roles import ensure_roles
from dashboard.services import api_token_create, api_token_revoke
from tests.runs.test_durability import database_url
from tests.support import team as support
from tests.support.team import Team, team  # noqa: F401  the fixture
from tests.support.web import daphne

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def server(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One daphne for the module, on the test database (each test's rows are committed, so it sees them)."""
    with django_db_blocker.unblock():
        url = database_url()
    env = {**os.environ, "DEBUG": "1", "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    # Self-contained: the in-memory channel layer and the database task broker, whatever the shell has.
    env.pop("REDIS_URL", None)
    log = tmp_path_factory.mktemp("mcp") / "daphne.log"
    with daphne(env, log) as base:
        yield base
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]


def token_for(user: User, scope: str) -> str:
    return api_token_create(user=user, name=f"mcp {scope}", scope=scope)[1]


@pytest.fixture
def agent(db: Any) -> Agent:
    agent = Agent.objects.create(name="Debugger", slug="debugger", objective="Fix production errors.", model=DEFAULT_MODEL)
    Policy.objects.create(agent=agent, daily_max_runs=50, daily_max_cost_usd=Decimal("20"))
    return agent


def make_run(agent: Agent, *, status: str = RunStatus.RUNNING, steps: int = 3) -> Run:
    return support.make_run(agent, status=status, steps=steps, model_id=DEFAULT_MODEL)


def make_approval(run: Run) -> Approval:
    return support.make_approval(run, arguments={"to": ["ops@example.com"], "subject": "Fix deployed"})


# --- the client side: the SDK's streamable HTTP client, with the token in its header -------------


def mcp(
    base: str, raw_token: str, calls: list[tuple[str, dict[str, Any]]], *, mode: str = "legacy", path: str = "/mcp", statuses: list[int] | None = None
) -> list[CallToolResult]:
    """Connect with the MCP SDK's client, make the calls in order, return their results (and every
    HTTP status the client got, in `statuses`)."""

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    async def go() -> list[CallToolResult]:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {raw_token}"}, timeout=30, event_hooks={"response": [record]}) as http:
            async with Client(streamable_http_client(base + path, http_client=http), mode=mode) as client:
                return [await client.call_tool(name, args) for name, args in calls]

    return anyio.run(go)


def call(base: str, raw_token: str, name: str, args: dict[str, Any] | None = None) -> CallToolResult:
    return mcp(base, raw_token, [(name, args or {})])[0]


def data(result: CallToolResult) -> Any:
    assert not result.is_error, text(result)
    return result.structured_content


def text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def refused(result: CallToolResult) -> str:
    """The refusal's sentence, without the SDK's "Error executing tool <name>: " in front of it."""
    assert result.is_error, result
    return text(result).partition("Error executing tool ")[2].partition(": ")[2] or text(result)


def api(raw_token: str, path: str) -> Any:
    response = DjangoClient().get(path, HTTP_AUTHORIZATION=f"Bearer {raw_token}")
    assert response.status_code == 200, response.content
    return response.json()


def raw_post(base: str, headers: dict[str, str], *, path: str = "/mcp", method: str = "POST", body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    if body is None and method == "POST":
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()
    request = urllib.request.Request(
        base + path, data=body, method=method, headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_clients_at_once_on_a_fresh_server_are_all_served(server: str, team: Team, agent: Agent) -> None:
    """The first requests start the SDK's session manager (daphne sends no lifespan events): several
    arriving together must start it once and all be answered, while the database work of each runs
    off the event loop."""
    run = make_run(agent)
    raw = token_for(team.viewer, TokenScope.READ)

    async def one(i: int) -> Any:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {raw}"}, timeout=30) as http:
            async with Client(streamable_http_client(server + "/mcp", http_client=http), mode="legacy" if i % 2 else "auto") as client:
                return (await client.call_tool("get_run", {"run_id": run.pk})).structured_content

    async def all_at_once() -> list[Any]:
        results: list[Any] = [None] * 8

        async def put(i: int) -> None:
            results[i] = await one(i)

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(put, i)
        return results

    results = anyio.run(all_at_once)
    assert [r["id"] for r in results] == [run.pk] * 8


# --- authentication: 401 before any MCP processing -----------------------------------------------


def test_it_answers_401_without_a_token_or_with_a_bad_revoked_or_expired_one(server: str, team: Team) -> None:
    revoked_raw = token_for(team.viewer, TokenScope.READ)
    api_token_revoke(token=ApiToken.objects.get(user=team.viewer), actor=team.viewer)
    expired_raw = token_for(team.approver, TokenScope.READ)
    ApiToken.objects.filter(user=team.approver).update(expires_at=timezone.now() - timedelta(seconds=1))
    cases = {
        "no header": ({}, "a valid bearer token is required"),
        "not bearer": ({"Authorization": "Basic YWxpY2U6cHc="}, "a valid bearer token is required"),
        "unknown token": ({"Authorization": "Bearer aop_" + "x" * 43}, "a valid bearer token is required"),
        "revoked": ({"Authorization": f"Bearer {revoked_raw}"}, "this token was revoked"),
        "expired": ({"Authorization": f"Bearer {expired_raw}"}, "this token has expired"),
    }
    for what, (headers, message) in cases.items():
        for path in ("/mcp", "/mcp/"):
            status, response_headers, body = raw_post(server, headers, path=path)
            assert status == 401, (what, path, status, body)
            assert json.loads(body) == {"error": message}, what
            assert "invalid_token" in response_headers.get("WWW-Authenticate", ""), what
    # The SDK's client cannot even connect: its first request got the 401, and nothing else was served.
    statuses: list[int] = []
    with pytest.raises(BaseException, match="unhandled errors"):
        mcp(server, revoked_raw, [("list_runs", {})], statuses=statuses)
    assert statuses == [401]
    # And a live token works on the same endpoint, so the 401s above were the token's doing.
    assert data(call(server, token_for(team.viewer, TokenScope.READ), "list_runs")) == {"runs": [], "next_before_id": None}


def test_everything_but_mcp_still_goes_to_django(server: str, team: Team) -> None:
    raw = token_for(team.viewer, TokenScope.READ)
    request = urllib.request.Request(server + "/api/v1/runs/", headers={"Authorization": f"Bearer {raw}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {"runs": [], "next_before_id": None}
    status, _headers, _body = raw_post(server, {"Authorization": f"Bearer {raw}"}, path="/mcpx")
    assert status == 404


def test_other_methods_and_oversized_or_broken_bodies_get_a_4xx_never_a_500(server: str, team: Team) -> None:
    auth = {"Authorization": f"Bearer {token_for(team.viewer, TokenScope.READ)}"}
    assert raw_post(server, auth, method="GET")[0] == 405  # stateless: no server-to-client stream to open
    assert raw_post(server, auth, method="DELETE")[0] == 405  # and no session to end
    assert raw_post(server, auth, body=b"x" * (1024 * 1024 + 1))[0] == 413
    status, _headers, body = raw_post(server, auth, body=b"{not json")
    assert 400 <= status < 500 or json.loads(body)["error"]["code"] == -32700, (status, body)


def test_a_foreign_host_or_browser_origin_is_refused_before_the_token_is_looked_at(server: str, team: Team) -> None:
    raw = token_for(team.admin, TokenScope.ADMIN)
    status, _headers, body = raw_post(server, {"Authorization": f"Bearer {raw}", "Host": "evil.example"})
    assert status == 400, body
    status, _headers, body = raw_post(server, {"Authorization": f"Bearer {raw}", "Origin": "http://evil.example"})
    assert status == 403, body


# --- reads: the same as the JSON API for the same token -----------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto", "2026-07-28"])
def test_list_runs_get_run_and_read_trace_return_what_the_json_api_returns(server: str, team: Team, agent: Agent, mode: str) -> None:
    other = Agent.objects.create(name="Other", slug="other", objective="Other things.", model=DEFAULT_MODEL)
    Policy.objects.create(agent=other)
    runs = [make_run(agent, steps=5), make_run(other, status=RunStatus.SUCCEEDED), make_run(agent, status=RunStatus.FAILED)]
    raw = token_for(team.viewer, TokenScope.READ)
    results = mcp(
        server,
        raw,
        [
            ("list_runs", {}),
            ("list_runs", {"agent": "debugger", "limit": 1}),
            ("list_runs", {"status": "succeeded"}),
            ("get_run", {"run_id": runs[0].pk}),
            ("read_trace", {"run_id": runs[0].pk}),
            ("read_trace", {"run_id": runs[0].pk, "after_seq": 2, "limit": 2}),
        ],
        mode=mode,
    )
    listed, first_page, succeeded, one, trace, window = (data(r) for r in results)
    assert listed == api(raw, "/api/v1/runs/")
    assert [r["id"] for r in listed["runs"]] == [r.pk for r in reversed(runs)]
    assert first_page == api(raw, "/api/v1/runs/?agent=debugger&limit=1")
    assert first_page["next_before_id"] == runs[2].pk
    assert succeeded == api(raw, "/api/v1/runs/?status=succeeded")
    assert [r["id"] for r in succeeded["runs"]] == [runs[1].pk]
    assert one == api(raw, f"/api/v1/runs/{runs[0].pk}/")
    assert {"status", "outcome", "outcome_detail", "cost_usd", "tokens", "tool_calls", "started_at", "finished_at", "url"} <= set(one)
    assert trace == api(raw, f"/api/v1/runs/{runs[0].pk}/steps/")
    assert [s["payload"].get("text") for s in trace["steps"] if s["kind"] == "model_call"] == [f"thinking {i}" for i in range(5)]
    assert window == api(raw, f"/api/v1/runs/{runs[0].pk}/steps/?after=2&limit=2")
    assert [s["seq"] for s in window["steps"]] == [3, 4]


def test_bad_input_is_a_clear_error_result_never_a_server_error(server: str, team: Team, agent: Agent) -> None:
    run = make_run(agent)
    raw = token_for(team.admin, TokenScope.ADMIN)
    results = mcp(
        server,
        raw,
        [
            ("get_run", {"run_id": run.pk + 1000}),
            ("read_trace", {"run_id": run.pk + 1000}),
            ("get_run", {"run_id": "seven"}),
            ("read_trace", {"run_id": run.pk, "limit": 501}),
            ("list_runs", {"status": "sleeping"}),
            ("decide", {"approval_id": 999_999, "decision": "approve"}),
            ("decide", {"approval_id": 1, "decision": "maybe"}),
            ("engage_kill_switch", {"reason": "   "}),
            ("no_such_tool", {}),
        ],
    )
    messages = [refused(r) for r in results]
    assert f"no run with the id {run.pk + 1000}" in messages[0]
    assert f"no run with the id {run.pk + 1000}" in messages[1]
    assert "run_id" in messages[2]
    assert "limit" in messages[3] and "500" in messages[3]
    assert "status must be one of" in messages[4]
    assert "no approval with the id 999999" in messages[5]
    assert "decision" in messages[6]
    assert "a reason is required" in messages[7]
    assert "no_such_tool" in messages[8]
    assert not ControlState.objects.filter(engaged=True).exists()


# --- roles and scopes: the web's rules ------------------------------------------------------------


def test_a_viewer_token_reads_but_may_neither_decide_nor_engage_the_kill_switch(server: str, team: Team, agent: Agent) -> None:
    approval = make_approval(make_run(agent))
    raw = token_for(team.viewer, TokenScope.READ)
    pending, status, decided, engaged = mcp(
        server,
        raw,
        [
            ("list_pending_decisions", {}),
            ("kill_switch_status", {}),
            ("decide", {"approval_id": approval.pk, "decision": "approve", "reason": "looks fine"}),
            ("engage_kill_switch", {"reason": "testing"}),
        ],
    )
    listing = data(pending)
    assert [a["id"] for a in listing["approvals"]] == [approval.pk]
    item = listing["approvals"][0]
    assert (item["tool"], item["arguments"], item["risk_class"], item["reason"], item["why_needed"]) == (
        "send_email",
        {"to": ["ops@example.com"], "subject": "Fix deployed"},
        "irreversible",
        "The fix is merged; tell the on-call.",
        "irreversible tool",
    )
    assert item["expires_at"] and "approver role" in item["who_may_decide"]
    assert listing["you_may_decide"] is False
    assert data(status)["engaged"] is False
    assert "this token's scope is read; this needs operate" in refused(decided)
    assert "this token's scope is read; this needs admin" in refused(engaged)
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING
    assert not ControlState.objects.filter(engaged=True).exists()


def test_a_token_whose_user_lacks_the_role_is_refused_whatever_its_scope(server: str, team: Team, agent: Agent) -> None:
    """A token keeps its scope when its user is moved to a lesser role: the role still decides."""
    approval = make_approval(make_run(agent))
    raw = token_for(team.admin, TokenScope.ADMIN)
    team.admin.groups.set([ensure_roles()["viewer"]])
    decided, engaged = mcp(server, raw, [("decide", {"approval_id": approval.pk, "decision": "approve"}), ("engage_kill_switch", {"reason": "x"})])
    assert "this needs the permission approvals.decide_approval" in refused(decided)
    assert "this needs the permission guardrails.operate_killswitch" in refused(engaged)
    approver_raw = token_for(team.approver, TokenScope.OPERATE)
    assert "this token's scope is operate; this needs admin" in refused(call(server, approver_raw, "engage_kill_switch", {"reason": "x"}))
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING
    assert not ControlState.objects.filter(engaged=True).exists()


def test_an_outsider_without_a_role_sees_nothing(server: str, team: Team, agent: Agent) -> None:
    run = make_run(agent)
    make_approval(run)
    raw = token_for(team.outsider, TokenScope.READ)
    results = mcp(
        server,
        raw,
        [
            ("list_runs", {}),
            ("get_run", {"run_id": run.pk}),
            ("read_trace", {"run_id": run.pk}),
            ("list_pending_decisions", {}),
            ("kill_switch_status", {}),
        ],
    )
    for result in results:
        message = refused(result)
        assert message == "this token's user has no role"
        assert result.structured_content is None


# --- actions --------------------------------------------------------------------------------------


def test_an_approver_decides_and_the_run_moves_on_and_a_second_decision_says_who_decided(server: str, team: Team, agent: Agent) -> None:
    run = make_run(agent)
    approval = make_approval(run)
    approver_raw = token_for(team.approver, TokenScope.OPERATE)
    pending, decided, again = mcp(
        server,
        approver_raw,
        [
            ("list_pending_decisions", {}),
            ("decide", {"approval_id": approval.pk, "decision": "approve", "reason": "the fix is merged"}),
            ("decide", {"approval_id": approval.pk, "decision": "reject", "reason": "changed my mind"}),
        ],
    )
    assert data(pending)["you_may_decide"] is True
    result = data(decided)
    assert (result["approval"]["status"], result["approval"]["decided_by"], result["approval"]["comment"]) == ("approved", "bob", "the fix is merged")
    assert result["run"]["status"] == RunStatus.QUEUED
    assert refused(again) == "this approval was already approved by bob"
    approval.refresh_from_db()
    run.refresh_from_db()
    assert (approval.status, approval.decided_by, approval.comment) == (ApprovalStatus.APPROVED, team.approver, "the fix is merged")
    assert run.status == RunStatus.QUEUED  # was waiting_approval: resumed and handed to a worker
    assert run.steps.filter(kind=StepKind.APPROVAL_DECISION, payload__by="bob").count() == 1
    assert AuditEvent.objects.filter(action="approval.approved", actor=team.approver).count() == 1
    # Nothing is pending any more, for anyone.
    assert data(call(server, token_for(team.viewer, TokenScope.READ), "list_pending_decisions"))["approvals"] == []


def test_rejecting_needs_a_reason_as_on_the_web(server: str, team: Team, agent: Agent) -> None:
    run = make_run(agent)
    approval = make_approval(run)
    raw = token_for(team.approver, TokenScope.OPERATE)
    bare, reasoned = mcp(
        server,
        raw,
        [
            ("decide", {"approval_id": approval.pk, "decision": "reject"}),
            ("decide", {"approval_id": approval.pk, "decision": "reject", "reason": "wrong recipient"}),
        ],
    )
    assert refused(bare) == "a comment is required to reject"
    assert data(reasoned)["approval"]["status"] == "rejected"
    approval.refresh_from_db()
    assert (approval.status, approval.comment) == (ApprovalStatus.REJECTED, "wrong recipient")


def test_the_admin_engages_the_kill_switch_and_it_is_audited_as_the_admin(server: str, team: Team, agent: Agent) -> None:
    running = make_run(agent)
    raw = token_for(team.admin, TokenScope.ADMIN)
    engaged, status = mcp(server, raw, [("engage_kill_switch", {"reason": "the agents are deleting branches"}), ("kill_switch_status", {})], mode="2026-07-28")
    result = data(engaged)
    assert (result["engaged"], result["engaged_by"], result["reason"]) == (True, "alice", "the agents are deleting branches")
    assert data(status) == result
    state = ControlState.objects.get(pk=1)
    assert (state.engaged, state.engaged_by, state.reason) == (True, team.admin, "the agents are deleting branches")
    event = AuditEvent.objects.get(action="kill_switch.engage")
    assert (event.actor, event.actor_label, event.detail) == (team.admin, "alice", "the agents are deleting branches")
    running.refresh_from_db()
    assert running.status == RunStatus.KILLED or running.cancel_requested


def test_each_tool_is_annotated_and_documented_with_what_it_needs(server: str, team: Team) -> None:
    raw = token_for(team.outsider, TokenScope.READ)  # listing the tools shows no data: any live token may

    async def go() -> Any:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {raw}"}, timeout=30) as http:
            async with Client(streamable_http_client(server + "/mcp/", http_client=http)) as client:
                return (await client.list_tools()).tools

    tools = {t.name: t for t in anyio.run(go)}
    assert set(tools) == set(REQUIREMENTS)
    for name, (scope, _perm) in REQUIREMENTS.items():
        hints = tools[name].annotations
        assert hints is not None
        assert hints.read_only_hint is (scope == TokenScope.READ), name
        assert hints.destructive_hint is (scope != TokenScope.READ), name
    doc = (Path(__file__).resolve().parents[2] / "docs" / "MCP_SERVER.md").read_text()
    for name, (scope, perm) in REQUIREMENTS.items():
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{name}`")), "")
        assert f"`{scope}`" in row and (perm is None or f"`{perm}`" in row), f"docs/MCP_SERVER.md does not say what {name} needs: {row!r}"
