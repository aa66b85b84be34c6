"""Verification gates: what the controller proves itself before a change is surfaced.

Run by tool executors (never by the model, never trusting what the model says about its work):

1. ``secrets``      no secret in the diff or the pull request text (agentops.redaction.contains_secret)
2. ``diff_limits``  changed lines within Policy.max_diff_lines, no binary files, no Policy.protected_paths
                    touched unless a person approved this very call
3. ``tests_intact`` no existing test file or test function deleted, skipped or weakened:
                    - a test file (``test_*.py``, ``*_test.py``, ``tests/**.py``) that existed is gone
                    - a test function or class (``test*`` / ``Test*``) that existed is gone
                    - a skip/xfail is added (``pytest.mark.skip``/``skipif``/``xfail``, ``unittest.skip*``,
                      ``expectedFailure``, a ``pytest.skip()``/``pytest.xfail()`` call, a module ``pytestmark``)
                    - a test function has fewer assertions than before (``assert`` statements plus
                      ``assert*``/``pytest.raises``/``pytest.warns`` calls)
                    - test collection is configured away (``conftest.py``/``pytest.ini`` edited, or a line
                      adding ``collect_ignore``, ``--deselect``, ``--ignore``, ``addopts``, ``norecursedirs``)
4. ``tests_pass``   the repository's test command exits 0 in a FRESH sandbox with the diff applied

Every gate's result is a ``gate`` step. The sandbox-backed gates (3, 4) run only when 1 and 2 pass.
The change that is pushed is read back from the gate sandbox: exactly what was verified.
"""

from __future__ import annotations

import ast
import fnmatch
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentops.forges.base import ChangeSet
from agentops.redaction import contains_secret
from agentops.runs.models import StepKind
from agentops.runs.steps import step_record

# MALLOC_ARENA_MAX: under an address-space limit (bubblewrap RLIMIT_AS) glibc's per-thread malloc
# arenas (64 MiB each) make a threaded test fail to start threads; two arenas are plenty.
TEST_ENV = "PYTHONDONTWRITEBYTECODE=1 MALLOC_ARENA_MAX=2"
_COLLECTION_TRICKS = re.compile(r"collect_ignore|--deselect|--ignore|addopts|norecursedirs|pytest_collection_modifyitems|python_files|python_functions")
_SKIP_NAMES = {"skip", "skipif", "xfail", "skipIf", "skipUnless", "expectedFailure"}


@dataclass
class GateResult:
    name: str
    passed: bool
    detail: str


@dataclass
class Verification:
    gates: list[GateResult] = field(default_factory=list)
    changes: ChangeSet | None = None
    changed_lines: int = 0
    paths: list[str] = field(default_factory=list)
    test_output: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates) and any(g.name == "tests_pass" for g in self.gates)

    def failures(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> str:
        lines = [f"{'PASS' if g.passed else 'FAIL'} {g.name}: {g.detail}" for g in self.gates]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# reading a diff


def diff_paths(diff: str) -> list[str]:
    """Every path a unified git diff touches (old and new names of renames)."""
    paths: list[str] = []
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            match = re.match(r'^diff --git "?a/(.+?)"? "?b/(.+?)"?$', line)
            if not match:
                raise ValueError(f"cannot read diff header {line!r}")
            for path in match.groups():
                if path not in paths:
                    paths.append(path)
    return paths


def changed_lines(diff: str) -> int:
    count = 0
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            continue
        if line.startswith(("+", "-")):
            count += 1
    return count


def matches_any(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(posixpath.basename(path), p) for p in patterns)


def is_test_file(path: str) -> bool:
    name = posixpath.basename(path)
    if not name.endswith(".py"):
        return False
    return name.startswith("test_") or name.endswith("_test.py") or "tests/" in f"/{path}" and name != "__init__.py" and name != "conftest.py"


# --------------------------------------------------------------------------------------------------
# static gates


def gate_secrets(diff: str, text: str) -> GateResult:
    found = [what for what, value in (("diff", diff), ("pull request text", text)) if value and contains_secret(value)]
    if found:
        return GateResult("secrets", False, f"a secret (token, key or configured secret value) appears in the {' and '.join(found)}; remove it")
    return GateResult("secrets", True, "no secret in the diff or the text")


def gate_diff_limits(diff: str, policy: Any, *, approved: bool) -> GateResult:
    if "GIT binary patch" in diff or "\nBinary files " in diff:
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


# --------------------------------------------------------------------------------------------------
# tests intact


@dataclass
class CaseInfo:
    asserts: int
    skipped: bool


def _is_skip_marker(node: ast.AST) -> bool:
    """`pytest.mark.skip`, `pytest.mark.skipif(...)`, `unittest.skip(...)`, `skip`, `xfail`..."""
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute):
        return target.attr in _SKIP_NAMES
    if isinstance(target, ast.Name):
        return target.id in _SKIP_NAMES
    return False


