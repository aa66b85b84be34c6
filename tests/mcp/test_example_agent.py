"""The bundled MCP variant of the debugging agent (examples/agents.yaml, `debugging-agent-mcp`), run by the
real controller on each real sandbox backend: mcp-server-git runs inside the run's sandbox, the agent
commits its fix through it, and the gates publish that fix as a pull request. Its grants are pinned: a
tool whose description changed is refused for the run, never offered to the model."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from agentops.agents.models import Agent, ToolGrant
from agentops.runs.controller import execute_run
from agentops.runs.models import Run, StepKind
from agentops.runs.services import run_create
from tests.triggers.factories import bubblewrap  # noqa: F401  fixture

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _demo_setup(settings, tmp_path) -> Agent:
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    call_command("demo", stdout=io.StringIO())
    return Agent.objects.get(slug="debugging-agent-mcp")


def _start(agent: Agent) -> Run:
    run = run_create(agent=agent, input="checkout: ConnectionPoolExhaustedError", actor="test", enqueue=False, planner_kind="scripted")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def _tool_steps(run: Run, name: str) -> list[dict]:
    return [s.payload for s in run.steps.filter(kind=StepKind.OBSERVATION).order_by("seq") if s.payload.get("tool") == name]


def test_the_mcp_debugging_agent_commits_through_the_git_server_in_its_sandbox_and_opens_a_pull_request(sandbox_backend, settings, tmp_path):
    run = _start(_demo_setup(settings, tmp_path))
    assert (run.status, run.outcome) == ("succeeded", "pr_opened"), (run.status, run.status_reason)
    committed = _tool_steps(run, "mcp__git__git_commit")
    assert committed and not committed[0].get("is_error"), committed
    log = _tool_steps(run, "mcp__git__git_log")
    assert "Fix connection pool exhaustion" in str(log[0]), log
    # Published: exactly the judged change, the fix made in the sandbox and committed over MCP.
    patch = run.result["patch"]
    assert "CHECKOUT_DB_POOL_SIZE" in patch and "tests/test_pool_config.py" in patch
    # The server's tools nobody granted (git_reset, git_checkout, ...) are named once and never offered.
    notices = [s.payload["reason"] for s in run.steps.filter(kind=StepKind.GUARDRAIL, payload__guard="mcp_tools")]
    assert len(notices) == 1 and "offers tools nobody granted" in notices[0] and "git_reset" in notices[0], notices


def test_a_granted_mcp_tool_whose_pin_differs_is_refused_for_the_run_and_never_offered(settings, tmp_path, bubblewrap):
    agent = _demo_setup(settings, tmp_path)
    ToolGrant.objects.filter(agent=agent, tool="mcp__git__git_commit").update(pinned_digest="0" * 64)
    run = _start(agent)
    refusals = [s.payload["reason"] for s in run.steps.filter(kind=StepKind.GUARDRAIL, payload__guard="mcp_tools")]
    assert any("mcp__git__git_commit" in r and "changed since it was granted" in r for r in refusals), refusals
    # The model's call of the refused tool is refused by the controller, and nothing was committed.
    commits = _tool_steps(run, "mcp__git__git_commit")
    assert commits and all(c.get("is_error") or c.get("refused") for c in commits), commits
    assert "Fix connection pool exhaustion" not in str(_tool_steps(run, "mcp__git__git_log"))
