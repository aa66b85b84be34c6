"""Controller benchmarks (issue 3). Run: `.venv/bin/python benchmarks/bench_controller.py [--write]`.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres); creates and drops its own database.
1. Overhead per iteration (one model turn + one tool call, every step durable) with an instant
   scripted model and a no-op tool, at 100 and 1,000 iterations.
2. Kill switch: 20 runs, each in its own worker process inside a 60 s tool call; time from engage
   to every run halted, and tool calls started after engage.
3. Throughput: 20 runs in 20 worker processes with 300 ms simulated model latency, against the
   ideal (every run's model time fully overlapped).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "agentops_bench"
# Production settings: DEBUG off (with DEBUG on, Django keeps a log of every query).
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key")
os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
os.environ["DJANGO_SETTINGS_MODULE"] = "agentops.settings"
# The production shape: PostgreSQL and the Redis channel layer.
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("LOG_LEVEL", "WARNING")


def create_database() -> None:
    import psycopg

    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def setup() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_agent(slug: str, script: list[dict[str, Any]], tool: str, **policy: object) -> Any:
    from agentops.agents.models import Agent, Policy, ToolGrant
    from agentops.llm.prices import DEFAULT_MODEL

    agent = Agent.objects.create(name=slug, slug=slug, objective="bench", model=DEFAULT_MODEL, config={"planner": "scripted", "script": script})
    Policy.objects.create(agent=agent, max_iterations=100_000, max_tool_calls=100_000, max_tokens=10**12, max_wall_clock_s=3600, **policy)
    ToolGrant.objects.create(agent=agent, tool=tool, scope={})
    return agent


def _word(i: int) -> str:
    return "".join(chr(ord("a") + int(d)) for d in str(i))


def overhead(iterations: int, repeats: int = 3, tool: str = "noop") -> float:
    """Median milliseconds per iteration."""
    from agentops.runs.controller import execute_run
    from agentops.runs.services import run_create

    # Distinct arguments per call keep the loop detector from (rightly) stopping a repetitive run; not
    # numbers, which it would (rightly) see as one call paging along.
    script = [{"text": f"turn {i}", "tool_calls": [{"name": tool, "arguments": {"n": _word(i)}}]} for i in range(iterations)] + [{"text": "done"}]
    results = []
    for r in range(repeats):
        agent = make_agent(f"overhead-{iterations}-{r}-{time.monotonic_ns()}", script, tool)
        run = run_create(agent=agent, input="go", enqueue=False)
        started = time.perf_counter()
        execute_run(run.pk)
        elapsed = time.perf_counter() - started
        run.refresh_from_db()
        # A read-only no-op achieves nothing: the run finishes as "no_change" (a write, as "acted").
        assert run.outcome in ("no_change", "acted"), run.status_reason
        results.append(elapsed * 1000 / iterations)
    return statistics.median(results)


def _worker(run_id: int) -> None:
    from django.db import connections

    connections.close_all()
    from agentops.runs.controller import execute_run

    execute_run(run_id)
    connections.close_all()


def kill_switch(n: int = 20) -> dict[str, float]:
    from django.db import connections

    from agentops.guardrails.killswitch import kill_switch_engage, kill_switch_release
    from agentops.runs.models import FINAL_STATUSES, Run, Step, StepKind
    from agentops.runs.services import run_create

    script: list[dict[str, Any]] = [{"text": "slow", "tool_calls": [{"name": "wait", "arguments": {"seconds": 60}}]}, {"text": "done"}]
    agent = make_agent(f"kill-bench-{time.monotonic_ns()}", script, "wait")
    run_ids = [run_create(agent=agent, input="x", enqueue=False).pk for _ in range(n)]
    connections.close_all()
    procs = [mp.Process(target=_worker, args=(pk,)) for pk in run_ids]
    for p in procs:
        p.start()
    while Step.objects.filter(run_id__in=run_ids, kind=StepKind.TOOL_CALL).count() < n:
        time.sleep(0.01)
    started = time.perf_counter()
    state = kill_switch_engage(actor="bench", reason="benchmark")
    while Run.objects.filter(pk__in=run_ids, status__in=FINAL_STATUSES).count() < n:
        time.sleep(0.005)
    halted = time.perf_counter() - started
    for p in procs:
        p.join(10)
    after = Step.objects.filter(run_id__in=run_ids, kind__in=[StepKind.TOOL_CALL, StepKind.MODEL_CALL], created_at__gt=state.engaged_at).count()
    kill_switch_release(actor="bench", reason="benchmark done")
    return {"halt_ms": halted * 1000, "actions_after_engage": after}


def throughput(n: int = 20, turns: int = 10, latency_s: float = 0.3) -> dict[str, float]:
    from django.db import connections

    from agentops.runs.models import Run
    from agentops.runs.services import run_create

    script = [{"text": f"t{i}", "delay_s": latency_s, "tool_calls": [{"name": "noop", "arguments": {"n": _word(i)}}]} for i in range(turns)]
    script.append({"text": "done", "delay_s": latency_s})
    agent = make_agent("throughput-bench", script, "noop")
    run_ids = [run_create(agent=agent, input="x", enqueue=False).pk for _ in range(n)]
    connections.close_all()
    procs = [mp.Process(target=_worker, args=(pk,)) for pk in run_ids]
    started = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    wall = time.perf_counter() - started
    outcomes = set(Run.objects.filter(pk__in=run_ids).values_list("outcome", flat=True))
    assert outcomes == {"no_change"}, outcomes
    ideal = (turns + 1) * latency_s
    return {"wall_s": wall, "ideal_s": ideal, "efficiency": ideal / wall}


def register_noop() -> None:
    from agentops.tools.registry import Tool, ToolResult, register

    for name, risk, side_effecting in (("noop", "read", False), ("noop_write", "write", True)):
        register(
            Tool(
                name=name,
                description="does nothing",
                input_schema={"type": "object"},
                risk_class=risk,
                scope_schema={"type": "object"},
                executor=lambda args, ctx: ToolResult(output="ok"),
                side_effecting=side_effecting,
            )
        )


def main() -> None:
    mp.set_start_method("fork")
    create_database()
    setup()
    register_noop()
    o100 = overhead(100)
    o1000 = overhead(1000, repeats=3)
    w1000 = overhead(1000, repeats=3, tool="noop_write")
    ks = [kill_switch() for _ in range(3)]
    tp = throughput()
    lines = [
        "## Controller",
        "",
        "Rerun: `.venv/bin/python benchmarks/bench_controller.py --write` (PostgreSQL at 127.0.0.1:5432; 2-core machine).",
        "",
        "| measure | result | target |",
        "| --- | --- | --- |",
        f"| overhead per iteration, 100-iteration run (median of 3) | {o100:.2f} ms | ≤ 2 ms |",
        f"| overhead per iteration, 1,000-iteration run (median of 3) | {o1000:.2f} ms | ≤ 2 ms |",
        f"| ratio 1,000 / 100 | {o1000 / o100:.2f}× | ≤ 1.25× |",
        f"| same, 1,000 iterations, with a side-effecting (ledgered) no-op tool | {w1000:.2f} ms | — |",
        f"| kill switch, 20 runs in 20 worker processes inside a 60 s tool: engage → all halted (median of 3) | {statistics.median(k['halt_ms'] for k in ks):.0f} ms | ≤ 1,000 ms |",
        f"| tool or model calls started after engage (all 3 drills) | {sum(k['actions_after_engage'] for k in ks):.0f} | 0 |",
        f"| 20 concurrent runs, 11 turns of 300 ms model latency each: wall vs ideal | {tp['wall_s']:.2f} s vs {tp['ideal_s']:.2f} s = {tp['efficiency'] * 100:.0f} % | ≥ 80 % |",
        "",
        "An iteration is one model turn plus one tool call: model_call, tool_call and observation steps, each",
        "committed (and broadcast after commit) before the next action, with every guard checked before the",
        "model call and the tool call. Each step write is one prepared statement that also moves the run's",
        "counters and returns the kill-switch/pause/cancel state for the next guard. A read-only tool's",
        "tool_call and observation share one commit (repeating a read after a crash harms nothing; a read",
        "running past 50 ms gets its tool_call written at once); a side-effecting tool commits its tool_call",
        "and its ledger row before it acts, hence the second overhead row. The shorter run pays its start-up",
        "(claim, rebuild, planner) over fewer iterations. Worker processes are forked per run, as django-q2",
        "workers would hold them; their start-up is inside the throughput wall time.",
        "",
        "How it got here: 9.9 ms → 5 ms (step insert and counters in one statement; one guard query; no event",
        "loop per broadcast) → 2.5 ms (server-side binding with prepared statements: planning was 0.5 ms of",
        "every step) → 1.4 ms (no redundant index on runs_step.run_id; secrets list cached; a read tool's two",
        "steps in one commit; the stop state returned by the step write instead of read separately).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if "--write" in sys.argv:
        write_section(ROOT / "BENCHMARKS.md", "## Controller", text)


def write_section(path: Path, heading: str, text: str) -> None:
    existing = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if heading in existing:
        start = existing.index(heading)
        rest = existing[start + len(heading) :]
        end = rest.find("\n## ")
        existing = existing[:start] + (rest[end + 1 :] if end != -1 else "")
    path.write_text(existing.rstrip() + "\n\n" + text)


if __name__ == "__main__":
    main()
