"""The verification gates: each one passes a good change and stops a bad one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentops.runs.models import Step
from agentops.verification import (
    changed_lines,
    collection_tricks,
    diff_paths,
    gate_diff_limits,
    gate_secrets,
    is_test_file,
    verify_change,
    weakened_tests,
)
from tests.triggers.factories import bubblewrap  # noqa: F401  fixture

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "checkout-service"

DIFF = """diff --git a/app/pool.py b/app/pool.py
index 1..2 100644
--- a/app/pool.py
+++ b/app/pool.py
@@ -1 +1 @@
-SIZE = 10
+SIZE = 50
diff --git a/docs/new.md b/docs/new.md
new file mode 100644
--- /dev/null
+++ b/docs/new.md
@@ -0,0 +1,2 @@
+# Pool
+fifty
"""


def policy(**kw):
    base = {"max_diff_lines": 500, "protected_paths": [], "low_risk_max_changed_lines": 40, "low_risk_paths": []}
    base.update(kw)
    return SimpleNamespace(**base)


def test_it_reads_paths_and_changed_lines_of_a_diff():
    assert diff_paths(DIFF) == ["app/pool.py", "docs/new.md"]
    assert changed_lines(DIFF) == 4


def test_the_secrets_gate():
    assert gate_secrets(DIFF, "Fix the pool").passed
    token = "ghp_" + "x" * 36
    assert not gate_secrets(DIFF.replace("fifty", token), "").passed
    failed = gate_secrets(DIFF, f"use {token}")
    assert not failed.passed and "pull request text" in failed.detail
    assert token not in failed.detail


def test_the_size_gate():
    assert gate_diff_limits(DIFF, policy(max_diff_lines=4), approved=False).passed
    failed = gate_diff_limits(DIFF, policy(max_diff_lines=3), approved=False)
    assert not failed.passed and "4 changed lines exceed the limit of 3" in failed.detail


def test_the_protected_paths_gate_yields_only_to_a_person():
    failed = gate_diff_limits(DIFF, policy(protected_paths=["docs/*"]), approved=False)
    assert not failed.passed and "docs/new.md" in failed.detail
    assert gate_diff_limits(DIFF, policy(protected_paths=["docs/*"]), approved=True).passed


def test_binary_diffs_are_refused():
    assert not gate_diff_limits(DIFF + "GIT binary patch\nliteral 1\n", policy(), approved=False).passed


def test_test_files_are_recognised():
    assert is_test_file("tests/test_load.py") and is_test_file("pkg/thing_test.py") and is_test_file("tests/helpers.py")
    assert not is_test_file("checkout/db.py") and not is_test_file("tests/conftest.py") and not is_test_file("tests/__init__.py")


OLD = """
import pytest

def test_total():
    assert total() == 3
    assert total(1) == 4

class TestPool:
    def test_size(self):
        self.assertEqual(size(), 10)
