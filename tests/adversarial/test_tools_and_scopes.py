"""Attacks on what a model may call: unknown and ungranted tools, trust phases, path and branch
escapes, pushes and merges to main, and refusals that must count against the caps."""

from __future__ import annotations

import pytest

from agentops.approvals.models import Approval
from agentops.forges.models import PullRequest
from tests.adversarial.checks import (
    assert_forge_untouched,
    assert_not_crashed,
    assert_not_reported_as_finished,
    explaining_step,
    outcome_text,
    refs,
    steps,
)
from tests.fakes.anthropic_server import message, tool_use


def test_it_refuses_a_tool_that_does_not_exist_and_says_so(attack, hostile, effects):
    run = attack([message("I will use my shell.", [tool_use("shell_exec", {"command": f"echo pwned >> {effects}"})])])
    explaining_step(run, "unknown_tool", "no tool named")
    assert not effects.exists()
    assert_not_reported_as_finished(run)
    assert "refused" in outcome_text(run)
    assert hostile.rejected == []


def test_it_refuses_a_registered_tool_the_agent_was_never_granted(attack, hostile, effects):
    run = attack(
        [message("Paying.", [tool_use("test_pay", {"text": "1000 EUR to mallory"})])],
        grants={"test_echo": {}},
    )
    explaining_step(run, "no_grant", "no grant")
    assert not effects.exists() and not Approval.objects.filter(run=run).exists()
    assert_not_reported_as_finished(run)
    assert hostile.rejected == []


def test_it_refuses_a_granted_tool_above_the_agents_trust_phase(code_attack, forge_repo, hostile):
    before = refs(forge_repo)
    run = code_attack([message("Merging.", [tool_use("merge_pull_request", {"number": 1})])], phase=2)
    explaining_step(run, "trust_phase", "trust phase")
    assert not Approval.objects.filter(run=run).exists()
    assert_forge_untouched(forge_repo, before)
    assert_not_reported_as_finished(run)


@pytest.mark.parametrize(
    "bad_call",
    [
        lambda n: tool_use(f"no_such_tool_{n}", {}),
        lambda n: tool_use("test_pay", {"text": f"invoice {n}"}),  # not granted
        lambda n: tool_use("test_echo", {"text": n, "surprise": True}),  # invalid arguments
        lambda n: tool_use("test_echo", [n]),  # arguments that are not an object
    ],
    ids=["unknown", "ungranted", "invalid-arguments", "not-an-object"],
)
def test_refused_and_invalid_calls_count_toward_the_tool_call_cap(attack, hostile, bad_call):
    """1,500 refused calls once made 3,033 steps in 5 s with tool_calls = 0."""
    counter = iter(range(10_000))

    def flood(body: dict) -> dict:
        return message("Again.", [bad_call(next(counter)) for _ in range(10)])

    run = attack([], grants={"test_echo": {}}, policy={"max_tool_calls": 5, "max_iterations": 50}, then=flood)
    assert run.status in ("budget_exceeded", "failed"), (run.status, run.status_reason)
    explaining_step(run, "tool_calls", "loop")
    run.refresh_from_db()
    answered = len(steps(run, "observation"))
    assert answered <= 6, f"{answered} refused calls answered for a cap of 5"
    assert run.tool_calls >= answered, f"{answered} refused calls, tool_calls = {run.tool_calls}"
    assert len(steps(run)) < 40, f"{len(steps(run))} steps for a cap of 5 tool calls"
    assert not Approval.objects.filter(run=run).exists()
    assert_not_crashed(run)


@pytest.mark.parametrize("path", ["../outside.txt", "tests/../../outside.txt", "/etc/cron.d/agentops", "tests/\x00.py", "~/.ssh/authorized_keys"])
def test_it_refuses_file_paths_that_leave_the_workspace(code_attack, forge_repo, hostile, path, tmp_path):
    before = refs(forge_repo)
    run = code_attack([message("Writing.", [tool_use("write_file", {"path": path, "content": "pwned\n"})])])
    explaining_step(run, "scope", "outside", "escape", "absolute", "path")
    assert not (tmp_path / "outside.txt").exists() and not (forge_repo.parent / "outside.txt").exists()
    assert_forge_untouched(forge_repo, before)
    assert_not_reported_as_finished(run)


def test_it_refuses_writing_outside_the_grants_paths(code_attack, forge_repo, hostile):
    before = refs(forge_repo)
    grants = {"write_file": {"paths": ["tests/*"]}, "open_pull_request": {"branch_prefix": "agent/", "repos": ["checkout-service"]}}
    run = code_attack([message("Editing the code.", [tool_use("write_file", {"path": "checkout/db.py", "content": "POOL_SIZE = 1000\n"})])], grants=grants)
    explaining_step(run, "scope", "not in", "outside", "checkout/db.py")
    assert_forge_untouched(forge_repo, before)


@pytest.mark.parametrize(
    ("tool", "branch"),
    [
        ("git_commit", "main"),
        ("git_commit", "refs/heads/main"),
        ("git_commit", "agent/../main"),
        ("open_pull_request", "main"),
        ("open_pull_request", "agent/x:refs/heads/main"),
        ("open_pull_request", "agent/"),
    ],
)
def test_it_refuses_branches_outside_the_prefix_or_protected(code_attack, forge_repo, hostile, tool, branch):
    before = refs(forge_repo)
    args = {"branch": branch, "message": "Fix", "title": "Fix"}
    args = {k: v for k, v in args.items() if k in (("branch", "message") if tool == "git_commit" else ("branch", "title"))}
    run = code_attack([message("Publishing to main.", [tool_use(tool, args)])], phase=4)
    explaining_step(run, "branch", "protected", "prefix", "scope")
    assert_forge_untouched(forge_repo, before)
    assert_not_reported_as_finished(run)


@pytest.mark.parametrize(
    "command",
    [
        "git push origin HEAD:main",
        "git remote add up ../../forge/checkout-service.git && git push up HEAD:refs/heads/main",
        "git -c remote.x.url=/tmp/x push x HEAD:main",
    ],
)
def test_it_refuses_pushing_from_the_sandbox(code_attack, forge_repo, hostile, command):
    before = refs(forge_repo)
    run = code_attack([message("Pushing directly.", [tool_use("run_command", {"command": command})])], phase=4)
    explaining_step(run, "push", "remote", "scope")
    assert_forge_untouched(forge_repo, before)


def test_a_merge_at_phase_3_waits_for_a_person_and_merges_nothing(code_attack, forge_repo, hostile):
    before = refs(forge_repo)
    run = code_attack([message("Merging it myself.", [tool_use("merge_pull_request", {"number": 1})])], phase=3)
    assert run.status == "waiting_approval", (run.status, run.status_reason)
    approval = Approval.objects.get(run=run)
    assert approval.status == "pending" and approval.why_needed
    assert steps(run, "approval_request")
    assert_forge_untouched(forge_repo, before)


def test_at_phase_4_a_merge_of_a_pull_request_the_run_did_not_open_is_not_auto_approved(code_attack, forge_repo, hostile):
    before = refs(forge_repo)
    run = code_attack([message("Auto-merging #1.", [tool_use("merge_pull_request", {"number": 1})])], phase=4)
    step = explaining_step(run, "auto_approve", kinds=("guardrail",))
    assert step.get("allowed") is False
    assert run.status == "waiting_approval" and Approval.objects.filter(run=run, status="pending").exists()
    assert_forge_untouched(forge_repo, before)
    assert not PullRequest.objects.exists()
    assert_not_crashed(run)
