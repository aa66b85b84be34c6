"""The chaos suite's processes: its own redis-server (restartable, no persistence), clusters it may
SIGKILL, and the environment they share. Every process a test starts is stopped, pass or fail."""

from __future__ import annotations

import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import FINAL, Cluster, RedisServer

# Short enough that a chaos test takes seconds: the reaper (and reconciler) pass every REAPER_S in
# every worker, a queued run counts as stranded after GRACE_S, a dead worker's lease runs out in TTL_S.
REAPER_S = 2
GRACE_S = 1
TTL_S = 3
# After the last fault, every run must be terminal within two reaper periods plus this much for a
# cluster to (re)start and the remaining work to be done.
SETTLE_S = 60


def chaos_env(*, database_url: str, q_name: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": database_url,
        "AGENTOPS_TOOL_MODULES": "tests.support.tools",
        "AGENTOPS_LEASE_TTL_S": str(TTL_S),
        "AGENTOPS_HEARTBEAT_S": "1",
        "AGENTOPS_REAPER_S": str(REAPER_S),
        "AGENTOPS_DISPATCH_GRACE_S": str(GRACE_S),
        "AGENTOPS_Q_NAME": q_name,
        "AGENTOPS_WORKERS": "2",
        "AGENTOPS_SANDBOX_BACKEND": "bubblewrap",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
        env["AGENTOPS_CHANNEL_PREFIX"] = q_name
    return env


@pytest.fixture
def q_name() -> str:
    return f"chaos-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Random fault points, reproducible: a failure names its seed; CHAOS_SEED replays it."""
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1_000_000))
    request.node.user_properties.append(("chaos_seed", seed))
    print(f"chaos seed {seed} (replay with CHAOS_SEED={seed})")
    return random.Random(seed)


@pytest.fixture
def redis_server(tmp_path: Path, require_real: Callable[[str, str], None]) -> Iterator[RedisServer]:
    if not shutil.which("redis-server"):
        require_real("redis-server", "not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis", port=6390)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Cluster]]:
    """Start clusters; all of them are stopped at the end of the test, whatever happened."""
    started: list[Cluster] = []

    def start(env: dict[str, str], name: str = "cluster") -> Cluster:
        cluster = Cluster(env, tmp_path / f"{name}.log")
        cluster.start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


def redis_broker(url: str, q_name: str) -> Any:
    """django-q2's own Redis broker, pointed at the test's redis-server (this process's settings
    were read before it existed)."""
    import redis
    from django_q.brokers.redis_broker import Redis

    class ChaosRedis(Redis):
        @staticmethod
        def get_connection(list_key: str | None = None) -> Any:
            return redis.from_url(f"{url}?socket_connect_timeout=2&socket_timeout=5")

    return ChaosRedis(list_key=q_name)


def orm_broker(q_name: str) -> Any:
    from django_q.brokers.orm import ORM

    return ORM(list_key=q_name)


def enqueue_through(monkeypatch: pytest.MonkeyPatch, broker: Any) -> None:
    """run_enqueue hands jobs to `broker`, exactly as the web process would to its configured one."""
    from django_q.tasks import async_task

    monkeypatch.setattr("django_q.tasks.async_task", partial(async_task, broker=broker))


def wait_all_final(run_ids: list[int], *, timeout: float, cluster_logs: list[Path] = (), supervised: list[Cluster] = ()) -> float:
    """Seconds until every run is terminal; fails with the stragglers and the clusters' logs. The
    `supervised` clusters are restarted if their main process exits, as a service manager would."""
    from tests.chaos.scenario import statuses

    started = time.monotonic()
    while True:
        for cluster in supervised:
            cluster.supervise()
        current = statuses(run_ids)
        pending = {pk: s for pk, s in current.items() if s not in FINAL}
        if not pending:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in cluster_logs if p.exists())
            raise AssertionError(f"runs not terminal after {timeout:.0f}s: {pending}\n{tails}")
        time.sleep(0.2)
