"""Error ingest throughput (issue 10, item 8): events/s with dedup under daphne + PostgreSQL.

What it does, per repetition:
1. creates a fresh PostgreSQL database, migrates it, and adds an error project, the debugging agent
   and an error trigger matching every event (no worker runs: the runs it starts stay queued);
2. starts daphne exactly as the README deploys it (`daphne -b 127.0.0.1 -p PORT agentops.asgi:application`)
   on a free loopback port;
3. N concurrent HTTP/1.1 keep-alive clients (asyncio, one connection each) post P Sentry events each
   to `/api/<project>/store/` (alternating with the envelope endpoint when --envelope): G error
   groups, and every tenth post repeats an earlier event_id (an SDK retry: deduplicated);
4. verifies: every post answered 200, each group counts exactly its unique events, and exactly one
   run exists per error group.

Usage:
    .venv/bin/python benchmarks/bench_ingest.py [--database-url postgres://postgres@127.0.0.1:5432/agentops]
        [--clients 20] [--posts 100] [--groups 10] [--repeat 3] [--envelope]
Reports the median events/s over the repetitions and the p50/p95 latency of every post.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PYTHON = ROOT / ".venv" / "bin" / "python"
DAPHNE = ROOT / ".venv" / "bin" / "daphne"


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _create_database(url: str) -> tuple[str, str]:
    import psycopg

    name = f"agentops_bench_ingest_{uuid.uuid4().hex[:8]}"
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name, admin


def _drop_database(admin: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SETUP = r"""
import django, json
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from agentops.agents.models import Agent, Policy, Trigger, TriggerKind
from agentops.triggers.models import ErrorProject
agent = Agent.objects.create(name="Debugging agent", slug="debugging-agent", objective="Fix errors.",
    model="claude-sonnet-4-6", trust_phase=3, config={"planner": "scripted", "script": []})
Policy.objects.create(agent=agent, daily_max_runs=1000)
Trigger.objects.create(agent=agent, name="errors", kind=TriggerKind.ERROR, rules={"project": "checkout", "min_level": "error"})
project = ErrorProject.objects.create(name="Checkout", slug="checkout")
print(json.dumps({"project": project.pk, "key": project.public_key}))
"""

VERIFY = r"""
import django, json
django.setup()
from agentops.runs.models import Run
from agentops.triggers.models import ErrorEvent, ErrorGroup
groups = list(ErrorGroup.objects.values("pk", "count"))
runs = {}
for fingerprint in Run.objects.values_list("fingerprint", flat=True):
    runs[fingerprint] = runs.get(fingerprint, 0) + 1
