"""Who owns a run right now: the worker's identity, the claim and the heartbeat that renews the lease.

A run belongs to the worker named in ``Run.lease_owner`` until ``lease_expires_at``. The heartbeat
pushes that moment forward; when a renewal matches no row, another worker has taken the run over
and this one must stop writing (every step write also names the lease, see ``runs/steps.py``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from agentops.runs import transitions
from agentops.runs.models import Run

log = logging.getLogger(__name__)

# queued -> running (or a takeover of a run whose lease ran out); the transition lives with the others.
claim_run = transitions.claim


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat(threading.Thread):
    """Renews the lease; if renewal fails the run belongs to someone else and we must stop."""

    def __init__(self, run_id: int, owner: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{run_id}")
        self.run_id = run_id
        self.owner = owner
        self.lost = threading.Event()
        # Not `_stop`: threading.Thread._stop is a method the interpreter calls on every thread after
        # a fork; shadowing it with an Event made each fork of a worker log a TypeError.
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.AGENTOPS_HEARTBEAT_S):
                now = timezone.now()
                renewed = Run.objects.filter(pk=self.run_id, lease_owner=self.owner).update(
                    heartbeat_at=now, lease_expires_at=now + timedelta(seconds=settings.AGENTOPS_LEASE_TTL_S)
                )
                if not renewed:
                    self.lost.set()
                    return
        except Exception:
            log.exception("heartbeat of run %s failed", self.run_id)
            self.lost.set()
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
