"""Kill-switch drills: rehearse the real switch on synthetic runs and record how long it took.

A drill engages the real global switch (rehearsing anything less proves nothing), so it refuses to
start while the switch is already engaged, and it releases the switch when it is done.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import django_q.tasks
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from agentops.agents.models import Agent, Policy, ToolGrant
from agentops.audit.services import audit_record
from agentops.guardrails.killswitch import kill_switch_engage, kill_switch_release, person_of
from agentops.guardrails.models import Drill, DrillStatus
from agentops.guardrails.stop_state import kill_switch_engaged
from agentops.llm.prices import DEFAULT_MODEL
from agentops.runs.controller import execute_run
from agentops.runs.models import FINAL_STATUSES, Run, RunStatus, Step, StepKind
from agentops.runs.services import run_create

log = logging.getLogger(__name__)

DRILL_AGENT_SLUG = "kill-switch-drill"
HALT_TARGET_MS = 1000
HALT_LIMIT_S = 10.0


class DrillRefused(Exception):
    pass


def drill_agent() -> Agent:
    agent, _ = Agent.objects.get_or_create(
        slug=DRILL_AGENT_SLUG,
        defaults={
            "name": "Kill-switch drill (synthetic)",
            "objective": "Synthetic agent used only by kill-switch drills.",
            "model": DEFAULT_MODEL,
            "config": {"planner": "scripted", "script": str(Path(__file__).with_name("drill_script.yaml"))},
        },
    )
    Policy.objects.get_or_create(agent=agent, defaults={"max_wall_clock_s": 600})
    ToolGrant.objects.get_or_create(agent=agent, tool="wait", defaults={"scope": {}})
    return agent


def _work(run_id: int) -> None:
    try:
        execute_run(run_id)
    finally:
        connection.close()


# A drill still "running" after this long lost its worker: it no longer blocks a new one.
DRILL_STALE_S = 600


def _refusal(*, exclude_pk: int | None = None) -> str | None:
    if kill_switch_engaged():
        return "the kill switch is already engaged; release it before a drill"
    if drill_agent().paused:
        return "the drill agent is paused"
    running = Drill.objects.filter(status=DrillStatus.RUNNING, started_at__gt=timezone.now() - timedelta(seconds=DRILL_STALE_S))
    if exclude_pk is not None:
        running = running.exclude(pk=exclude_pk)
    if running.exists():
        return "another drill is running; wait for its result"
    return None


def drill_start(*, actor: AbstractBaseUser | str | None, synthetic_runs: int = 5, enqueue: bool = True) -> Drill:
    """Record a drill and, with ``enqueue``, hand it to a worker once this transaction commits: a drill
    runs controller threads for up to ~45 s, which must not hold a web server thread."""
    problem = _refusal()
    if problem:
        raise DrillRefused(problem)
    synthetic_runs = max(1, min(int(synthetic_runs), 20))
    drill = Drill.objects.create(started_by=person_of(actor), synthetic_runs=synthetic_runs)
    audit_record(actor=actor, action="drill.start", target=drill, detail=f"{synthetic_runs} synthetic runs")
    if enqueue:
        drill_id = drill.pk
        transaction.on_commit(lambda: _enqueue(drill_id))
    return drill


def _enqueue(drill_id: int) -> None:
    try:
        # Looked up on its module at each call: the tests stand a broker in at this boundary.
        django_q.tasks.async_task("agentops.runs.tasks.execute_drill", drill_id, task_name=f"drill-{drill_id}", group="drills")
    except Exception as exc:
        # The broker is down: say so on the drill rather than leave it "running" with no worker.
        log.warning("drill %s: the task broker refused the job", drill_id, exc_info=True)
        Drill.objects.filter(pk=drill_id, status=DrillStatus.RUNNING).update(
            status=DrillStatus.FAILED, finished_at=timezone.now(), details={"error": f"the task broker refused the drill: {type(exc).__name__}"}
        )


def drill_run(*, actor: AbstractBaseUser | str | None, synthetic_runs: int = 5) -> Drill:
    """A drill run inline, in this process (the CLI's ``drill --wait``, tests)."""
    drill = drill_start(actor=actor, synthetic_runs=synthetic_runs, enqueue=False)
    return drill_execute(drill, actor=actor)


def drill_execute(drill: Drill, *, actor: AbstractBaseUser | str | None) -> Drill:
    """Rehearse the switch for a recorded drill and record what it measured (on a worker, or inline)."""
    # One conditional UPDATE claims the drill: a duplicate or retried job finds it taken and leaves it alone.
    claimed = Drill.objects.filter(pk=drill.pk, status=DrillStatus.RUNNING, details={}).update(details={"claimed_at": timezone.now().isoformat()})
    if not claimed:
        drill.refresh_from_db()
        return drill
    # Checked again: the switch or another drill may have started while this one waited for a worker.
    problem = _refusal(exclude_pk=drill.pk)
    if problem:
        drill.status = DrillStatus.FAILED
        drill.finished_at = timezone.now()
        drill.details = {"error": f"refused when the worker took it: {problem}"}
        drill.save(update_fields=["status", "finished_at", "details"])
        audit_record(actor=actor, action="drill.failed", target=drill, detail=problem)
        return drill
    synthetic_runs = drill.synthetic_runs
    agent = drill_agent()
    runs = [run_create(agent=agent, input=f"kill-switch drill {drill.pk}", actor=actor, enqueue=False) for _ in range(synthetic_runs)]
    run_ids = [r.pk for r in runs]
    threads = [threading.Thread(target=_work, args=(pk,), daemon=True) for pk in run_ids]
    for thread in threads:
        thread.start()
    details: dict[str, Any] = {"run_ids": run_ids}
    # Wait until every synthetic run is inside its slow tool call.
    deadline = time.monotonic() + 30
    while Step.objects.filter(run_id__in=run_ids, kind=StepKind.TOOL_CALL).count() < synthetic_runs:
        if time.monotonic() > deadline:
            details["error"] = "synthetic runs did not reach their tool call in 30 s"
            break
        time.sleep(0.02)
    engaged_at = time.monotonic()
    state = kill_switch_engage(actor=actor, reason=f"drill {drill.pk}")
    halted_at = None
    while time.monotonic() - engaged_at < HALT_LIMIT_S:
        if Run.objects.filter(pk__in=run_ids, status__in=FINAL_STATUSES).count() == synthetic_runs:
            halted_at = time.monotonic()
            break
        time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=5)
    kill_switch_release(actor=actor, reason=f"drill {drill.pk} finished")
    after = Step.objects.filter(run_id__in=run_ids, kind__in=[StepKind.TOOL_CALL, StepKind.MODEL_CALL], created_at__gt=state.engaged_at).count()
    statuses = list(Run.objects.filter(pk__in=run_ids).values_list("status", flat=True))
    drill.finished_at = timezone.now()
    drill.time_to_halt_ms = int((halted_at - engaged_at) * 1000) if halted_at else None
    drill.actions_after_engage = after
    details["statuses"] = statuses
    details["target_ms"] = HALT_TARGET_MS
    drill.details = details
    passed = (
        halted_at is not None
        and after == 0
        and all(s == RunStatus.KILLED for s in statuses)
        and drill.time_to_halt_ms is not None
        and drill.time_to_halt_ms <= HALT_TARGET_MS
        and "error" not in details
    )
    drill.status = DrillStatus.PASSED if passed else DrillStatus.FAILED
    drill.save()
    audit_record(actor=actor, action=f"drill.{drill.status}", target=drill, after={"time_to_halt_ms": drill.time_to_halt_ms, "actions_after_engage": after})
    return drill
