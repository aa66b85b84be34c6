"""Run as a script against the live server's database: seeds the demo the browser tests drive,
and records steps while a page is open (the test process never touches that database itself)."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from decimal import Decimal

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.utils import timezone  # noqa: E402

from agentops.agents.models import Agent, Policy, ToolGrant, Trigger  # noqa: E402
from agentops.approvals.services import approval_request  # noqa: E402
from agentops.forges.models import PullRequest  # noqa: E402
from agentops.llm.prices import DEFAULT_MODEL  # noqa: E402
from agentops.runs.models import Run, RunStatus, StepKind  # noqa: E402
from agentops.runs.services import run_create  # noqa: E402
from agentops.runs.steps import step_record  # noqa: E402
from agentops.triggers.ingest import normalize_event, store_events  # noqa: E402
from agentops.triggers.models import ErrorGroup, ErrorProject  # noqa: E402
from dashboard.roles import ensure_roles  # noqa: E402

PASSWORD = "correct horse battery"


def seed() -> dict:
    groups = ensure_roles()
    for name, group in [("alice", "admin"), ("bob", "approver"), ("carol", "viewer")]:
        user = User.objects.create_user(name, f"{name}@example.com", PASSWORD)
        user.groups.add(groups[group])
    agent = Agent.objects.create(
        name="Debugger", slug="debugger", objective="Fix production errors and prove the fix with the repo's tests.", model=DEFAULT_MODEL
    )
    Policy.objects.create(agent=agent, daily_max_runs=50, daily_max_cost_usd=Decimal("20"), alarm_cost_usd=Decimal("2"))
    ToolGrant.objects.create(agent=agent, tool="http_get", scope={"domains": ["docs.python.org"]})
    ToolGrant.objects.create(agent=agent, tool="send_email", scope={"recipient_domains": ["example.com"]}, approval="always")
    Trigger.objects.create(agent=agent, name="checkout errors", kind="error", rules={"project": "checkout", "min_level": "error"})
    triage = Agent.objects.create(name="Triage", slug="triage", objective="Label incoming issues.", model="claude-haiku-4-5")
    Policy.objects.create(agent=triage)
    ToolGrant.objects.create(agent=triage, tool="http_get", scope={})

    # History for the spend chart and the budget suggestion.
    now = timezone.now()
    for days_ago, cost, who in [
        (6, "0.42", agent),
        (5, "0.38", agent),
        (4, "0.55", triage),
        (3, "0.61", agent),
        (2, "0.12", triage),
        (1, "0.47", agent),
        (1, "0.20", triage),
    ]:
        run = run_create(agent=who, input="past incident", actor="system", enqueue=False)
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.SUCCEEDED,
            cost_usd=Decimal(cost),
            input_tokens=int(Decimal(cost) * 100000),
            output_tokens=2000,
            created_at=now - timedelta(days=days_ago),
            finished_at=now - timedelta(days=days_ago),
        )

    live = run_create(
        agent=agent, input="TypeError: unsupported operand type(s) for +: 'int' and 'NoneType' in checkout/cart.py:42", actor="system", enqueue=False
    )
    step_record(
        run=live,
        kind=StepKind.MODEL_CALL,
        payload={"text": "The stack trace points at cart.total(); I will read checkout/cart.py."},
        model_id="claude-sonnet-4-5",
        input_tokens=2400,
        output_tokens=120,
        cost_usd=Decimal("0.0090"),
        latency_ms=1800,
    )
    step_record(run=live, kind=StepKind.TOOL_CALL, payload={"tool": "read_file", "arguments": {"path": "checkout/cart.py"}})
    step_record(
        run=live,
        kind=StepKind.OBSERVATION,
        payload={"tool": "read_file", "output": "def total(items):\n    return sum(i.price for i in items) + shipping(items)\n"},
    )
    # No worker holds it (the lease ran out), so the kill switch halts it directly.
    Run.objects.filter(pk=live.pk).update(
        status=RunStatus.RUNNING,
        lease_owner="gone",
        lease_expires_at=now - timedelta(minutes=1),
        started_at=now,
        input_tokens=2400,
        output_tokens=120,
        cost_usd=Decimal("0.009"),
        tool_calls=1,
        iterations=1,
        active_seconds=12,
    )

    waiting = run_create(agent=agent, input="Notify the on-call about the checkout fix", actor="system", enqueue=False)
    step_record(
        run=waiting,
        kind=StepKind.MODEL_CALL,
        payload={"text": "The fix is merged; I should tell the on-call and the customer."},
        model_id="claude-sonnet-4-5",
        input_tokens=1800,
        output_tokens=90,
        cost_usd=Decimal("0.006"),
    )
    Run.objects.filter(pk=waiting.pk).update(status=RunStatus.RUNNING)
    approvals = []
    for call, to, subject in [("toolu_1", "oncall@example.com", "Checkout fix deployed"), ("toolu_2", "customer@example.com", "We fixed your checkout bug")]:
        approvals.append(
            approval_request(
                run=waiting,
                step_id=None,
                tool_call_id=call,
                tool="send_email",
                arguments={"to": [to], "subject": subject, "body": "The TypeError in cart.total() is fixed by treating missing shipping as 0."},
                risk_class="irreversible",
                reason=f"Tell {to.split('@')[0]} the fix is live.",
                why_needed="irreversible tool: always ask",
                timeout_s=3600,
            ).pk
        )
    Run.objects.filter(pk=waiting.pk).update(status=RunStatus.WAITING_APPROVAL)

    # An error the agent took on, and the draft pull request its run opened (a row only: the pages
    # render without the git repository).
    project = ErrorProject.objects.create(name="Checkout", slug="checkout")
    event = {
        "level": "error",
        "platform": "python",
        "environment": "production",
        "tags": {"service": "checkout"},
        "exception": {
            "values": [
                {
                    "type": "TypeError",
                    "value": "unsupported operand type(s) for +: 'int' and 'NoneType'",
                    "stacktrace": {
                        "frames": [
                            {"filename": "checkout/views.py", "function": "pay", "lineno": 12, "in_app": True},
                            {
                                "filename": "checkout/cart.py",
                                "function": "total",
                                "lineno": 42,
                                "in_app": True,
                                "context_line": "return sum(i.price for i in items) + shipping(items)",
                            },
                        ]
                    },
                }
            ]
        },
    }
    group = store_events(project=project, events=[normalize_event(dict(event)) for _ in range(3)], source="sentry")[-1].group
    fixed = run_create(agent=agent, input="TypeError in checkout/cart.py:42", actor="system", enqueue=False)
    step_record(run=fixed, kind=StepKind.GATE, payload={"gate": "tests", "passed": True, "detail": "14 passed in 0.8s"})
    step_record(run=fixed, kind=StepKind.GATE, payload={"gate": "secrets", "passed": True, "detail": "no secrets in the diff"})
    Run.objects.filter(pk=fixed.pk).update(status=RunStatus.SUCCEEDED, fingerprint=group.run_fingerprint, finished_at=now)
    ErrorGroup.objects.filter(pk=group.pk).update(last_run=fixed)
    diff = "--- a/checkout/cart.py\n+++ b/checkout/cart.py\n@@ -41,2 +41,2 @@\n def total(items):\n-    return sum(i.price for i in items) + shipping(items)\n+    return sum(i.price for i in items) + (shipping(items) or 0)\n"
    pr = PullRequest.objects.create(
        repo="checkout-service",
        number=1,
        title="Treat missing shipping as 0 in cart.total()",
        branch="agentops/fix-cart-total",
        base="main",
        body="Root cause: shipping() returns None for digital goods.\n\nTest: tests/test_cart.py::test_digital_goods",
        diff=diff,
        changed_lines=2,
        draft=True,
        run=fixed,
        author_label="agent:debugger",
    )
    return {"live_run": live.pk, "waiting_run": waiting.pk, "approvals": approvals, "password": PASSWORD, "pull_request": pr.pk, "error_group": group.pk}


def steps(run_id: int, count: int, delay: float) -> dict:
    seqs = []
    for i in range(count):
        time.sleep(delay)
        step = step_record(
            run=run_id,
            kind=StepKind.MODEL_CALL if i % 2 == 0 else StepKind.TOOL_CALL,
            payload={"text": f"live step {i}: adding a None guard"} if i % 2 == 0 else {"tool": "run_tests", "arguments": {"command": "pytest -q"}},
            model_id="claude-sonnet-4-5",
            input_tokens=500,
            output_tokens=40,
        )
        seqs.append(step.seq)
    return {"seqs": seqs}


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "seed":
        print(json.dumps(seed()))
    elif command == "trace":  # the review room's realistic run and its pull request (issue 12)
        from trace_seed import seed_pull_request, seed_trace

        traced = seed_trace(Agent.objects.get(slug="debugger"))
        print(json.dumps({"run": traced.pk, "pull_request": seed_pull_request(traced).pk}))
    elif command == "expand":  # a pull request on a real forge repo, for "expand context"
        from expand_seed import seed_expand_pull_request

        print(json.dumps({"pull_request": seed_expand_pull_request(Agent.objects.get(slug="debugger"))}))
    elif command == "steps":
        print(json.dumps(steps(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))))
    else:
        raise SystemExit(f"unknown command {command}")
