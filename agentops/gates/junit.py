""" "Tests pass", proven from pytest's JUnit XML report rather than from an exit code."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


def is_pytest_command(command: str) -> bool:
    """Whether the configured test command runs pytest (then its report can be demanded)."""
    try:
        words = shlex.split(command, posix=True)
    except ValueError:
        words = command.split()
    for word in words:
        base = word.rsplit("/", 1)[-1]
        if base in ("pytest", "py.test") or re.fullmatch(r"pytest-?3?(\.\d+)?", base):
            return True
    return any(a == "-m" and b == "pytest" for a, b in zip(words, words[1:], strict=False))


@dataclass
class Report:
    outcomes: dict[str, str] = field(default_factory=dict)  # test id -> passed / failed / skipped
    error: str = ""  # why the report cannot be read (then it proves nothing)

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)

    def counts(self) -> dict[str, int]:
        return {o: self.count(o) for o in (PASSED, FAILED, SKIPPED)}

    def summary(self) -> str:
        c = self.counts()
        return f"{len(self.outcomes)} test(s): {c[PASSED]} passed, {c[FAILED]} failed or errored, {c[SKIPPED]} skipped"


def parse_report(xml: str) -> Report:
    if not xml.strip():
        return Report(error="pytest wrote no report (the run ended before pytest finished: an exit during import or collection?)")
    try:
        root = ElementTree.fromstring(xml)
    except (ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
        return Report(error=f"the JUnit report does not parse: {exc}")
    if root.tag not in ("testsuites", "testsuite"):
        return Report(error=f"the JUnit report has an unexpected root <{root.tag}>")
    report = Report()
    for case in root.iter("testcase"):
        name = case.get("name") or ""
        test_id = f"{case.get('classname') or ''}::{name}"
        children = {child.tag for child in case}
        if children & {"failure", "error"}:
            outcome = FAILED
        elif "skipped" in children:
            outcome = SKIPPED
        else:
            outcome = PASSED
        previous = report.outcomes.get(test_id)
        # A test reported twice (call failed, teardown errored) counts at its worst.
        if previous is None or previous == PASSED or (previous == SKIPPED and outcome == FAILED):
            report.outcomes[test_id] = outcome
    return report


@dataclass
class Judgement:
    passed: bool
    problems: list[str]
    evidence: dict[str, object]


def judge_runs(baseline: Report | None, after: Report, *, exit_code: int | None) -> Judgement:
    """Compare the run on the change with the run on the base commit."""
    problems: list[str] = []
    evidence: dict[str, object] = {"after": after.counts(), "exit_code": exit_code}
    if after.error:
        problems.append(after.error)
    elif not after.outcomes:
        problems.append("the run collected no test")
    if exit_code != 0:
        problems.append(f"pytest exited with code {exit_code}")
    failed = sorted(t for t, o in after.outcomes.items() if o == FAILED)
    if failed:
        problems.append(f"{len(failed)} test(s) failed: {', '.join(failed[:10])}")
    if baseline is not None and not baseline.error:
        evidence["baseline"] = baseline.counts()
        missing = sorted(t for t in baseline.outcomes if t not in after.outcomes)
        skipped_now = sorted(t for t, o in baseline.outcomes.items() if o != SKIPPED and after.outcomes.get(t) == SKIPPED)
        fixed = sorted(t for t, o in baseline.outcomes.items() if o == FAILED and after.outcomes.get(t) == PASSED)
        still_failing = sorted(t for t, o in baseline.outcomes.items() if o == FAILED and after.outcomes.get(t) != PASSED)
        evidence.update(missing=missing[:50], newly_skipped=skipped_now[:50], fixed=fixed[:50], new_tests=len(set(after.outcomes) - set(baseline.outcomes)))
        if missing and not after.error:
            problems.append(f"{len(missing)} test(s) that ran on the base did not run on the change (deselected or removed): {', '.join(missing[:10])}")
        if skipped_now:
            problems.append(f"{len(skipped_now)} test(s) that ran on the base are now skipped: {', '.join(skipped_now[:10])}")
        if still_failing and not after.error:
            problems.append(f"{len(still_failing)} test(s) failing on the base still do not pass: {', '.join(still_failing[:10])}")
    problems = list(dict.fromkeys(problems))
    return Judgement(passed=not problems, problems=problems, evidence=evidence)
