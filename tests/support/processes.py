"""Real worker processes for the tests that need them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
            stop_cluster(cluster)


def stop_cluster(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """Stop a django-q2 cluster the way it expects: SIGTERM to its main process only, which stops
    the sentinel, which lets each worker finish its task. Not to the whole group: the sentinel and
    the workers keep SIGTERM's default and die at once, and the main process then deadlocks in its
    own handler (it signals an Event the dead sentinel was waiting on) until a SIGKILL. Whatever is
    left of the group after the grace period is killed."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def stop_group(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """Stop a process started with start_new_session and everything it started: TERM, then KILL."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for_status(
    run_id: int, statuses: tuple[str, ...], *, timeout: float, what: str, log_path: Path | None = None, worker: subprocess.Popen | None = None
) -> str:
    """Wait for the run to reach one of ``statuses``; with ``worker`` (the process that should get it
    there), fail at once when that process exited instead of waiting out the timeout."""
    from agentops.runs.models import Run

    deadline = time.monotonic() + timeout
    while (status := Run.objects.get(pk=run_id).status) not in statuses:
        exited = worker is not None and worker.poll() is not None
        if exited or time.monotonic() > deadline:
            tail = log_path.read_text()[-2000:] if log_path and log_path.exists() else ""
            why = f"the worker process exited with {worker.returncode}" if exited and worker is not None else f"not within {timeout:g} s"
            raise AssertionError(f"{what} (status {status}; {why})\n{tail}")
        time.sleep(0.1)
    return status


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (a cluster started with start_new_session: the qcluster
    command, its sentinel, pusher, monitor and workers)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


class Cluster:
    """A django-q2 cluster that a chaos test can SIGKILL (whole, or one of its processes) and
    start again; its log is appended to one file across restarts."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    def kill_all(self) -> None:
        """SIGKILL every process of the cluster at once: nothing gets to clean up."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        # Orphaned children re-parent elsewhere but keep the group: make sure none survives.
        deadline = time.monotonic() + 5
        while group_members(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.proc = None

    def supervise(self) -> bool:
        """What a service manager (systemd, a container runtime) does: a cluster whose main
        process exited (e.g. its sentinel was killed) is cleaned up and started again."""
        if self.proc is not None and self.proc.poll() is None:
            return False
        self.kill_all()
        self.start()
        return True

    def kill_one(self, rng: Any) -> int | None:
        """SIGKILL one process of the cluster other than its root (a worker, the pusher, the
        monitor or the sentinel); the sentinel respawns the others."""
        if self.proc is None:
            return None
        children = [pid for pid in group_members(self.proc.pid) if pid != self.proc.pid]
        if not children:
            return None
        victim = rng.choice(children)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return victim

    def stop(self) -> None:
        if self.proc is not None:
            try:
                stop_group(self.proc, grace_s=5)
            except ProcessLookupError:
                pass
            # Whatever is left of the group (e.g. after a sentinel was killed) goes too.
            for pid in group_members(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc = None


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def wait_port(port: int, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not listen on {port} within {timeout}s") from None
            time.sleep(0.05)


class RedisServer:
    """A redis-server of the test's own, without persistence: a restart loses every queued job,
    exactly the fault under test. Never the shared one on 6379."""

    def __init__(self, workdir: Path, port: int = 6390) -> None:
        self.workdir = workdir
        self.port = free_port(port)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port, timeout=10, what="redis-server")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()


class PostgresServer:
    """A PostgreSQL cluster of the test's own (initdb in a temp dir, its own port), which the test
    may stop and start; never the shared one on 5432."""

    # The newest server installed (Debian's layout), e.g. /usr/lib/postgresql/15/bin.
    BIN = max(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        default=Path("/usr/lib/postgresql/15/bin"),
    )

    def __init__(self, workdir: Path, port: int = 5440) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.port = free_port(port)
        self.log = workdir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/chaos"

    def _as_owner(self, *args: str, timeout: float = 60) -> None:
        # initdb and postgres refuse to run as root: run them as the postgres system user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, timeout=timeout, capture_output=True)

    def init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        self._as_owner(str(self.BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._as_owner(str(self.BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "chaos")

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.workdir} -c fsync=off"
        self._as_owner(str(self.BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "30", "start")

    def stop(self, mode: str = "immediate") -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_owner(str(self.BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
