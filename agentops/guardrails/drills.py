"""Kill-switch drills: rehearse the real switch on synthetic runs and record how long it took.

A drill engages the real global switch (rehearsing anything less proves nothing), so it refuses to
start while the switch is already engaged, and it releases the switch when it is done.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.utils import timezone

from agentops.agents.models import Agent, Policy, ToolGrant
from agentops.audit.services import audit_record
from agentops.guardrails.killswitch import kill_switch_engage, kill_switch_engaged, kill_switch_release
from agentops.guardrails.models import Drill, DrillStatus
from agentops.runs.models import FINAL_STATUSES, Run, RunStatus, Step, StepKind

DRILL_AGENT_SLUG = "kill-switch-drill"
HALT_TARGET_MS = 1000
HALT_LIMIT_S = 10.0


class DrillRefused(Exception):
    pass


def drill_agent() -> Agent:
    from agentops.llm.prices import DEFAULT_MODEL

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
    from agentops.runs.controller import execute_run

    try:
        execute_run(run_id)
    finally:
        connection.close()


def drill_run(*, actor: AbstractBaseUser | str | None, synthetic_runs: int = 5) -> Drill:
    from agentops.runs.services import run_create

    if kill_switch_engaged():
        raise DrillRefused("the kill switch is already engaged; release it before a drill")
    synthetic_runs = max(1, min(int(synthetic_runs), 20))
    agent = drill_agent()
    if agent.paused:
        raise DrillRefused("the drill agent is paused")
    drill = Drill.objects.create(started_by=actor if isinstance(actor, AbstractBaseUser) else None, synthetic_runs=synthetic_runs)
    audit_record(actor=actor, action="drill.start", target=drill, detail=f"{synthetic_runs} synthetic runs")
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
