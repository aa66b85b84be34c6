"""Real worker processes for the tests that need them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FINAL = ("succeeded", "failed", "killed", "budget_exceeded", "rejected")


@contextmanager
def qcluster(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """A django-q2 cluster (`manage.py qcluster`) for the duration of the block; its log goes to a
    file, never to an unread pipe that could fill up and stall it."""
    with open(log_path, "w") as log:
        cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield cluster
        finally:
            stop_group(cluster)


def stop_group(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """Stop a process started with start_new_session and everything it started: TERM, then KILL."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for_status(run_id: int, statuses: tuple[str, ...], *, timeout: float, what: str, log_path: Path | None = None) -> str:
    from agentops.runs.models import Run

    deadline = time.monotonic() + timeout
    while (status := Run.objects.get(pk=run_id).status) not in statuses:
        if time.monotonic() > deadline:
            tail = log_path.read_text()[-2000:] if log_path and log_path.exists() else ""
            raise AssertionError(f"{what} (status {status})\n{tail}")
        time.sleep(0.1)
    return status
