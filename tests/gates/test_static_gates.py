"""The gates' static judgement: tests intact by meaning, links and modes, the JUnit report."""

from __future__ import annotations

import ast

import pytest

from agentops.gates import (
    compare_test_file,
    is_pytest_command,
    judge_runs,
    judge_tests_intact,
    mode_problems,
    parse_report,
    tautology,
)

OLD = """
import pytest

from app.limits import LIMIT


def test_total():
    assert total() == 3
    assert total(1) > 3


def test_raises():
    with pytest.raises(ValueError):
        parse("x")
"""


@pytest.mark.parametrize(
    "source",
    [
        "assert True",
        "assert 1",
        "assert 'yes'",
        "assert 5 >= 5",
        "assert 1 == 1",
        "assert x == x",
        "assert x is x",
        "assert a or True",
        "assert (total() == 3, 'message')",
        "assert not False",
        "assert len(items) >= 0",
        "assert isinstance(x, object)",
        "assert 9**9**9**9",
        "assert True and 1",
    ],
)
def test_it_recognises_assertions_that_cannot_fail(source):
    assert tautology(ast.parse(source).body[0].test), source


@pytest.mark.parametrize("source", ["assert total() == 3", "assert x", "assert a or b", "assert False", "assert not x", "assert x == y"])
def test_it_leaves_real_assertions_alone(source):
    assert tautology(ast.parse(source).body[0].test) is None, source


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        (OLD.replace("assert total() == 3", "assert total() == total()"), "can never fail"),
        (OLD.replace("assert total() == 3", "assert True"), "can never fail"),
        (OLD.replace("assert total() == 3", "assert total() == 3 or True"), "can never fail"),
        (
            OLD.replace("    assert total() == 3\n", "    try:\n        assert total() == 3\n    except AssertionError:\n        pass\n"),
            "swallows AssertionError",
        ),
        (OLD.replace("    assert total() == 3\n", "    return\n    assert total() == 3\n"), "unreachable"),
        (OLD.replace("    assert total() == 3\n", "    if False:\n        assert total() == 3\n"), "if <false constant>"),
        (OLD.replace("assert total() == 3", "assert total() <= 3"), "`==` became `<=`"),
        (OLD.replace("assert total(1) > 3", "assert total(1) >= 3"), "`>` became `>=`"),
        (OLD.replace("assert total() == 3", "assert total()"), "the comparison was removed"),
        (OLD.replace("assert total() == 3", "assert total() == 3 or total() == 4"), "an `or` alternative was added"),
        (OLD.replace("pytest.raises(ValueError)", "pytest.raises(Exception)"), "now expects any exception"),
        (OLD.replace("def test_total", "def check_total"), "test_total deleted"),
        (OLD.replace("def test_total():\n", "def test_total():\n    pytest.skip('later')\n"), "now skipped"),
        (OLD + "\nimport sys\nsys.exit(0)\n", "whole module is now skipped (or exits at import)"),
    ],
)
def test_weakened_and_neutralised_tests_fail_the_gate(new, problem):
    problems, _flags = compare_test_file("tests/test_x.py", OLD, new)
    assert any(problem in p for p in problems), problems


def test_a_changed_expected_value_is_flagged_not_failed():
    problems, flags = compare_test_file("tests/test_x.py", OLD, OLD.replace("== 3", "== 4"))
    assert problems == []
    assert any("assertion changed `assert total() == 3` -> `assert total() == 4`" in f for f in flags)


def test_a_lowered_constant_is_flagged_in_the_test_and_in_the_module_it_imports():
    test_load = "CONCURRENT = 25\n\ndef test_burst():\n    assert run(CONCURRENT) == []\n"
    in_test = judge_tests_intact("", {"tests/test_load.py": test_load.replace("25", "5")}, {"tests/test_load.py": test_load}, {"tests/test_load.py": test_load})
    assert in_test.problems == []
    assert any("constant CONCURRENT changed 25 -> 5 (in the test itself)" in f for f in in_test.flags)

    limits = "LIMIT = 25\nTIMEOUT = 3.0\n"
    base_tests = {"tests/test_x.py": OLD}
    in_module = judge_tests_intact("", {"app/limits.py": "LIMIT = 5\nTIMEOUT = 9.0\n"}, {"app/limits.py": limits}, base_tests)
    assert any("app/limits.py: constant LIMIT changed 25 -> 5 (used by tests/test_x.py)" in f for f in in_module.flags)
    # A constant no test uses is the code's business.
    assert not any("TIMEOUT" in f for f in in_module.flags)


def test_test_configuration_inits_and_non_python_test_files_are_flagged():
    files = {
        "conftest.py": "x = 1\n",
        "checkout/__init__.py": "",
        "pytest.ini": "[pytest]\n",
        "pyproject.toml": "",
        "tests/data/orders.json": "{}",
        "checkout/service.py": "def f():\n    return 1\n",
    }
    old = {p: "" for p in files}
    report = judge_tests_intact("+addopts = -k 'not load'\n", files, old, {})
    flagged = " ".join(report.flags)
    for path in ("conftest.py", "checkout/__init__.py", "pytest.ini", "pyproject.toml", "tests/data/orders.json"):
        assert path in flagged, path
    assert "checkout/service.py" not in flagged
    assert "test collection changed: addopts" in flagged


