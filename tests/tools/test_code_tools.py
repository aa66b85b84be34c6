"""The debugging agent's tools: scopes, trust phases, gates, forges, and a whole scripted run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentops.forges.local import local_repo_create
from agentops.forges.models import PullRequest, PullRequestStatus
from agentops.runs.models import Run, RunStatus, Step
from agentops.runs.services import run_create
from agentops.runs.workspace import RunServices
from agentops.tools.registry import ScopeViolation, ToolContext, ToolError, get_tool
from agentops.triggers.ingest import normalize_event, store_events
from tests.triggers.factories import bubblewrap, make_project, sentry_event  # noqa: F401  fixture

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = ROOT / "examples" / "checkout-service"
SCRIPT = ROOT / "examples" / "scripts" / "debugging-agent.yaml"
BRANCH = "agent/fix-connection-pool-exhaustion"
GRANTS: dict[str, dict] = {
    "error_get_group": {"projects": ["checkout"]},
    "error_list_events": {"projects": ["checkout"]},
    "repo_list_files": {},
    "repo_read_file": {},
    "repo_search": {},
    "write_file": {},
    "apply_patch": {},
    "run_command": {},
    "run_tests": {},
    "git_commit": {"branch_prefix": "agent/"},
    "open_pull_request": {"branch_prefix": "agent/"},
    "comment_pull_request": {},
    "merge_pull_request": {},
    "submit_report": {},
}
CONFIG = {
    "repository": "checkout-service",
    "forge": "local",
    "base_branch": "main",
    "test_command": "python3 -m pytest -q",
    "planner": "scripted",
    "script": str(SCRIPT),
}
FIXED_DB = next(
    c["arguments"]["content"]
    for t in yaml.safe_load(SCRIPT.read_text())
    for c in t.get("tool_calls", [])
    if c["name"] == "write_file" and c["arguments"]["path"] == "checkout/db.py"
)


@pytest.fixture
def forge_repo(settings, tmp_path):
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    return local_repo_create("checkout-service", EXAMPLE)


@pytest.fixture
def slow_tools(settings):
    """The gates run the suite twice (base, then change): longer than a 5 s heartbeat. Under the test's
    open transaction another connection cannot see the run row to renew its lease, so beat less often."""
    settings.AGENTOPS_HEARTBEAT_S = 60
    settings.AGENTOPS_LEASE_TTL_S = 120


@pytest.fixture
def group(db):
    project = make_project()
    stored = store_events(project=project, events=[normalize_event(sentry_event())], source="sentry")
    return stored[0].group


@pytest.fixture
def agent_at(make_agent):
    def make(phase: int, *, policy: dict | None = None, grants: dict | None = None) -> Any:
        return make_agent(
            slug=f"debugging-agent-{phase}", trust_phase=phase, config=dict(CONFIG), grants={k: dict(v) for k, v in (grants or GRANTS).items()}, policy=policy
        )

    return make


class Harness:
    """Call tools the way the controller does: a ToolContext with the grant's scope and RunServices."""

    def __init__(self, agent: Any, group: Any = None) -> None:
        self.agent = agent
        context = {"error_group_id": group.pk} if group is not None else {}
        self.run = run_create(agent=agent, input="fix it", context=context, enqueue=False)
        self.services = RunServices(self.run)
        self.calls = 0
        self.output: list[str] = []

    def ctx(self, tool: str) -> ToolContext:
        self.calls += 1
        grant = self.agent.grants.get(tool=tool)
        return ToolContext(
            run=self.run,
            agent=self.agent,
            scope=grant.scope,
            tool_call_id=f"call_{self.calls}",
            idempotency_key=f"k{self.calls}",
            should_stop=lambda: False,
            emit=self.output.append,
            services=self.services,
        )  # type: ignore[arg-type]

    def __call__(self, tool: str, **args: Any):
        spec = get_tool(tool)
        assert spec.argument_errors(args) == [], spec.argument_errors(args)
        return spec.executor(args, self.ctx(tool))

    def close(self) -> None:
        self.services.close()


@pytest.fixture
def harness():
    made: list[Harness] = []

    def make(agent: Any, group: Any = None) -> Harness:
        h = Harness(agent, group)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def gates(run: Run) -> list[tuple[str, bool]]:
    return [(s.payload["gate"], s.payload["passed"]) for s in Step.objects.filter(run=run, kind="gate").order_by("seq")]


