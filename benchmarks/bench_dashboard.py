"""Dashboard benchmarks (issue 6).

1. Live latency: a step is committed -> its message reaches a websocket client of the run
   consumer, through the Redis channel layer. Measured from the moment the step's transaction
   commits (an on_commit hook registered before step_record's own) to the moment the client
   receives the rendered step. In-process: the consumer runs under channels' WebsocketCommunicator
   on this process's event loop; the broadcast goes through Redis and back, and the consumer reads
   the step from the database and renders it, as in production.
2. Run detail of a 10,000-step run: server time (Django test client, full middleware and
   template rendering) and the number of queries.

Usage:
    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python benchmarks/bench_dashboard.py [--database-url URL] [--samples 200]
Without --database-url a temporary SQLite file is used; with a postgres:// URL a fresh database
is created next to it and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def setup_database(url: str | None) -> tuple[str, Callable[[], None]]:
    if url and url.startswith(("postgres://", "postgresql://")):
        import psycopg

        name = f"agentops_bench_{uuid.uuid4().hex[:8]}"
        admin = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            from django.db import connections

            connections.close_all()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        return url.rsplit("/", 1)[0] + "/" + name, drop
    path = Path(tempfile.mkdtemp()) / "bench.sqlite3"
    return f"sqlite:///{path}", lambda: None


async def live_latency(run_id: int, user, samples: int) -> list[float]:
    from channels.db import database_sync_to_async
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator
    from django.db import transaction

    from agentops.runs.steps import step_record
    from dashboard.routing import websocket_urlpatterns

    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run_id}/")
    comm.scope["user"] = user
    connected, _ = await comm.connect()
    assert connected
    await comm.receive_json_from(timeout=5)  # the catch-up of existing steps

    def commit_one(i: int) -> tuple[float, int]:
        stamp: dict[str, float] = {}
        with transaction.atomic():
            transaction.on_commit(lambda: stamp.setdefault("t", time.perf_counter()))
            step = step_record(run=run_id, kind="model_call", payload={"text": f"sample {i}"}, model_id="bench", input_tokens=10, output_tokens=5)
        return stamp["t"], step.seq

    latencies = []
    for i in range(samples + 10):
        committed_at, seq = await database_sync_to_async(commit_one)(i)
        while True:
            message = await comm.receive_json_from(timeout=5)
            if message["last_seq"] >= seq:
                break
        if i >= 10:  # warm-up
            latencies.append((time.perf_counter() - committed_at) * 1000)
        await asyncio.sleep(0.005)
    await comm.disconnect()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--page-samples", type=int, default=20)
    args = parser.parse_args()

    url, drop = setup_database(args.database_url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench-secret")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "agentops.settings"
    import django

    django.setup()
    try:
        run_benchmarks(args)
    finally:
        drop()


def run_benchmarks(args: argparse.Namespace) -> None:
    from asgiref.sync import async_to_sync
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from agentops.agents.models import Agent, Policy
    from agentops.runs.models import Run, Step
    from agentops.runs.services import run_create
    from dashboard.roles import ensure_roles

    call_command("migrate", verbosity=0)
    groups = ensure_roles()
    user = User.objects.create_user("bench", password="bench-password")
    user.groups.add(groups["viewer"])
    agent = Agent.objects.create(name="Bench", slug="bench", objective="x", model="bench")
    Policy.objects.create(agent=agent)
    layer = str(settings.CHANNEL_LAYERS["default"]["BACKEND"])
    db = connection.vendor

    print(f"database: {db}; channel layer: {layer}")
    if "redis" not in layer.lower():
        print("warning: REDIS_URL is not set, so this measures the in-memory layer", file=sys.stderr)

    run = run_create(agent=agent, input="bench", actor="bench", enqueue=False)
    latencies = async_to_sync(live_latency)(run.pk, user, args.samples)
    print(
        f"step committed -> websocket message: n={len(latencies)} p50={statistics.median(latencies):.1f} ms p95={_percentile(latencies, 95):.1f} ms max={max(latencies):.1f} ms"
    )

    big = run_create(agent=agent, input="ten thousand steps", actor="bench", enqueue=False)
    Step.objects.bulk_create(
        (
            Step(run=big, seq=i, kind="observation" if i % 3 else "model_call", payload={"output": f"line {i} " * 20}, model_id="bench")
            for i in range(2, 10_002)
        ),
        batch_size=2000,
    )
    Run.objects.filter(pk=big.pk).update(next_seq=10_002)
    client = Client()
    client.force_login(user)
    client.get("/")
    times = []
    queries = 0
    for i in range(args.page_samples + 2):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = client.get(f"/runs/{big.pk}/")
            elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code == 200
        if i >= 2:
            times.append(elapsed)
            queries = len(captured.captured_queries)
    print(
        f"run detail, 10,000 steps: median={statistics.median(times):.1f} ms p95={_percentile(times, 95):.1f} ms queries={queries} html={len(response.content) // 1024} KiB"
    )

    # The trace viewer (issue 12): 10,000 steps as real turns (a model call, its tool call and the
    # observation paired by id, test output to parse), viewed at the newest window and around an
    # early error (the jump link), with the per-kind counts and first-error links computed.
    traced = run_create(agent=agent, input="a traced run", actor="bench", enqueue=False)
    kinds = []
    for i in range(2, 10_002):
        phase = i % 3
        if phase == 2:
            kinds.append(
                Step(
                    run=traced,
                    seq=i,
                    kind="model_call",
                    payload={"text": f"turn {i}: read the failing test"},
                    model_id="bench",
                    input_tokens=900,
                    output_tokens=60,
                    latency_ms=1200,
                )
            )
        elif phase == 0:
            kinds.append(
                Step(run=traced, seq=i, kind="tool_call", payload={"tool": "run_tests", "tool_call_id": f"c{i}", "arguments": {"paths": ["tests/test_x.py"]}})
            )
        else:
            kinds.append(
                Step(
                    run=traced,
                    seq=i,
                    kind="observation",
                    payload={
                        "tool": "run_tests",
                        "tool_call_id": f"c{i - 1}",
                        "is_error": i == 301,
                        "output": "FAILED tests/test_x.py::test_y - AssertionError\n" + f"line {i} " * 40 + "\n=== 1 failed, 13 passed in 0.8s ===",
                    },
                )
            )
    Step.objects.bulk_create(kinds, batch_size=2000)
    Run.objects.filter(pk=traced.pk).update(next_seq=10_002)
    for label, url in [("newest window", f"/runs/{traced.pk}/"), ("around the first error", f"/runs/{traced.pk}/?around=301")]:
        times, queries = [], 0
        for i in range(args.page_samples + 2):
            with CaptureQueriesContext(connection) as captured:
                start = time.perf_counter()
                response = client.get(url)
                elapsed = (time.perf_counter() - start) * 1000
            assert response.status_code == 200
            if i >= 2:
                times.append(elapsed)
                queries = len(captured.captured_queries)
        print(
            f"trace viewer, 10,000 steps, {label}: median={statistics.median(times):.1f} ms p95={_percentile(times, 95):.1f} ms queries={queries} html={len(response.content) // 1024} KiB"
        )


if __name__ == "__main__":
    main()
