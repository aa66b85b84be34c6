"""A realistic debugging run for the review room's pages (issue 12): model turns with their tool
calls, a file write, a failing then passing test run, gates with evidence, a guardrail, the pull
request it opened, and its outcome. Imported by browser_seed.py (`trace` command) and the tests."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from agentops.runs.models import Run, RunStatus, Step, StepKind
from agentops.runs.steps import step_record

CART_BEFORE = '''def total(items):
    """The order total: item prices plus shipping."""
    return sum(i.price for i in items) + shipping(items)
'''
CART_AFTER = '''def total(items):
    """The order total: item prices plus shipping (none for digital goods)."""
    return sum(i.price for i in items) + (shipping(items) or 0)
'''
FAILING = """FAILED: pytest -q
============================= test session starts ==============================
collected 14 items

tests/test_cart.py ........F.....                                         [100%]

=================================== FAILURES ===================================
__________________________ test_digital_goods_total ___________________________

    def test_digital_goods_total():
>       assert total([Item(price=5, digital=True)]) == 5
E       TypeError: unsupported operand type(s) for +: 'int' and 'NoneType'

checkout/cart.py:3: TypeError
=========================== short test summary info ============================
FAILED tests/test_cart.py::test_digital_goods_total - TypeError: unsupported operand type(s) for +: 'int' and 'NoneType'
========================= 1 failed, 13 passed in 0.84s =========================
exit code 1"""
PASSING = "PASSED: pytest -q\n..............                                         [100%]\n14 passed in 0.79s\nexit code 0"
DIFF = (
    "diff --git a/checkout/cart.py b/checkout/cart.py\nindex 3b18e51..9c2d7a4 100644\n--- a/checkout/cart.py\n+++ b/checkout/cart.py\n"
    '@@ -1,3 +1,3 @@\n def total(items):\n-    """The order total: item prices plus shipping."""\n-    return sum(i.price for i in items) + shipping(items)\n'
    '+    """The order total: item prices plus shipping (none for digital goods)."""\n+    return sum(i.price for i in items) + (shipping(items) or 0)\n'
    "diff --git a/tests/test_cart.py b/tests/test_cart.py\nindex 1111111..2222222 100644\n--- a/tests/test_cart.py\n+++ b/tests/test_cart.py\n"
    "@@ -20,3 +20,7 @@ def test_physical_goods_total():\n     assert total([Item(price=5)]) == 9\n \n \n+def test_digital_goods_total():\n+    # shipping() returns None for digital goods\n+    assert total([Item(price=5, digital=True)]) == 5\n+\n"
)


def seed_trace(agent: Any, *, fingerprint: str | None = None) -> Run:
    from agentops.runs.services import run_create

    run = run_create(
        agent=agent, input="TypeError: unsupported operand type(s) for +: 'int' and 'NoneType' in checkout/cart.py:3", actor="system", enqueue=False
    )
    start = timezone.now() - timedelta(seconds=95)
    clock = [start]
    seqs: list[tuple[int, float]] = []

    def at(seconds: float) -> None:
        clock[0] += timedelta(seconds=seconds)

    def turn(text: str, calls: list[dict], *, latency: int, tokens_in: int, tokens_out: int, cost: str) -> None:
        at(latency / 1000)
        step = step_record(
            run=run,
            kind=StepKind.MODEL_CALL,
            payload={"text": text, "tool_calls": calls},
            model_id="claude-sonnet-4-5",
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd=Decimal(cost),
            latency_ms=latency,
        )
        Step.objects.filter(pk=step.pk).update(created_at=clock[0])

    def tool(call_id: str, name: str, arguments: dict, output: str, *, seconds: float, is_error: bool = False, flush: bool = True) -> None:
        if flush:
            at(0.05)
            s = step_record(run=run, kind=StepKind.TOOL_CALL, payload={"tool": name, "tool_call_id": call_id, "arguments": arguments, "risk_class": "write"})
            Step.objects.filter(pk=s.pk).update(created_at=clock[0])
            at(seconds)
        else:
            at(seconds)
            s = step_record(run=run, kind=StepKind.TOOL_CALL, payload={"tool": name, "tool_call_id": call_id, "arguments": arguments, "risk_class": "read"})
            Step.objects.filter(pk=s.pk).update(created_at=clock[0])
        o = step_record(run=run, kind=StepKind.OBSERVATION, payload={"tool": name, "tool_call_id": call_id, "output": output, "is_error": is_error})
        Step.objects.filter(pk=o.pk).update(created_at=clock[0])

    turn(
        "The stack trace points at cart.total(): shipping() can return None. I will read checkout/cart.py and its tests.",
        [{"id": "t1", "name": "repo_read_file"}, {"id": "t2", "name": "repo_read_file"}],
        latency=2100,
        tokens_in=3200,
        tokens_out=140,
        cost="0.0117",
    )
    tool("t1", "repo_read_file", {"path": "checkout/cart.py"}, CART_BEFORE, seconds=0.12, flush=False)
    tool("t2", "repo_read_file", {"path": "tests/test_cart.py"}, "from checkout.cart import total\n\n" * 3, seconds=0.09, flush=False)
    turn(
        "First a failing test that reproduces the error for digital goods.",
        [{"id": "t3", "name": "write_file"}, {"id": "t4", "name": "run_tests"}],
        latency=3400,
        tokens_in=4100,
        tokens_out=380,
        cost="0.0180",
    )
    tool(
        "t3",
        "write_file",
        {
            "path": "tests/test_cart.py",
            "content": "def test_digital_goods_total():\n    # shipping() returns None for digital goods\n    assert total([Item(price=5, digital=True)]) == 5\n",
        },
        "wrote tests/test_cart.py (3 lines)",
        seconds=0.2,
    )
    tool("t4", "run_tests", {"paths": ["tests/test_cart.py"]}, FAILING, seconds=6.4, is_error=True)
    turn(
        "The test fails as the production error did. Treat a missing shipping cost as 0.",
        [{"id": "t5", "name": "apply_patch"}, {"id": "t6", "name": "run_tests"}],
        latency=2900,
        tokens_in=5200,
        tokens_out=260,
        cost="0.0195",
    )
    tool("t5", "apply_patch", {"patch": DIFF.split("diff --git a/tests")[0]}, "patched checkout/cart.py", seconds=0.3)
    tool("t6", "run_tests", {}, PASSING, seconds=7.1)
    at(0.2)
    g = step_record(
        run=run,
        kind=StepKind.GUARDRAIL,
        payload={"guard": "scope", "tool": "run_command", "tool_call_id": "t7", "reason": "command not allowed by this grant (allowed prefixes: ['pytest'])"},
    )
    Step.objects.filter(pk=g.pk).update(created_at=clock[0])
    for name, passed, detail, evidence in [
        (
            "change",
            True,
            "2 file(s) as published (0 added, 2 changed, 0 deleted), tree 9c2d7a4e1b2f on base 3b18e5101aa2; regular files only",
            {"paths": ["checkout/cart.py", "tests/test_cart.py"], "tree": "9c2d7a4e1b2f", "base": "3b18e5101aa2"},
        ),
        ("tests", True, "14 passed in a fresh sandbox (0.81s)", {"passed": 14, "failed": 0, "command": "pytest -q"}),
        ("no_weakened_tests", True, "no existing test deleted or weakened", {}),
        ("secrets", True, "no secrets in the diff", {}),
    ]:
        at(1.5)
        s = step_record(run=run, kind=StepKind.GATE, payload={"gate": name, "passed": passed, "detail": detail, **({"evidence": evidence} if evidence else {})})
        Step.objects.filter(pk=s.pk).update(created_at=clock[0])
    turn(
        "The fix passes every gate. Opening a pull request for review.",
        [{"id": "t8", "name": "open_pull_request"}],
        latency=2600,
        tokens_in=6100,
        tokens_out=420,
        cost="0.0246",
    )
    tool("t8", "open_pull_request", {"title": "Treat missing shipping as 0 in cart.total()", "base": "main"}, "opened pull request #2", seconds=0.6)
    at(0.3)
    s = step_record(run=run, kind=StepKind.STATUS, payload={"status": "succeeded", "reason": "the agent finished", "outcome": "pr_opened"})
    Step.objects.filter(pk=s.pk).update(created_at=clock[0])
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED,
        outcome="pr_opened",
        outcome_detail="opened pull request #2",
        status_reason="the agent finished",
        started_at=start,
        finished_at=clock[0],
        created_at=start,
        active_seconds=(clock[0] - start).total_seconds(),
        fingerprint=fingerprint,
        input_tokens=18600,
        output_tokens=1200,
        cost_usd=Decimal("0.0738"),
        model_calls=4,
        tool_calls=8,
        iterations=4,
        result={"pull_request": {"number": 2, "title": "Treat missing shipping as 0 in cart.total()", "branch": "agentops/fix-cart-total-2"}},
    )
    run.refresh_from_db()
    return run


def seed_pull_request(run: Run) -> Any:
    from agentops.forges.models import PullRequest

    body = (
        "## Root cause\n\n`shipping()` returns `None` for **digital goods**, and `total()` added it to an int.\n\n"
        "## Fix\n\n- treat a missing shipping cost as `0`\n- a regression test, `tests/test_cart.py::test_digital_goods_total`\n\n"
        "| gate | result |\n|---|---|\n| tests | 14 passed |\n| secrets | none |\n\n<script>alert('not run')</script>"
    )
    return PullRequest.objects.create(
        repo="checkout-service",
        number=2,
        title="Treat missing shipping as 0 in cart.total()",
        branch="agentops/fix-cart-total-2",
        base="main",
        body=body,
        diff=DIFF,
        changed_lines=6,
        draft=False,
        run=run,
        author_label="agent:debugger",
    )
