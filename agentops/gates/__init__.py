"""Verification gates: what the controller proves itself before a change is surfaced (see core)."""

from agentops.gates.change import ChangeRefused, Materialized, materialize
from agentops.gates.core import (
    TEST_ENV,
    GateResult,
    Verification,
    gate_change,
    gate_diff_limits,
    gate_secrets,
    verify_change,
)
from agentops.gates.diffs import changed_lines, diff_paths, matches_any, mode_problems
from agentops.gates.intact import (
    CaseInfo,
    collection_tricks,
    compare_test_file,
    inventory_of_tests,
    is_test_file,
    judge_tests_intact,
    tautology,
    weakened_tests,
)
from agentops.gates.junit import is_pytest_command, judge_runs, parse_report

__all__ = [
    "TEST_ENV",
    "CaseInfo",
    "ChangeRefused",
    "GateResult",
    "Materialized",
    "Verification",
    "changed_lines",
    "collection_tricks",
    "compare_test_file",
    "diff_paths",
    "gate_change",
    "gate_diff_limits",
    "gate_secrets",
    "inventory_of_tests",
    "is_pytest_command",
    "is_test_file",
    "judge_runs",
    "judge_tests_intact",
    "matches_any",
    "materialize",
    "mode_problems",
    "parse_report",
    "tautology",
    "verify_change",
    "weakened_tests",
]
