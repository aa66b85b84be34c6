"""Running the verification gates: judge exactly the change that will be published.

Order, each a ``gate`` step:

1. ``secrets``      no secret in the diff, the pull request text or the commit message
2. ``diff_limits``  changed lines within Policy.max_diff_lines, no binary files, no Policy.protected_paths
                    unless a person approved this very call
3. ``change``       the diff is turned, on the host, into the change that will be published (full file
                    contents and the git tree they make) from the trusted base commit. Links, submodules and
                    mode changes are refused; every path is re-checked against the grant paths of the
                    agent's file-writing tools and the protected paths.
4. ``tests_intact`` by meaning (agentops.gates.intact): deleted, skipped, neutralised or loosened tests fail;
                    changes to tests, test configuration, package inits and constants the tests use are
                    flagged for a person
5. ``tests_pass``   in a FRESH sandbox: the suite runs on the base commit (trusted) for the inventory, then
                    the same diff is applied, the sandbox must reach the very tree of step 3, and the suite
                    runs again. For pytest the JUnit XML report is parsed and compared with the base run;
                    for any other command only the exit code is known and the change is flagged.

Nothing the test run writes is ever published: the ChangeSet comes from step 3, computed before any of
the change's code ran. A flagged change never merges without a person (trust phase 4 falls back to 3).
"""

from __future__ import annotations

import secrets as token_source
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentops.forges.base import ChangeSet
from agentops.gates.change import ChangeRefused, Materialized, materialize
from agentops.gates.diffs import changed_lines, diff_paths, matches_any, mode_problems
from agentops.gates.intact import IntactReport, is_test_file, judge_tests_intact, test_file_of
from agentops.gates.junit import FAILED, PASSED, Report, is_pytest_command, judge_runs, parse_report
from agentops.redaction import contains_secret
from agentops.runs.models import StepKind
from agentops.runs.steps import step_record
from agentops.sandbox import SandboxLimits
from agentops.sandbox import create_sandbox as fresh_sandbox
from agentops.tools.scopes import path_allowed

# MALLOC_ARENA_MAX: under an address-space limit (bubblewrap RLIMIT_AS) glibc's per-thread malloc
# arenas (64 MiB each) make a threaded test fail to start threads; two arenas are plenty.
TEST_ENV = "PYTHONDONTWRITEBYTECODE=1 MALLOC_ARENA_MAX=2"
MAX_FLAGS_SHOWN = 30


