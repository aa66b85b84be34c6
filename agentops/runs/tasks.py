"""django-q2 task entry points. Each is a thin call into a domain function."""

from __future__ import annotations

import logging
import random
import threading
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.utils import timezone

from agentops.approvals.services import approvals_expire
from agentops.guardrails.drills import drill_execute
from agentops.guardrails.models import Drill
from agentops.guardrails.stop_state import kill_switch_engaged
from agentops.runs import controller
from agentops.runs.models import ACTIVE_STATUSES, Run, RunStatus
from agentops.runs.services import halt_runs, runs_reconcile
from agentops.sandbox.reaper import reap_sandboxes
from agentops.triggers.schedules import fire_due_schedules

log = logging.getLogger(__name__)

# A worker that cannot reach the database retries the claim this long before giving the job up; the
# run stays queued either way and the reconciler gives it a new job once the database is back.
CLAIM_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


def execute_run(run_id: int) -> str:
    for delay in (*CLAIM_RETRY_DELAYS_S, None):
        try:
            return controller.execute_run(run_id)
        except (OperationalError, InterfaceError):
            # Never let a database outage consume the job and drop the run: the run row was not
            # moved (a claim is one UPDATE), or its lease will run out and the reaper hands it over.
            log.warning("run %s: database unavailable", run_id, exc_info=True)
            # A broken connection must not be reused by the next attempt.
            for conn in connections.all(initialized_only=True):
                if not conn.is_usable():
                    conn.close()
            if delay is None:
                break
            time.sleep(delay)
    return "database-unavailable"


def execute_drill(drill_id: int) -> str:
    drill = Drill.objects.select_related("started_by").filter(pk=drill_id).first()
    if drill is None:
        return "no-such-drill"
    return drill_execute(drill, actor=drill.started_by or "system").status


def reap() -> dict[str, int]:
    """Every reaper period (and at worker start): give a job to runs without a live one (queued runs
    whose job was lost, runs of dead workers), expire approvals, remove sandboxes of finished runs,
    fire due schedules."""
    counts = {"requeued": 0, "redispatched": 0, "expired_approvals": approvals_expire(), "sandboxes_removed": 0, "schedules_fired": 0}
    if kill_switch_engaged():
        halt_runs(status=RunStatus.KILLED, reason="kill switch engaged")
    counts.update(runs_reconcile(grace_s=settings.AGENTOPS_DISPATCH_GRACE_S))
    try:
        active = {str(pk) for pk in Run.objects.filter(status__in=ACTIVE_STATUSES).values_list("pk", flat=True)}
        # Young sandboxes are left alone: their run may be starting or finishing right now.
        counts["sandboxes_removed"] = reap_sandboxes(lambda run_id: run_id.split("-")[0] in active, min_age_s=300)
    except Exception:
        log.warning("sandbox reaping failed", exc_info=True)
    # Not guarded: a schedule that cannot fire is a failed pass, logged by the caller, never a
    # silent one (an ImportError swallowed here once stopped every schedule without a word).
    counts["schedules_fired"] = len(fire_due_schedules(timezone.now()))
    return counts


class ReaperLoop(threading.Thread):
    """The reaper inside every django-q2 worker process: a pass at start, then one every
    AGENTOPS_REAPER_S. It needs no broker to run (the broker-driven schedule cannot fire while the
    broker is down, and only minute by minute), and every action of a pass is a conditional UPDATE
    or an idempotent enqueue, so passes of several workers at once are harmless."""

    def __init__(self, period_s: float) -> None:
        super().__init__(daemon=True, name="agentops-reaper")
        self.period_s = period_s
        self.stopped = threading.Event()

    def run(self) -> None:
        # Spread the passes of the workers of a cluster over the period.
        wait = random.uniform(0, min(1.0, self.period_s / 4))
        while not self.stopped.wait(wait):
            try:
                counts = reap()
                if counts.get("requeued") or counts.get("redispatched"):
                    log.warning("reaper: %s", counts)
            except Exception:
                # The database or the broker is down: the next pass retries.
                log.warning("reaper pass failed", exc_info=True)
            finally:
                connections.close_all()
            wait = self.period_s * random.uniform(0.9, 1.1)


_reaper: ReaperLoop | None = None
_reaper_lock = threading.Lock()


def start_reaper(**_: object) -> None:
    """django-q2's post_spawn: each new worker process gets its reaper (a worker that died and was
    respawned gets a new one)."""
    global _reaper
    if not settings.AGENTOPS_REAPER_S:
        return
    with _reaper_lock:
        if _reaper is not None and _reaper.is_alive():
            return
        _reaper = ReaperLoop(settings.AGENTOPS_REAPER_S)
        _reaper.start()