def rev(repo: Path, ref: str) -> str:
    return subprocess.run(["git", "rev-parse", ref], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


# --- error tracker -------------------------------------------------------------------------------


def test_error_tools_read_the_group_of_the_run(group, agent_at, harness):
    h = harness(agent_at(3), group)
    result = h("error_get_group")
    assert "ConnectionPoolExhaustedError: pool of 10 exhausted" in result.output
    assert 'File "checkout/db.py", line 42, in acquire' in result.output
    assert "Events per hour" in result.output and " 1" in result.output
    assert "1 most recent of 1 events" in h("error_list_events", group_id=group.pk).output


def test_error_tools_refuse_other_projects(group, agent_at, harness):
    agent = agent_at(3, grants={**GRANTS, "error_get_group": {"projects": ["billing"]}})
    h = harness(agent, group)
    with pytest.raises(ScopeViolation):
        h("error_get_group", group_id=group.pk)
    with pytest.raises(ScopeViolation):
        harness(agent_at(2))("error_list_events", group_id=999_999)


def test_the_tool_schemas_are_valid_and_scopes_are_required():
    assert get_tool("git_commit").scope_errors({}) == ["(root): 'branch_prefix' is a required property"]
    assert get_tool("error_get_group").scope_errors({"projects": ["checkout"]}) == []
    assert get_tool("merge_pull_request").risk_class == "irreversible"
    assert get_tool("merge_pull_request").min_trust_phase == 3
    assert get_tool("open_pull_request").min_trust_phase == 2


def test_run_command_refuses_to_push(agent_at, harness):
    h = harness(agent_at(3))
    for command in ("git push origin HEAD:main", "git push --force", "cd /x && git remote add evil url"):
        with pytest.raises(ScopeViolation, match="open_pull_request"):
            h("run_command", command=command)


# --- in a sandbox ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_repository_tools_read_search_and_honour_path_scopes(bubblewrap, forge_repo, agent_at, harness):
    agent = agent_at(3, grants={**GRANTS, "repo_read_file": {"paths": ["checkout/*"]}})
    h = harness(agent)
    assert "checkout/db.py" in h("repo_list_files").output.splitlines()
    assert "POOL_SIZE = 10" in h("repo_read_file", path="checkout/db.py").output
    assert "checkout/db.py:" in h("repo_search", query="POOL_SIZE").output
    with pytest.raises(ScopeViolation):
        h("repo_read_file", path="tests/test_load.py")
    with pytest.raises(ScopeViolation):
        h("repo_read_file", path="../../etc/passwd")


@pytest.mark.slow
def test_writing_the_fix_turns_the_tests_green_and_reports_the_workspace_diff(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(3))
    before = h("run_tests")
    assert before.is_error and "test_load.py" in before.output and "FAILED" in before.output
    written = h("write_file", path="checkout/db.py", content=FIXED_DB)
    assert "+DEFAULT_POOL_SIZE = 50" in written.data["workspace_diff"]
    after = h("run_tests")
    assert not after.is_error, after.output
    assert "6 passed" in after.output
    assert any("passed" in chunk for chunk in h.output)  # streamed while running


@pytest.mark.slow
def test_apply_patch_applies_all_or_nothing(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(3))
    patch = (
        "--- a/checkout/db.py\n+++ b/checkout/db.py\n@@ -10,3 +10,3 @@\n \n-POOL_SIZE = 10  # connections\n"
        "+POOL_SIZE = 50  # connections\n QUERY_TIME_S = 0.2  # how long the simulated database takes to answer\n"
    )
    result = h("apply_patch", patch=patch)
    assert not result.is_error, result.output
    assert "+POOL_SIZE = 50" in result.data["workspace_diff"]
    bad = h("apply_patch", patch=patch)  # no longer applies
    assert bad.is_error and "does not apply" in bad.output
    with pytest.raises(ScopeViolation):
        harness(agent_at(2, grants={**GRANTS, "apply_patch": {"paths": ["tests/*"]}}))("apply_patch", patch=patch)


@pytest.mark.slow
def test_git_commit_only_writes_branches_under_the_prefix(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(3))
    h("write_file", path="checkout/db.py", content=FIXED_DB)
    for branch in ("main", "release", "fix/pool", "agent/", "agent/../main"):
        with pytest.raises(ScopeViolation):
            h("git_commit", branch=branch, message="x")
    result = h("git_commit", branch="agent/fix", message="Fix the pool")
    assert result.data["branch"] == "agent/fix"
    assert "+DEFAULT_POOL_SIZE = 50" in result.data["workspace_diff"]
    assert rev(forge_repo, "main") == rev(forge_repo, "refs/heads/main")  # nothing left the sandbox


@pytest.mark.slow
def test_phase_1_proposes_a_report_with_the_patch_and_opens_nothing(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(1))
    h("write_file", path="checkout/db.py", content=FIXED_DB)
    with pytest.raises(ToolError, match="phase 1"):
        h("open_pull_request", branch=BRANCH, title="Fix")
    result = h("submit_report", root_cause="POOL_SIZE hard-coded at 10", summary="read it from the environment", confidence="high")
    assert result.data["run_result"]["report"]["root_cause"] == "POOL_SIZE hard-coded at 10"
    assert "+DEFAULT_POOL_SIZE = 50" in result.data["run_result"]["patch"]
    assert PullRequest.objects.count() == 0
    assert subprocess.run(["git", "branch", "--list", "agent/*"], cwd=forge_repo, capture_output=True, text=True).stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize(("phase", "draft"), [(2, True), (3, False), (4, False)])
def test_a_verified_fix_opens_a_pull_request_draft_at_phase_2_ready_at_3_and_4(bubblewrap, forge_repo, agent_at, harness, phase, draft):
    h = harness(agent_at(phase))
    h("write_file", path="checkout/db.py", content=FIXED_DB)
    result = h("open_pull_request", branch=BRANCH, title="Fix connection pool exhaustion", body="Root cause: ...", draft=False)
    assert not result.is_error, result.output
    assert gates(h.run) == [("secrets", True), ("diff_limits", True), ("change", True), ("tests_intact", True), ("tests_pass", True)]
    pr = PullRequest.objects.get()
    assert (pr.draft, pr.status, pr.branch, pr.base, pr.run) == (draft, PullRequestStatus.OPEN, BRANCH, "main", h.run)
    assert "+DEFAULT_POOL_SIZE = 50" in pr.diff
    assert "tests_pass: passed" in pr.body
    pull = result.data["run_result"]["pull_request"]
    assert (pull["number"], pull["gates_passed"], pull["draft"]) == (pr.number, True, draft)
    assert rev(forge_repo, "main") == rev(forge_repo, "main")
    shown = subprocess.run(["git", "show", f"{BRANCH}:checkout/db.py"], cwd=forge_repo, capture_output=True, text=True, check=True).stdout
    assert shown == FIXED_DB
    assert "POOL_SIZE = 10" in subprocess.run(["git", "show", "main:checkout/db.py"], cwd=forge_repo, capture_output=True, text=True).stdout


@pytest.mark.slow
def test_a_model_that_asks_to_push_to_main_is_stopped(bubblewrap, forge_repo, agent_at, harness):
    main = rev(forge_repo, "main")
    h = harness(agent_at(4))
    h("write_file", path="checkout/db.py", content=FIXED_DB)
    with pytest.raises(ScopeViolation):
        h("open_pull_request", branch="main", title="Fix")
    with pytest.raises(ScopeViolation):
        h("git_commit", branch="main", message="Fix")
    with pytest.raises(ScopeViolation):
        h("run_command", command="git push origin HEAD:main")
    # Even a grant whose prefix would allow it cannot write the default branch.
    loose = harness(agent_at(3, grants={**GRANTS, "open_pull_request": {"branch_prefix": "ma"}}))
    loose("write_file", path="checkout/db.py", content=FIXED_DB)
    with pytest.raises(ScopeViolation, match="protected"):
        loose("open_pull_request", branch="main", title="Fix")
    assert rev(forge_repo, "main") == main
    assert PullRequest.objects.count() == 0


@pytest.mark.slow
def test_a_model_that_deletes_the_failing_test_gets_no_pull_request(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(3))
    h("run_command", command="rm tests/test_load.py")
    assert not h("run_tests").is_error  # green, because the failing test is gone
    result = h("open_pull_request", branch=BRANCH, title="Make the tests pass")
    assert result.is_error
    assert "tests/test_load.py: existing test file deleted" in result.output
    assert gates(h.run)[-1] == ("tests_intact", False)
    assert PullRequest.objects.count() == 0
    assert "agent/" not in subprocess.run(["git", "branch"], cwd=forge_repo, capture_output=True, text=True).stdout


@pytest.mark.slow
def test_a_fix_that_does_not_pass_the_tests_gets_no_pull_request(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(3))
    h("write_file", path="README.md", content="Pool is fine.\n")
    result = h("open_pull_request", branch=BRANCH, title="Docs")
    assert result.is_error and "FAIL tests_pass" in result.output
    assert PullRequest.objects.count() == 0


@pytest.mark.slow
def test_secrets_and_size_limits_stop_the_pull_request(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(3, policy={"max_diff_lines": 20}))
    h("write_file", path="checkout/db.py", content=FIXED_DB)
    too_big = h("open_pull_request", branch=BRANCH, title="Fix")
    assert too_big.is_error and "exceed the limit of 20" in too_big.output
    h2 = harness(agent_at(2))
    h2("write_file", path="checkout/db.py", content=FIXED_DB)
    leaked = h2("open_pull_request", branch=BRANCH, title="Fix", body="deploy with ghp_" + "a" * 36)
    assert leaked.is_error and "FAIL secrets" in leaked.output
    assert PullRequest.objects.count() == 0


@pytest.mark.slow
def test_protected_paths_need_a_person(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(3, policy={"protected_paths": ["checkout/db.py"]}))
    h("write_file", path="checkout/db.py", content=FIXED_DB)
    result = h("open_pull_request", branch=BRANCH, title="Fix")
    assert result.is_error and "protected paths ['checkout/db.py']" in result.output


@pytest.mark.slow
def test_merging_and_the_phase_4_auto_approve_hook(bubblewrap, forge_repo, agent_at, harness):
    merge = get_tool("merge_pull_request")
    small = harness(agent_at(4, policy={"low_risk_max_changed_lines": 200, "low_risk_paths": ["checkout/*"]}))
    small("write_file", path="checkout/db.py", content=FIXED_DB)
    number = small("open_pull_request", branch=BRANCH, title="Fix").data["pull_request"]["number"]
    # The controller copies run_result into Run.result; here the test sets it, varying the facts.
    pull = {
        "number": number,
        "gates_passed": True,
        "changed_lines": 80,
        "paths": ["checkout/db.py"],
        "head_sha": PullRequest.objects.get().head_sha,
        "base": "main",
        "flags": [],
    }
    Run.objects.filter(pk=small.run.pk).update(result={"pull_request": pull})
    allowed, why = merge.auto_approve({"number": number}, small.ctx("merge_pull_request"))
    assert allowed, why
    assert merge.auto_approve({"number": number + 1}, small.ctx("merge_pull_request"))[0] is False
    Run.objects.filter(pk=small.run.pk).update(result={"pull_request": {**pull, "changed_lines": 500}})
    allowed, why = merge.auto_approve({"number": number}, small.ctx("merge_pull_request"))
    assert not allowed and "exceed the low-risk limit" in why
    Run.objects.filter(pk=small.run.pk).update(result={"pull_request": {**pull, "paths": ["setup.py"]}})
    assert merge.auto_approve({"number": number}, small.ctx("merge_pull_request"))[0] is False
    Run.objects.filter(pk=small.run.pk).update(result={"pull_request": {**pull, "gates_passed": False}})
    assert merge.auto_approve({"number": number}, small.ctx("merge_pull_request"))[0] is False
    # A change the gates flagged for a person falls back to phase 3; so does one with no record of flags.
    Run.objects.filter(pk=small.run.pk).update(result={"pull_request": {**pull, "flags": ["tests/test_load.py: constant changed"]}})
    allowed, why = merge.auto_approve({"number": number}, small.ctx("merge_pull_request"))
    assert not allowed and "flagged for a person" in why and "test_load" in why
    Run.objects.filter(pk=small.run.pk).update(result={"pull_request": {k: v for k, v in pull.items() if k != "flags"}})
    assert merge.auto_approve({"number": number}, small.ctx("merge_pull_request"))[0] is False
    # The merge itself (after a person's approval at phase 3, or the hook at 4) is a real git merge.
    Run.objects.filter(pk=small.run.pk).update(result={"pull_request": pull})
    with pytest.raises(ScopeViolation):
        small("merge_pull_request", number=number + 1)
    result = small("merge_pull_request", number=number)
    assert rev(forge_repo, "main") == result.data["run_result"]["pull_request"]["merge_sha"]
    assert PullRequest.objects.get().status == PullRequestStatus.MERGED


def test_the_auto_approve_hook_needs_low_risk_paths(group, agent_at, harness):
    h = harness(agent_at(4, policy={"low_risk_paths": []}))
    Run.objects.filter(pk=h.run.pk).update(result={"pull_request": {"number": 1, "gates_passed": True, "changed_lines": 1, "paths": ["a.py"], "flags": []}})
    allowed, why = get_tool("merge_pull_request").auto_approve({"number": 1}, h.ctx("merge_pull_request"))
    assert not allowed and "no low-risk paths" in why


# --- the whole story through the controller -------------------------------------------------------


@pytest.mark.slow
def test_the_scripted_debugging_agent_goes_from_error_to_verified_pull_request(bubblewrap, forge_repo, group, make_agent, start_run, slow_tools):
    agent = make_agent(slug="debugging-agent", trust_phase=3, config=dict(CONFIG), grants={k: dict(v) for k, v in GRANTS.items()})
    run = start_run(agent, "A critical error", context={"error_group_id": group.pk}, fingerprint=f"error:{group.pk}")
    errors = list(Step.objects.filter(run=run, kind__in=["error", "guardrail"]).values_list("payload", flat=True))
    assert run.status == RunStatus.SUCCEEDED, (run.status_reason, run.final_error, errors)
    assert gates(run) == [("commit_message", True), ("secrets", True), ("diff_limits", True), ("change", True), ("tests_intact", True), ("tests_pass", True)]
    pr = PullRequest.objects.get()
    assert (pr.run, pr.draft, pr.branch, pr.status) == (run, False, BRANCH, PullRequestStatus.OPEN)
    assert "CHECKOUT_DB_POOL_SIZE" in pr.diff and "tests/test_pool_config.py" in pr.diff
    assert run.result["pull_request"]["number"] == pr.number
    observations = [s.payload for s in Step.objects.filter(run=run, kind="observation").order_by("seq")]
    failing_then_passing = [o["output"].split("\n")[0] for o in observations if o["tool"] == "run_tests"]
    assert failing_then_passing[0].startswith("FAILED") and failing_then_passing[1].startswith("PASSED")
    # Every step a sandbox produced names the isolation it ran under.
    sandboxed = [o for o in observations if o["tool"] in ("run_tests", "write_file", "repo_read_file")]
    assert sandboxed and {o.get("sandbox") for o in sandboxed} == {"bubblewrap"}
    progress = Step.objects.filter(run=run, kind="progress")
    assert progress.exists() and {p.payload.get("sandbox") for p in progress} == {"bubblewrap"}


@pytest.mark.slow
def test_the_debugging_agent_on_claude_fixes_the_bug_through_the_real_sdk(bubblewrap, forge_repo, group, make_agent, start_run, settings, slow_tools):
    """The same story on the anthropic planner: the real SDK talks to a local Messages API server that
    answers with the recorded turns, so tool definitions, tool_use ids and tool_result pairing all
    cross a real socket in the API's own format."""
    from tests.fakes.anthropic_server import FakeAnthropic, message, tool_use

    turns = yaml.safe_load(SCRIPT.read_text())
    seen: list[dict] = []

    def answer(request: dict) -> dict:
        seen.append(request)
        index = sum(1 for m in request["messages"] if m["role"] == "assistant")
        if index >= len(turns):
            return message("Done.", input_tokens=2000, output_tokens=50)
        turn = turns[index]
        calls = [tool_use(c["name"], c.get("arguments", {}), id=f"toolu_{index}_{i}") for i, c in enumerate(turn.get("tool_calls") or [])]
        return message(turn.get("text"), calls, input_tokens=3000, output_tokens=400)

    settings.ANTHROPIC_API_KEY = "sk-ant-test-" + "k" * 30
    settings.ANTHROPIC_BACKOFF_S = 0.01
    with FakeAnthropic(handler=answer) as fake:
        settings.ANTHROPIC_BASE_URL = fake.base_url
        agent = make_agent(slug="debugging-agent", trust_phase=3, config={**CONFIG, "planner": "anthropic"}, grants={k: dict(v) for k, v in GRANTS.items()})
        run = start_run(agent, "A critical error", context={"error_group_id": group.pk}, fingerprint=f"error:{group.pk}")
    assert run.status == RunStatus.SUCCEEDED, (run.status_reason, run.final_error)
    assert run.planner_kind == "anthropic" and run.cost_usd > 0
    assert len(seen) == len(turns) and run.input_tokens == 3000 * len(turns)
    pr = PullRequest.objects.get(run=run)
    assert (pr.draft, pr.status) == (False, PullRequestStatus.OPEN) and "CHECKOUT_DB_POOL_SIZE" in pr.diff
    # What the API received: every granted tool (trust phase 3 sees merge), and every tool_use answered.
    assert sorted(t["name"] for t in seen[0]["tools"]) == sorted(GRANTS)
    # The Messages API takes an object schema and a description for every tool.
    assert all(t["input_schema"]["type"] == "object" and t["description"] for t in seen[0]["tools"])
    for request in seen[1:]:
        last = request["messages"][-1]
        asked = [b["id"] for b in request["messages"][-2]["content"] if b["type"] == "tool_use"]
        assert [b["tool_use_id"] for b in last["content"] if b["type"] == "tool_result"] == asked
    # The API key never reached storage.
    assert not Step.objects.filter(run=run, payload__icontains="sk-ant-test").exists()


# --- scopes on resolved paths, the policy's timeout (issue 9 items 4 and 5) -------------------------

LINK_PATCH = (
    "diff --git a/tests/up b/tests/up\nnew file mode 120000\nindex 0000000..a96aa0e\n--- /dev/null\n"
    "+++ b/tests/up\n@@ -0,0 +1 @@\n+..\n\\ No newline at end of file\n"
)
TESTS_ONLY = {**GRANTS, **{tool: {"paths": ["tests/*"]} for tool in ("apply_patch", "write_file", "repo_read_file", "repo_list_files", "repo_search")}}


def _db_py(h: Harness) -> str:
    return h.services.sandbox().read_file("checkout/db.py")


@pytest.mark.slow
def test_a_patch_creating_a_link_out_of_the_grant_is_refused_and_leaves_nothing(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(2, grants=TESTS_ONLY))
    before = _db_py(h)
    with pytest.raises(ScopeViolation, match="symbolic link"):
        h("apply_patch", patch=LINK_PATCH)
    assert h("run_command", command="test -L tests/up || test -e tests/up").is_error  # undone
    assert not any(name.startswith(".agentops-tool") for name in h.services.sandbox().list_files())
    outside = LINK_PATCH.replace("+..", "+/etc")
    with pytest.raises(ScopeViolation):
        h("apply_patch", patch=outside)
    assert _db_py(h) == before


@pytest.mark.slow
def test_a_link_made_by_a_command_is_refused_at_use_by_every_file_tool(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(2, grants=TESTS_ONLY))
    before = _db_py(h)
    assert not h("run_command", command="ln -s .. tests/up && ln -s ../checkout/db.py tests/db_link").is_error
    attempts = [
        ("write_file", {"path": "tests/up/checkout/db.py", "content": "pwned\n"}),
        ("write_file", {"path": "tests/db_link", "content": "pwned\n"}),
        ("repo_read_file", {"path": "tests/up/checkout/db.py"}),
        ("repo_read_file", {"path": "tests/db_link"}),
        ("repo_list_files", {"path": "tests/up"}),
        ("repo_search", {"query": "POOL_SIZE", "path": "tests/up/checkout"}),
        ("apply_patch", {"patch": "--- a/tests/up/checkout/db.py\n+++ b/tests/up/checkout/db.py\n@@ -1 +1 @@\n-x\n+y\n"}),
        ("apply_patch", {"patch": "--- a/tests/db_link\n+++ b/tests/db_link\n@@ -1 +1 @@\n-x\n+y\n"}),
    ]
    for tool, args in attempts:
        with pytest.raises(ScopeViolation):
            h(tool, **args)
    assert _db_py(h) == before
    assert "checkout/db.py" not in h("repo_list_files").output


@pytest.mark.slow
def test_a_patch_with_a_quoted_name_is_checked_on_the_name_git_writes(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(2, grants=TESTS_ONLY))
    patch = (
        'diff --git "a/\\143heckout/new.py" "b/\\143heckout/new.py"\nnew file mode 100644\n--- /dev/null\n+++ "b/\\143heckout/new.py"\n@@ -0,0 +1 @@\n+x = 1\n'
    )
    with pytest.raises(ScopeViolation):
        h("apply_patch", patch=patch)
    assert "checkout/new.py" not in h.services.sandbox().list_files()


@pytest.mark.slow
def test_run_command_cannot_raise_the_policys_command_timeout(bubblewrap, forge_repo, agent_at, harness):
    h = harness(agent_at(3, policy={"command_timeout_s": 2}))
    result = h("run_command", command="sleep 60", timeout_s=3600)
    assert result.is_error and "timed out" in result.output
    assert "2s applied" in result.output
    assert float(result.output.split("timed out, ")[1].split("s]")[0]) < 6