def test_new_code_that_can_fake_a_run_is_flagged():
    report = judge_tests_intact(
        "",
        {"tests/test_new.py": "import atexit, os\n\ndef test_a():\n    atexit.register(lambda: os._exit(0))\n    assert f() == 1\n"},
        {"tests/test_new.py": None},
        {},
    )
    assert report.problems == []
    assert any("import atexit" in f and "_exit()" in f for f in report.flags)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("diff --git a/tests/up b/tests/up\nnew file mode 120000\n", "symbolic link"),
        ("diff --git a/vendor b/vendor\nnew file mode 160000\n", "submodule"),
        ("diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n", "changes the file mode"),
        ("diff --git a/run.sh b/run.sh\nnew file mode 100755\n", "only regular files"),
        ("diff --git a/link b/link\nindex 1234567..89abcde 120000\n", "symbolic link"),
    ],
)
def test_links_submodules_and_mode_changes_are_refused(header, why):
    problems = mode_problems(header + "--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+..\n")
    assert problems and why in problems[0]


def test_plain_changes_have_no_mode_problem():
    assert mode_problems("diff --git a/a.py b/a.py\nindex 1234567..89abcde 100644\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x\n+y\n") == []
    assert mode_problems("diff --git a/n.py b/n.py\nnew file mode 100644\n--- /dev/null\n+++ b/n.py\n@@ -0,0 +1 @@\n+y\n") == []


@pytest.mark.parametrize(
    ("command", "pytest_run"),
    [
        ("python3 -m pytest -q", True),
        ("pytest", True),
        ("cd src && /usr/bin/pytest tests", True),
        ("py.test -x", True),
        ("make test", False),
        ("npm test", False),
        ("python3 -m unittest", False),
        ("./pytest_runner.sh", False),
    ],
)
def test_pytest_commands_are_recognised(command, pytest_run):
    assert is_pytest_command(command) is pytest_run


def junit(*cases: str) -> str:
    return f'<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="{len(cases)}">{"".join(cases)}</testsuite></testsuites>'


def case(name: str, body: str = "") -> str:
    return f'<testcase classname="tests.test_x" name="{name}">{body}</testcase>'


def test_the_report_must_show_every_base_test_ran_again_and_passed():
    base = parse_report(junit(case("test_a"), case("test_b", "<failure message='x'/>"), case("test_c"), case("test_d", "<skipped/>")))
    good = parse_report(junit(case("test_a"), case("test_b"), case("test_c"), case("test_d", "<skipped/>"), case("test_new")))
    judged = judge_runs(base, good, exit_code=0)
    assert judged.passed, judged.problems
    assert judged.evidence["fixed"] == ["tests.test_x::test_b"] and judged.evidence["new_tests"] == 1

    deselected = parse_report(junit(case("test_a"), case("test_b"), case("test_d", "<skipped/>")))
    assert any("did not run on the change" in p and "test_c" in p for p in judge_runs(base, deselected, exit_code=0).problems)
    skipped = parse_report(junit(case("test_a"), case("test_b"), case("test_c", "<skipped/>"), case("test_d", "<skipped/>")))
    assert any("now skipped" in p for p in judge_runs(base, skipped, exit_code=0).problems)
    still = parse_report(junit(case("test_a"), case("test_b", "<error/>"), case("test_c"), case("test_d", "<skipped/>")))
    assert any("still do not pass" in p for p in judge_runs(base, still, exit_code=1).problems)


@pytest.mark.parametrize(
    ("xml", "why"),
    [
        ("", "pytest wrote no report"),
        ("<testsuites><testsuite/></testsuites>", "collected no test"),
        ("<not-xml", "does not parse"),
        ('<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><testsuites/>', "does not parse"),
        ("<html/>", "unexpected root"),
    ],
)
def test_a_missing_empty_or_hostile_report_proves_nothing(xml, why):
    judged = judge_runs(None, parse_report(xml), exit_code=0)
    assert not judged.passed and any(why in p for p in judged.problems), judged.problems


def test_test_code_that_patches_imported_code_at_import_is_flagged():
    sneaky = "from checkout import db\n\ndb.POOL_SIZE = 100\ndb.ConnectionPool.__init__.__defaults__ = (100,)\n\ndef test_a():\n    pool = make()\n    pool.size = 3\n    assert pool.size == 3\n"
    report = judge_tests_intact("", {"tests/test_aaa.py": sneaky}, {"tests/test_aaa.py": None}, {})
    flagged = " ".join(report.flags)
    assert "assigns db.POOL_SIZE" in flagged and "__defaults__" in flagged
    assert "pool.size" not in flagged  # a test's own objects are its business


def test_ordinary_code_is_not_flagged_as_suspicious():
    ordinary = "import os\n\n\ndef total(items):\n    names = list(items)\n    names.remove('x')\n    text = 'a'.replace('a', 'b')\n    return dict(os.environ).copy()\n"
    report = judge_tests_intact("", {"app/total.py": ordinary}, {"app/total.py": None}, {})
    assert report.flags == []
    risky = ordinary + "\n\ndef clean():\n    os.remove('x')\n    import shutil\n    shutil.rmtree('y')\n"
    flags = judge_tests_intact("", {"app/total.py": risky}, {"app/total.py": ordinary}, {}).flags
    assert flags and "remove()" in flags[0] and "rmtree()" in flags[0] and "import shutil" in flags[0]
