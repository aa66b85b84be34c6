"""Remove sandboxes whose run is no longer active (crashed workers, finished runs that leaked a sandbox).

Call ``reap_sandboxes(is_active)`` periodically (e.g. from the lease reaper task) with a predicate backed by
the Run table; this module itself knows nothing of the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from . import bwrap_backend, docker_backend
from .factory import bwrap_root, sandbox_scope

log = logging.getLogger(__name__)


def reap_sandboxes(is_active: Callable[[str], bool], *, min_age_s: float = 0.0, scope: str | None = None) -> int:
    """Destroy every sandbox (both backends) of this deployment's scope (``AGENTOPS_SANDBOX_SCOPE``, or ``scope``)
    whose ``run_id`` is not active and that is at least ``min_age_s`` old. ``is_active`` errors count as active
    (never destroy on a guess). Returns how many were removed."""
    scope = scope or sandbox_scope()
    removed = 0
    now = time.time()
    verdicts: dict[str, bool] = {}

    def inactive(run_id: str) -> bool:
        if run_id not in verdicts:
            try:
                verdicts[run_id] = bool(is_active(run_id))
            except Exception:
                log.exception("is_active(%r) failed; keeping its sandboxes", run_id)
                verdicts[run_id] = True
        return not verdicts[run_id]

    for root, meta in bwrap_backend.iter_roots(bwrap_root(), scope):
        run_id = str(meta.get("run_id", ""))
        if now - float(meta.get("created", 0)) < min_age_s or not inactive(run_id):
            continue
        bwrap_backend.destroy_sandbox_root(root)
        removed += 1

    try:
        containers = docker_backend.list_sandbox_containers(scope=scope)
    except Exception as e:
        log.debug("docker not reachable, skipping container reaping: %s", e)
        containers = []
    for c in containers:
        run_id = (c.get("Labels") or {}).get(docker_backend.LABEL_RUN, "")
        if now - float(c.get("Created", 0)) < min_age_s or not inactive(run_id):
            continue
        docker_backend.remove_container(c["Id"])
        removed += 1
    return removed