"""


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        (None, "existing test file deleted"),
        (OLD.replace("def test_total", "def helper"), "test_total deleted"),
        (OLD.replace("def test_total", "@pytest.mark.skip\ndef test_total"), "test_total is now skipped"),
        (OLD.replace("def test_total", "@pytest.mark.skipif(True, reason='x')\ndef test_total"), "test_total is now skipped"),
        (OLD.replace("def test_total", "@pytest.mark.xfail\ndef test_total"), "test_total is now skipped"),
        (OLD.replace("class TestPool", "@unittest.skip('x')\nclass TestPool"), "TestPool.test_size is now skipped"),
        (OLD.replace("    assert total(1) == 4\n", ""), "test_total weakened: 2 assertion(s) before, 1 after"),
        (OLD.replace("    assert total() == 3\n", "    pytest.skip('later')\n    assert total() == 3\n"), "test_total is now skipped"),
        (OLD + "\npytestmark = pytest.mark.skip\n", "the whole module is now skipped"),
        (OLD.replace("self.assertEqual(size(), 10)", "pass"), "TestPool.test_size weakened"),
        ("def test_total(:\n", "no longer parses"),
    ],
)
def test_weakened_tests_are_caught(new, problem):
    problems = weakened_tests("tests/test_x.py", OLD, new)
    assert any(problem in p for p in problems), problems


def test_strengthened_or_new_tests_pass():
    stronger = (
        OLD.replace("    assert total(1) == 4\n", "    assert total(1) == 4\n    assert total(2) == 5\n") + "\ndef test_more():\n    assert total(0) == 0\n"
    )
    assert weakened_tests("tests/test_x.py", OLD, stronger) == []
    assert weakened_tests("tests/test_new.py", None, "def test_a():\n    assert total(1) == 4\n") == []
    assert weakened_tests("tests/test_x.py", OLD, OLD.replace("== 3", "== 3  # total of the cart")) == []


def test_a_new_test_that_cannot_fail_is_caught():
    problems = weakened_tests("tests/test_new.py", None, "def test_a():\n    assert 1\n")
    assert problems and "can never fail" in problems[0]


def test_collection_tricks_are_caught():
    assert collection_tricks("+collect_ignore = ['tests/test_load.py']\n", ["setup.py"])
    assert collection_tricks("+addopts = --deselect tests/test_load.py\n", ["pyproject.toml"])
    assert collection_tricks("", ["tests/conftest.py"])
    assert collection_tricks(DIFF, diff_paths(DIFF)) == []


# --- in a fresh sandbox ------------------------------------------------------------------------


@pytest.fixture
def checkout_repo(tmp_path):
    path = tmp_path / "checkout-service"
    shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, env=env)
    return str(path)


FIX = EXAMPLE.parent / "scripts" / "debugging-agent.yaml"


def fixed_diff(repo: str, mutate) -> str:
    """Apply `mutate(path)` in a scratch clone and return `git diff` of it."""
    work = Path(repo).parent / "scratch"
    subprocess.run(["git", "clone", "-q", repo, str(work)], check=True)
    mutate(work)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    return subprocess.run(["git", "diff", "--cached"], cwd=work, capture_output=True, text=True, check=True).stdout


def _fix_pool(work: Path) -> None:
    db = work / "checkout" / "db.py"
    text = db.read_text()
    text = text.replace("POOL_SIZE = 10  # connections", "import os\n\nPOOL_SIZE = int(os.environ.get('CHECKOUT_DB_POOL_SIZE', '50'))")
    db.write_text(text)


@pytest.fixture
def gate_agent(make_agent):
    return make_agent(slug="gated", trust_phase=2, config={"test_command": "python3 -m pytest -q", "repository": "x"})


@pytest.fixture
def gate_run(gate_agent):
    from agentops.runs.services import run_create

    return run_create(agent=gate_agent, input="fix", enqueue=False)


def gates_of(run) -> list[tuple[str, bool]]:
    return [(s.payload["gate"], s.payload["passed"]) for s in Step.objects.filter(run=run, kind="gate").order_by("seq")]


@pytest.mark.slow
def test_a_good_fix_passes_every_gate_in_a_fresh_sandbox(bubblewrap, checkout_repo, gate_agent, gate_run):
    diff = fixed_diff(checkout_repo, _fix_pool)
    result = verify_change(run=gate_run, agent=gate_agent, diff=diff, text="Fix the pool", repo_source=checkout_repo, ref="main", message="Fix")
    assert result.passed, result.summary()
    assert gates_of(gate_run) == [("secrets", True), ("diff_limits", True), ("change", True), ("tests_intact", True), ("tests_pass", True)]
    assert list(result.changes.files) == ["checkout/db.py"]
    assert "CHECKOUT_DB_POOL_SIZE" in result.changes.files["checkout/db.py"]


@pytest.mark.slow
def test_a_change_that_leaves_the_tests_failing_is_stopped(bubblewrap, checkout_repo, gate_agent, gate_run):
    diff = fixed_diff(checkout_repo, lambda w: (w / "README.md").write_text("nothing fixed\n"))
    result = verify_change(run=gate_run, agent=gate_agent, diff=diff, repo_source=checkout_repo, ref="main")
    assert not result.passed
    assert gates_of(gate_run)[-1] == ("tests_pass", False)
    assert "test_load" in result.failures()[0].detail
    assert result.changes is None


@pytest.mark.slow
def test_deleting_the_failing_test_is_stopped_before_tests_run(bubblewrap, checkout_repo, gate_agent, gate_run):
    diff = fixed_diff(checkout_repo, lambda w: (w / "tests" / "test_load.py").unlink())
    result = verify_change(run=gate_run, agent=gate_agent, diff=diff, repo_source=checkout_repo, ref="main")
    assert not result.passed
    assert gates_of(gate_run) == [("secrets", True), ("diff_limits", True), ("change", True), ("tests_intact", False)]
    assert "tests/test_load.py: existing test file deleted" in result.failures()[0].detail


@pytest.mark.slow
def test_skipping_the_failing_test_is_stopped(bubblewrap, checkout_repo, gate_agent, gate_run):
    def skip(work: Path) -> None:
        path = work / "tests" / "test_load.py"
        path.write_text("import pytest\n" + path.read_text().replace("def test_checkout", "@pytest.mark.skip(reason='flaky')\ndef test_checkout"))

    result = verify_change(run=gate_run, agent=gate_agent, diff=fixed_diff(checkout_repo, skip), repo_source=checkout_repo, ref="main")
    assert not result.passed
    assert "is now skipped" in result.failures()[0].detail


@pytest.mark.slow
def test_a_diff_that_does_not_apply_is_stopped(bubblewrap, checkout_repo, gate_agent, gate_run):
    result = verify_change(run=gate_run, agent=gate_agent, diff=DIFF, repo_source=checkout_repo, ref="main")
    assert not result.passed
    assert "does not apply" in result.failures()[0].detail


def test_a_gate_sandbox_that_cannot_start_stops_the_change_with_a_reason(checkout_repo, gate_agent, gate_run):
    from agentops.sandbox import SandboxError

    def broken(**kw):
        raise SandboxError("the docker engine is unreachable")

    diff = fixed_diff(checkout_repo, _fix_pool)
    result = verify_change(run=gate_run, agent=gate_agent, diff=diff, repo_source=checkout_repo, ref="main", create_sandbox=broken)
    assert not result.passed and result.changes is None
    assert gates_of(gate_run)[-1] == ("tests_pass", False)
    assert "could not be started: the docker engine is unreachable" in result.failures()[0].detail


@pytest.mark.slow
def test_a_test_command_that_is_not_pytest_is_judged_by_exit_code_and_flagged(bubblewrap, checkout_repo, make_agent):
    from agentops.runs.services import run_create

    agent = make_agent(slug="not-pytest", trust_phase=4, config={"test_command": "true", "repository": "x"})
    run = run_create(agent=agent, input="fix", enqueue=False)
    result = verify_change(run=run, agent=agent, diff=fixed_diff(checkout_repo, _fix_pool), repo_source=checkout_repo, ref="main")
    assert result.passed, result.summary()
    assert any("is not pytest: only its exit code is known" in f for f in result.flags)
    step = Step.objects.filter(run=run, kind="gate").order_by("-seq").first()
    assert step.payload["gate"] == "tests_pass" and step.payload["flags"]
