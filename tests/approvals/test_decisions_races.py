"""Races on PostgreSQL, with real threads and connections: two deciders, a decision against the expiry
sweep, a decision against the kill switch. Exactly one outcome is recorded, once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from agentops.approvals.models import Approval, DecisionKind
from agentops.approvals.services import AlreadyDecided, approval_decide, approvals_expire
from agentops.audit.models import AuditEvent
from agentops.guardrails.killswitch import kill_switch_engage, kill_switch_release
from agentops.runs.models import Run, Step, StepKind
from tests.approvals.decision_support import ask, mailer, person, waiting_run  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def race(*actions: Callable[[], str]) -> list[str]:
    """Run the actions at the same moment, each in its own thread and database connection."""
    barrier = threading.Barrier(len(actions))
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(action: Callable[[], str]) -> None:
        try:
            barrier.wait()
            outcome = action()
        except AlreadyDecided:
            outcome = "lost"
        except Exception as exc:  # a crash is an outcome the test must see, not a silent thread
            outcome = f"error: {exc!r}"
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def decide(approval_id: int, actor: Any, approve: bool, **kw: Any) -> Callable[[], str]:
    def action() -> str:
        approval_decide(approval=Approval.objects.get(pk=approval_id), actor=actor, approve=approve, **kw)
        return "approved" if approve else "rejected"

    return action


def decision_records(approval: Approval) -> tuple[int, int]:
    """(decision steps, audit entries) recorded for this decision."""
    payloads: list[dict[str, Any]] = list(Step.objects.filter(run=approval.run, kind=StepKind.APPROVAL_DECISION).values_list("payload", flat=True))
    steps = len([p for p in payloads if p["approval_id"] == approval.pk])
    audits = AuditEvent.objects.filter(target_type="approval", target_id=str(approval.pk)).count()
    return steps, audits


@pytest.mark.parametrize("kind", [DecisionKind.APPROVAL, DecisionKind.BUDGET_EXTENSION, DecisionKind.QUESTION, DecisionKind.LOOP_ESCALATION])
def test_two_deciders_at_once_exactly_one_wins(mailer: Any, kind: str) -> None:
    approval = ask(waiting_run(mailer), kind)
    ada, bob = person("ada"), person("bob")
    answers = {"question": ("staging", "production"), "loop_escalation": ("continue", None)}.get(kind, (None, None))
    outcomes = race(
        *(decide(approval.pk, ada, True, answer=answers[0]) for _ in range(3)),
        *(decide(approval.pk, bob, kind == "question", answer=answers[1], comment="no") for _ in range(3)),
    )
    assert sorted(o for o in outcomes if o != "lost") in (["approved"], ["rejected"]) and outcomes.count("lost") == 5, outcomes
    approval.refresh_from_db()
    assert approval.status in ("approved", "rejected") and decision_records(approval) == (1, 1)
    assert Run.objects.filter(approvals=approval, status="queued").exists()


def test_a_decision_racing_the_expiry_sweep_is_one_or_the_other(mailer: Any) -> None:
    ada = person("ada")
    for i in range(6):
        approval = ask(waiting_run(mailer), DecisionKind.BUDGET_EXTENSION, n=i)
        deadline = timezone.now() + timedelta(milliseconds=30)
        Approval.objects.filter(pk=approval.pk).update(expires_at=deadline)

        def sweep(deadline: Any = deadline) -> str:
            time.sleep(max(0.0, (deadline - timezone.now()).total_seconds()))
            return "expired" if approvals_expire() else "nothing to expire"

        def late_click(deadline: Any = deadline, approval_id: int = approval.pk) -> str:
            time.sleep(max(0.0, (deadline - timezone.now()).total_seconds() - 0.001))
            return decide(approval_id, ada, True)()

        outcomes = race(late_click, sweep)
        approval.refresh_from_db()
        assert not [o for o in outcomes if o.startswith("error")], outcomes
        assert approval.status in ("approved", "expired") and decision_records(approval) == (1, 1), outcomes
        assert ("approved" in outcomes) == (approval.status == "approved")


def test_a_decision_racing_the_kill_switch_never_lets_the_run_go_on(mailer: Any) -> None:
    ada = person("ada")
    for i in range(4):
        run = waiting_run(mailer)
        approval = ask(run, DecisionKind.LOOP_ESCALATION, n=i)

        def engage(n: int = i) -> str:
            kill_switch_engage(actor="cli:root", reason=f"runaway {n}")
            return "killed"

        outcomes = race(decide(approval.pk, ada, True), engage)
        approval.refresh_from_db()
        assert not [o for o in outcomes if o.startswith("error")], outcomes
        # Whichever won the decision, the run is killed, never queued to go on.
        assert Run.objects.filter(pk=run.pk, status="killed").exists()
        assert approval.status in ("approved", "rejected") and decision_records(approval)[0] <= 1
        assert ("approved" in outcomes) == (approval.status == "approved")
        kill_switch_release(actor="cli:root", reason="next round")