@dataclass
class GateResult:
    name: str
    passed: bool
    detail: str
    flags: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verification:
    gates: list[GateResult] = field(default_factory=list)
    changes: ChangeSet | None = None
    changed_lines: int = 0
    paths: list[str] = field(default_factory=list)
    test_output: str = ""
    tree: str = ""  # the git tree of base + change: what the forge's branch must hold
    base: str = ""
    flags: list[str] = field(default_factory=list)  # reasons a person must look (no auto-merge)

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates) and any(g.name == "tests_pass" for g in self.gates) and self.changes is not None

    def failures(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> str:
        lines = [f"{'PASS' if g.passed else 'FAIL'} {g.name}: {g.detail}" for g in self.gates]
        if self.flags:
            lines.append("FLAGGED for a person (never auto-merged):")
            lines += [f"- {f}" for f in self.flags[:MAX_FLAGS_SHOWN]]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# static gates


def gate_secrets(diff: str, text: str, message: str = "") -> GateResult:
    found = [what for what, value in (("diff", diff), ("pull request text", text), ("commit message", message)) if value and contains_secret(value)]
    if found:
        return GateResult("secrets", False, f"a secret (token, key or configured secret value) appears in the {' and '.join(found)}; remove it")
    return GateResult("secrets", True, "no secret in the diff, the text or the commit message")


def gate_diff_limits(diff: str, policy: Any, *, approved: bool) -> GateResult:
    if "GIT binary patch" in diff or "\nBinary files " in diff or diff.startswith("Binary files "):
        return GateResult("diff_limits", False, "binary files cannot be proposed")
    try:
        paths = diff_paths(diff)
    except ValueError as exc:
        return GateResult("diff_limits", False, str(exc))
    lines = changed_lines(diff)
    if lines > policy.max_diff_lines:
        return GateResult("diff_limits", False, f"{lines} changed lines exceed the limit of {policy.max_diff_lines}")
    protected = [p for p in paths if matches_any(p, policy.protected_paths or [])]
    if protected and not approved:
        return GateResult("diff_limits", False, f"touches protected paths {protected}: needs a person's approval")
    note = f" (protected {protected} approved by a person)" if protected else ""
    return GateResult("diff_limits", True, f"{lines} changed lines in {len(paths)} file(s), limit {policy.max_diff_lines}{note}")


def gate_change(
    diff: str, *, repo_source: str, ref: str, policy: Any, approved: bool, allowed_paths: list[str] | None
) -> tuple[GateResult, Materialized | None]:
    problems = mode_problems(diff)
    if problems:
        return GateResult("change", False, "; ".join(problems)), None
    try:
        change = materialize(diff, repo_source=repo_source, ref=ref, is_test_file=_test_or_conftest)
    except ChangeRefused as exc:
        return GateResult("change", False, str(exc)), None
    except Exception as exc:  # noqa: BLE001 - git missing, a timeout, the disk: fail closed with the reason
        return GateResult("change", False, f"the change could not be computed: {str(exc)[:300]}"), None
    paths = list(change.files)
    if allowed_paths is not None:
        outside = [p for p in paths if not (allowed_paths and path_allowed(p, allowed_paths))]
        if outside:
            return GateResult("change", False, f"changes {outside} outside the paths this agent may write {allowed_paths}"), None
    protected = [p for p in paths if matches_any(p, policy.protected_paths or [])]
    if protected and not approved:
        return GateResult("change", False, f"touches protected paths {protected}: needs a person's approval"), None
    counts = {s: sum(1 for e in change.entries if e.status == s) for s in "AMD"}
    detail = (
        f"{len(paths)} file(s) as published ({counts['A']} added, {counts['M']} changed, {counts['D']} deleted), "
        f"tree {change.tree[:12]} on base {change.base[:12]}; regular files only" + ("; within the write grants" if allowed_paths is not None else "")
    )
    return GateResult("change", True, detail, evidence={"tree": change.tree, "base": change.base, "paths": paths}), change


def _test_or_conftest(path: str) -> bool:
    return is_test_file(path) or path.endswith("conftest.py")


# --------------------------------------------------------------------------------------------------
# the sandbox part


def _record(run: Any, gate: GateResult, lease_owner: str | None) -> None:
    payload: dict[str, Any] = {"gate": gate.name, "passed": gate.passed, "detail": gate.detail}
    if gate.flags:
        # A flagged gate passed, but its change needs a person: no auto-merge at trust phase 4.
        payload.update(flags=gate.flags[:MAX_FLAGS_SHOWN], flagged=True, needs_person=True)
    if gate.evidence:
        payload["evidence"] = gate.evidence
    # Under the lease: a worker presumed dead while its gate ran must not write after a takeover.
    step_record(run=run, kind=StepKind.GATE, payload=payload, lease_owner=lease_owner)


def _run_pytest(sandbox: Any, command: str, name: str, *, emit: Callable[[str], None] | None, cancel_check: Callable[[], bool] | None) -> tuple[Any, Report]:
    """Run the test command with pytest writing its JUnit report to a fresh, unguessable path outside
    the workspace (PYTEST_ADDOPTS reaches pytest however the command starts it); read the report."""
    folder = f"$HOME/.agentops-gate-{name}"
    report = f"{folder}/report.xml"
    script = (
        f'rm -rf "{folder}" && mkdir -m 700 "{folder}" || exit 97; export {TEST_ENV} PYTEST_ADDOPTS="--junitxml={report} -o junit_family=xunit2"; {command}'
    )
    executed = sandbox.exec(script, on_output=emit, cancel_check=cancel_check)
    if executed.cancelled or executed.timed_out:
        return executed, Report(error="the run did not finish")
    read = sandbox.exec(["/bin/sh", "-c", f'cat "{report}" 2>/dev/null'], timeout=120)
    if read.truncated:
        return executed, Report(error="the JUnit report is larger than a command's output limit")
    return executed, parse_report(read.output if read.exit_code == 0 else "")


def _workspace_evidence(sandbox: Any, tree: str) -> tuple[list[str], list[str]]:
    """(files the test run modified or deleted, files it added), against the tree it was given.

    Read with a throw-away index, so a test run that staged or unstaged files changes nothing here."""
    script = (
        'idx=$(mktemp /tmp/agentops-index.XXXXXX) || exit 1; export GIT_INDEX_FILE="$idx"; '
        f"git read-tree {tree} && git add -A . && git -c core.quotepath=off diff --cached --name-status --no-renames -z {tree}; "
        'code=$?; rm -f "$idx"; exit $code'
    )
    status = sandbox.exec(["/bin/sh", "-c", script], timeout=120)
    if status.exit_code != 0:
        return [f"(the workspace could not be read after the run: {status.output[-200:]})"], []
    fields = [f for f in status.output.split("\x00") if f]
    changed, added = [], []
    for code, path in zip(fields[::2], fields[1::2], strict=False):
        if code.startswith("A"):
            added.append(path)
        else:
            changed.append(f"{path} ({'deleted' if code.startswith('D') else 'modified'})")
    return changed, added


def _fixed_by_editing_the_test(baseline: Report, after: Report, intact: IntactReport) -> list[str]:
    """Tests that failed on the base and pass now only because the change edited them (their code, or a
    constant they read): the proof of a fix is the unchanged failing test passing."""
    problems = []
    for test_id, outcome in baseline.outcomes.items():
        if outcome != FAILED or after.outcomes.get(test_id) != PASSED:
            continue
        classname, _, name = test_id.partition("::")
        found = test_file_of(classname, intact.test_sources)
        if found is None:
            continue
        path, prefix = found
        qualified = f"{prefix}.{name.split('[')[0]}" if prefix else name.split("[")[0]
        why = intact.edits_behind(path, qualified)
        if why:
            problems.append(f"{test_id} failed on the base and passes only because the change edited it ({why}): fix the code, not the test")
    return problems


def _gate_tests_pass(
    sandbox: Any,
    *,
    diff: str,
    change: Materialized,
    command: str,
    emit: Callable[[str], None] | None,
    cancel_check: Callable[[], bool] | None,
    result: Verification,
    intact: IntactReport,
) -> GateResult:
    flags: list[str] = []
    if sandbox.base_commit != change.base:
        return GateResult("tests_pass", False, f"the gate sandbox is at {sandbox.base_commit[:12]}, not the base {change.base[:12]}")
    pytest = is_pytest_command(command)
    token = token_source.token_hex(16)
    baseline: Report | None = None
    if pytest:
        if emit:
            emit("[gate] the tests on the base commit first, for the inventory\n")
        base_run, baseline = _run_pytest(sandbox, command, f"{token}-base", emit=emit, cancel_check=cancel_check)
        if base_run.cancelled:
            return GateResult("tests_pass", False, "cancelled")
        if baseline.error:
            flags.append(f"no test inventory from the base commit ({baseline.error}); only the change's run is judged")
            baseline = None
        reset = sandbox.exec(["/bin/sh", "-c", "git reset -q --hard HEAD && git clean -qffdx"], timeout=120)
        if reset.exit_code != 0:
            return GateResult("tests_pass", False, f"could not reset the gate sandbox after the base run: {reset.output[-300:]}")
    sandbox.write_file(".agentops-gate.patch", diff if diff.endswith("\n") else diff + "\n")
    # The refresh: a fresh clone's index may hold stale stat data, which `apply --index` takes for edits.
    applied = sandbox.exec(
        "git update-index -q --refresh >/dev/null 2>&1; "
        "git apply --index --whitespace=nowarn .agentops-gate.patch; code=$?; rm -f .agentops-gate.patch; "
        "[ $code -eq 0 ] && git write-tree; exit $code",
        timeout=120,
    )
    if applied.exit_code != 0:
        return GateResult("tests_pass", False, f"the diff does not apply to a fresh clone of {change.base[:12]}: {applied.output[-500:]}")
    tree = applied.output.strip().splitlines()[-1:] or [""]
    if tree[0] != change.tree:
        return GateResult(
            "tests_pass", False, f"the gate sandbox holds tree {tree[0][:12]}, not the change's {change.tree[:12]}: refusing to judge another tree"
        )
    if emit:
        emit("[gate] the tests on the change\n")
    if pytest:
        executed, after = _run_pytest(sandbox, command, f"{token}-change", emit=emit, cancel_check=cancel_check)
    else:
        executed = sandbox.exec(f"export {TEST_ENV}; {command}", on_output=emit, cancel_check=cancel_check)
        after = None
        flags.append(f"the test command `{command[:80]}` is not pytest: only its exit code is known")
    result.test_output = executed.output
    tail = (executed.output.strip().splitlines()[-1:] or [""])[0][:300]
    if executed.cancelled:
        return GateResult("tests_pass", False, "cancelled", flags)
    if executed.timed_out:
        return GateResult("tests_pass", False, f"`{command}` timed out in a fresh sandbox", flags)
    modified, added = _workspace_evidence(sandbox, change.tree)
    evidence: dict[str, Any] = {}
    problems: list[str] = []
    if modified:
        problems.append(f"the test run rewrote the workspace ({', '.join(modified[:10])}); what a test run writes is never published")
    if added:
        flags.append(f"the test run created files in the workspace (not published): {', '.join(added[:10])}")
    if after is not None:
        judged = judge_runs(baseline, after, exit_code=executed.exit_code)
        problems += judged.problems
        if baseline is not None:
            problems += _fixed_by_editing_the_test(baseline, after, intact)
        evidence.update(judged.evidence)
        evidence["summary"] = after.summary()
    elif executed.exit_code != 0:
        problems.append(f"`{command}` failed (exit {executed.exit_code}): {tail}")
    if modified:
        evidence["workspace_rewritten"] = modified[:20]
    if problems:
        detail = f"`{command}` in a fresh sandbox: " + "; ".join(problems) + f"\n{executed.output[-3000:]}"
        return GateResult("tests_pass", False, detail, flags, evidence)
    proof = after.summary() if after is not None else f"exit code 0: {tail}"
    if baseline is not None:
        proof += f"; every one of the {len(baseline.outcomes)} test(s) of the base ran again"
        if evidence.get("fixed"):
            proof += f", {len(evidence['fixed'])} failing on the base now pass"
    if flags:
        proof += f"; {len(flags)} flag(s) for a person: " + "; ".join(flags[:5])
    return GateResult("tests_pass", True, f"`{command}` passed in a fresh sandbox: {proof}", flags, evidence)


def verify_change(
    *,
    run: Any,
    agent: Any,
    diff: str,
    text: str = "",
    approved: bool = False,
    repo_source: str,
    ref: str,
    message: str = "",
    emit: Callable[[str], None] | None = None,
    cancel_check: Callable[[], bool] | None = None,
    create_sandbox: Callable[..., Any] | None = None,
    allowed_paths: list[str] | None = None,
    lease_owner: str | None = None,
) -> Verification:
    """Run every gate on `diff` (the agent's workspace against `ref`, read once); record each as a step.

    On success `result.changes` is the ChangeSet to publish: computed from `diff` and the base before any
    of the change's code ran, and the only thing a caller may publish."""
    policy = agent.policy
    result = Verification()

    def add(gate: GateResult) -> bool:
        # Flags quote the change (paths, values, assertions): one naming a secret is withheld, not shown.
        gate.flags = [f if not contains_secret(f) else "(a flag that quotes a secret value is withheld)" for f in gate.flags]
        _record(run, gate, lease_owner)
        result.gates.append(gate)
        result.flags += [f for f in gate.flags if f not in result.flags]
        return gate.passed

    if not diff.strip():
        add(GateResult("diff_limits", False, "the workspace has no changes"))
        return result
    if not all([add(gate_secrets(diff, text, message)), add(gate_diff_limits(diff, policy, approved=approved))]):
        return result
    result.paths = diff_paths(diff)
    result.changed_lines = changed_lines(diff)
    gate, change = gate_change(diff, repo_source=repo_source, ref=ref, policy=policy, approved=approved, allowed_paths=allowed_paths)
    if not add(gate) or change is None:
        return result
    result.paths = list(change.files)
    result.tree, result.base = change.tree, change.base

    intact = judge_tests_intact(diff, change.files, change.old, change.base_test_sources)
    if intact.problems:
        detail = "; ".join(intact.problems)
    else:
        detail = f"{intact.test_files} test file(s) changed, no test deleted, skipped, neutralised or weakened"
        if intact.flags:
            detail += f"; {len(intact.flags)} flag(s) for a person: " + "; ".join(intact.flags[:5])
    if not add(GateResult("tests_intact", not intact.problems, detail, intact.flags)):
        return result

    command = (agent.config or {}).get("test_command") or ""
    if not command:
        add(GateResult("tests_pass", False, "this agent has no test_command configured: nothing proves the change"))
        return result
    limits = SandboxLimits.from_policy(policy)
    # A fresh clone of the trusted base: nothing of the agent's workspace (or of a previous gate run) is in it.
    try:
        sandbox = (create_sandbox or fresh_sandbox)(
            run_id=f"{run.pk}-gate", repo=repo_source, ref=change.base, limits=limits, image=(agent.config or {}).get("sandbox_image")
        )
    except Exception as exc:  # SandboxError and kin: nothing is proven, so nothing is published
        add(GateResult("tests_pass", False, f"the gate sandbox could not be started: {str(exc)[:500]}"))
        return result
    try:
        gate = _gate_tests_pass(sandbox, diff=diff, change=change, command=command, emit=emit, cancel_check=cancel_check, result=result, intact=intact)
    except Exception as exc:  # the sandbox failed under the tests: fail closed, with the reason on record
        gate = GateResult("tests_pass", False, f"the gate sandbox failed: {str(exc)[:500]}")
    finally:
        sandbox.destroy()
    if add(gate):
        result.changes = change.changeset(message or "Change proposed by agentops")
    return result