def _skip_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("skip", "xfail", "skipTest")
    )


def _count_asserts(node: ast.AST) -> int:
    count = 0
    for child in ast.walk(node):
        if isinstance(child, ast.Assert):
            count += 1
        elif isinstance(child, ast.Call):
            func = child.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name.startswith("assert") or name in ("raises", "warns", "fail"):
                count += 1
    return count


def inventory_of_tests(source: str) -> tuple[dict[str, CaseInfo], bool]:
    """{qualified test name: CaseInfo}, and whether the module as a whole is skipped (pytestmark)."""
    tree = ast.parse(source)
    tests: dict[str, CaseInfo] = {}
    module_skipped = False
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets) and node.value is not None:
                module_skipped = module_skipped or any(_is_skip_marker(n) for n in ast.walk(node.value))
        if isinstance(node, ast.Expr) and _skip_call(node.value):
            module_skipped = True  # pytest.skip(allow_module_level=True)

    def visit(body: list[ast.stmt], prefix: str, class_skipped: bool) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                skipped = class_skipped or any(_is_skip_marker(d) for d in node.decorator_list)
                tests[f"{prefix}{node.name}"] = CaseInfo(asserts=0, skipped=skipped)
                visit(node.body, f"{prefix}{node.name}.", skipped)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                skipped = class_skipped or any(_is_skip_marker(d) for d in node.decorator_list)
                skipped = skipped or any(_skip_call(n) for n in ast.walk(node))
                tests[f"{prefix}{node.name}"] = CaseInfo(asserts=_count_asserts(node), skipped=skipped)

    visit(tree.body, "", False)
    return tests, module_skipped


def weakened_tests(path: str, old: str | None, new: str | None) -> list[str]:
    """Reasons a change to one test file weakens the tests (empty: it does not)."""
    if old is None:
        return []  # a new test file only adds
    if new is None:
        return [f"{path}: existing test file deleted"]
    try:
        old_tests, old_module_skip = inventory_of_tests(old)
    except SyntaxError:
        return []  # it did not parse before: nothing to weaken
    try:
        new_tests, new_module_skip = inventory_of_tests(new)
    except SyntaxError as exc:
        return [f"{path}: no longer parses ({exc.msg}, line {exc.lineno})"]
    problems = []
    if new_module_skip and not old_module_skip:
        problems.append(f"{path}: the whole module is now skipped")
    for name, before in old_tests.items():
        after = new_tests.get(name)
        if after is None:
            problems.append(f"{path}::{name} deleted")
        elif after.skipped and not before.skipped:
            problems.append(f"{path}::{name} is now skipped or xfail")
        elif after.asserts < before.asserts:
            problems.append(f"{path}::{name} weakened: {before.asserts} assertion(s) before, {after.asserts} after")
    return problems


def collection_tricks(diff: str, paths: list[str]) -> list[str]:
    problems = [f"{p}: test configuration changed" for p in paths if posixpath.basename(p) in ("conftest.py", "pytest.ini")]
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++") and _COLLECTION_TRICKS.search(line):
            problems.append(f"test collection changed: {line[1:].strip()[:120]}")
    return problems


# --------------------------------------------------------------------------------------------------
# running the gates


def _record(run: Any, gate: GateResult) -> None:
    step_record(run=run, kind=StepKind.GATE, payload={"gate": gate.name, "passed": gate.passed, "detail": gate.detail})