print(json.dumps({"groups": groups, "events": ErrorEvent.objects.count(), "runs": runs}))
"""


def _django(env: dict[str, str], code: str) -> dict:
    out = subprocess.run([str(PYTHON), "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _event(group: int, event_id: str) -> dict:
    return {
        "event_id": event_id,
        "level": "error",
        "platform": "python",
        "environment": "production",
        "tags": {"service": "checkout"},
        "exception": {
            "values": [
                {
                    "type": f"BenchError{group}",
                    "value": "pool of 10 exhausted",
                    "stacktrace": {
                        "frames": [
                            {"filename": "checkout/service.py", "function": "checkout", "module": "checkout.service", "lineno": 20, "in_app": True},
                            {
                                "filename": "checkout/db.py",
                                "function": f"acquire_{group}",
                                "module": "checkout.db",
                                "lineno": 42,
                                "in_app": True,
                                "context_line": "raise BenchError(...)",
                            },
                        ]
                    },
                }
            ]
        },
    }


async def _client(port: int, project: int, key: str, posts: list[tuple[str, bytes]], latencies: list[float], failures: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for path, body in posts:
            content_type = "application/x-sentry-envelope" if path.endswith("envelope/") else "application/json"
            head = (
                f"POST /api/{project}/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                f"X-Sentry-Auth: Sentry sentry_version=7, sentry_key={key}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            start = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            payload = await reader.readexactly(length) if length else b""
            latencies.append(time.perf_counter() - start)
            if b" 200 " not in status_line:
                failures.append(f"{status_line!r} {payload[:200]!r}")
    finally:
        writer.close()


def _posts(clients: int, per_client: int, groups: int, envelope: bool) -> tuple[list[list[tuple[str, bytes]]], dict[int, int]]:
    """Each client's posts; every tenth repeats an event_id sent earlier by the same client."""
    unique: dict[int, int] = {}
    plans = []
    for c in range(clients):
        plan: list[tuple[str, bytes]] = []
        sent: list[bytes] = []
        for i in range(per_client):
            if i % 10 == 9 and sent:
                body = sent[i // 2 % len(sent)]
            else:
                group = sum(unique.values()) % groups
                unique[group] = unique.get(group, 0) + 1
                body = json.dumps(_event(group, uuid.uuid4().hex)).encode()
                sent.append(body)
            if envelope and i % 2:
                item = json.dumps({"type": "event", "length": len(body)}).encode()
                plan.append(("envelope/", b"{}\n" + item + b"\n" + body))
            else:
                plan.append(("store/", body))
        plans.append(plan)
    return plans, unique


def one_repetition(database_url: str, args: argparse.Namespace) -> dict:
    url, admin = _create_database(database_url)
    env = dict(
        os.environ,
        DATABASE_URL=url,
        SECRET_KEY="bench-ingest-secret",
        DEBUG="0",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE=os.environ.get("BENCH_SETTINGS_MODULE", "agentops.settings"),
    )
    env.pop("REDIS_URL", None)
    daphne = None
    try:
        info = _django(env, SETUP)
        port = _free_port()
        log = tempfile.TemporaryFile()
        daphne = subprocess.Popen(
            [str(DAPHNE), "-b", "127.0.0.1", "-p", str(port), "agentops.asgi:application"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or daphne.poll() is not None:
                    raise RuntimeError("daphne did not start") from None
                time.sleep(0.1)
        # Warm-up: the first request imports views and opens connections.
        warm_latencies: list[float] = []
        warm_fail: list[str] = []
        warm = [[("store/", json.dumps(_event(999, uuid.uuid4().hex)).encode())]]
        asyncio.run(_client(port, info["project"], info["key"], warm[0], warm_latencies, warm_fail))
        plans, unique = _posts(args.clients, args.posts, args.groups, args.envelope)
        latencies: list[float] = []
        failures: list[str] = []

        async def go() -> float:
            start = time.perf_counter()
            await asyncio.gather(*[_client(port, info["project"], info["key"], plan, latencies, failures) for plan in plans])
            return time.perf_counter() - start

        wall = asyncio.run(go())
        daphne.terminate()
        daphne.wait(timeout=10)
        log.seek(0)
        stderr = log.read().decode(errors="replace")
        daphne = None
        result = _django(env, VERIFY)
        counts = sorted(g["count"] for g in result["groups"])
        expected = sorted([*unique.values(), 1])  # + the warm-up group
        runs = result["runs"]
        problems = list(failures[:5])
        if counts != expected:
            problems.append(f"group counts {counts} != unique events sent {expected}")
        if len(runs) != len(result["groups"]) or any(n != 1 for n in runs.values()):
            problems.append(f"runs per group: {runs}")
        if "Traceback" in stderr:
            problems.append("daphne logged a traceback: " + stderr[-2000:])
        total = args.clients * args.posts
        return {
            "events_per_s": total / wall,
            "wall_s": wall,
            "p50_ms": _percentile(latencies, 50) * 1000,
            "p95_ms": _percentile(latencies, 95) * 1000,
            "posts": total,
            "unique_events": sum(unique.values()),
            "groups": len(result["groups"]),
            "runs": sum(runs.values()),
            "problems": problems,
        }
    finally:
        if daphne is not None:
            daphne.kill()
            daphne.wait()
        _drop_database(admin, url)


def main() -> int:
    # A timeout's SIGTERM must still stop daphne and drop the database (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/agentops")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--posts", type=int, default=100, help="posts per client")
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--envelope", action="store_true", help="every second post through the envelope endpoint")
    args = parser.parse_args()
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL")
    results = []
    for i in range(args.repeat):
        r = one_repetition(args.database_url, args)
        results.append(r)
        print(
            f"run {i + 1}: {r['events_per_s']:.0f} events/s, p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
            f"{r['posts']} posts ({r['unique_events']} unique), {r['groups']} groups, {r['runs']} runs"
            + (f"  PROBLEMS: {r['problems']}" if r["problems"] else ""),
            flush=True,
        )
    median = statistics.median(r["events_per_s"] for r in results)
    print(
        f"median events/s over {len(results)} runs: {median:.0f}; p50 {statistics.median(r['p50_ms'] for r in results):.1f} ms, "
        f"p95 {statistics.median(r['p95_ms'] for r in results):.1f} ms; load average {os.getloadavg()[0]:.2f}"
    )
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