def _changed_files(sandbox: Any) -> dict[str, str | None]:
    script = f"git add -A . && git -c core.quotepath=off diff --cached --name-status --no-renames -z {sandbox.base_commit}"
    result = sandbox.exec(["/bin/sh", "-c", script], timeout=120)
    if result.exit_code != 0:
        raise RuntimeError(f"listing the changed files failed: {result.output[-500:]}")
    fields = [f for f in result.output.split("\x00") if f]
    files: dict[str, str | None] = {}
    for status, path in zip(fields[::2], fields[1::2], strict=False):
        files[path] = None if status.startswith("D") else sandbox.read_file(path)
    return files


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
) -> Verification:
    """Run every gate on `diff` (the workspace against `ref`); record each as a step."""
    policy = agent.policy
    result = Verification()
    if not diff.strip():
        gate = GateResult("diff_limits", False, "the workspace has no changes")
        _record(run, gate)
        result.gates.append(gate)
        return result
    for gate in (gate_secrets(diff, text), gate_diff_limits(diff, policy, approved=approved)):
        _record(run, gate)
        result.gates.append(gate)
    if result.failures():
        return result
    result.paths = diff_paths(diff)
    result.changed_lines = changed_lines(diff)

    if create_sandbox is None:
        from agentops.sandbox import create_sandbox
    from agentops.sandbox import SandboxLimits

    limits = SandboxLimits(
        memory_mb=policy.sandbox_memory_mb,
        pids=policy.sandbox_pids,
        cpus=float(policy.sandbox_cpus),
        command_timeout_s=float(policy.command_timeout_s),
    )
    sandbox = create_sandbox(run_id=f"{run.pk}-gate", repo=repo_source, ref=ref, limits=limits, image=agent.config.get("sandbox_image"))
    try:
        test_paths = [p for p in result.paths if is_test_file(p)]
        before = {p: _read_or_none(sandbox, p) for p in test_paths}
        sandbox.write_file(".agentops-gate.patch", diff)
        applied = sandbox.exec("git apply --whitespace=nowarn .agentops-gate.patch; code=$?; rm -f .agentops-gate.patch; exit $code", timeout=120)
        if applied.exit_code != 0:
            gate = GateResult("tests_pass", False, f"the diff does not apply to a fresh clone of {ref[:12]}: {applied.output[-500:]}")
            _record(run, gate)
            result.gates.append(gate)
            return result
        problems = collection_tricks(diff, result.paths)
        for path in test_paths:
            problems += weakened_tests(path, before[path], _read_or_none(sandbox, path))
        gate = GateResult("tests_intact", not problems, "; ".join(problems) if problems else f"{len(test_paths)} test file(s) changed, no test deleted, skipped or weakened")
        _record(run, gate)
        result.gates.append(gate)
        if problems:
            return result
        command = agent.config.get("test_command") or ""
        if not command:
            gate = GateResult("tests_pass", False, "this agent has no test_command configured: nothing proves the change")
        else:
            executed = sandbox.exec(f"export {TEST_ENV}; {command}", on_output=emit, cancel_check=cancel_check)
            result.test_output = executed.output
            tail = executed.output.strip().splitlines()[-1:] or [""]
            if executed.cancelled:
                gate = GateResult("tests_pass", False, "cancelled")
            elif executed.timed_out:
                gate = GateResult("tests_pass", False, f"`{command}` timed out in a fresh sandbox")
            elif executed.exit_code != 0:
                gate = GateResult("tests_pass", False, f"`{command}` failed in a fresh sandbox (exit {executed.exit_code}): {tail[0][:300]}\n{executed.output[-3000:]}")
            else:
                gate = GateResult("tests_pass", True, f"`{command}` passed in a fresh sandbox: {tail[0][:300]}")
        _record(run, gate)
        result.gates.append(gate)
        if gate.passed:
            result.changes = ChangeSet(message=message or "Change proposed by agentops", files=_changed_files(sandbox))
    finally:
        sandbox.destroy()
    return result


def _read_or_none(sandbox: Any, path: str) -> str | None:
    check = sandbox.exec(["test", "-f", path], timeout=30)
    if check.exit_code != 0:
        return None
    return sandbox.read_file(path)


def shell_join(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)
