"""The chaos suite's agent and its audit. Importable in the test process and, for the scenarios whose
database is not the test's (PostgreSQL restarted), through `manage.py shell` in a subprocess."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

TURNS = 4  # side effects per run


def chaos_agent(*, slug: str, ledger: str, turns: int = TURNS, sleep_s: float = 0.15, grants: dict | None = None, script: list | None = None) -> Any:
    """An agent whose every turn has a real side effect (a line appended to `ledger`, keyed by the
    tool call's idempotency key), so a repeated effect shows as a repeated key."""
    from agentops.agents.models import Agent, Policy, ToolGrant
    from agentops.llm.prices import DEFAULT_MODEL

    if script is None:
        script = [{"text": f"effect {i}", "tool_calls": [{"name": "test_append", "arguments": {"text": f"e{i}", "then_sleep": sleep_s}}]} for i in range(turns)]
        script.append({"text": "done"})
    agent = Agent.objects.create(name=slug, slug=slug, objective="Chaos.", model=DEFAULT_MODEL, trust_phase=2, config={"planner": "scripted", "script": script})
    Policy.objects.create(agent=agent, daily_max_runs=1000, max_wall_clock_s=600)
    for tool, scope in (grants or {"test_append": {"path": ledger}}).items():
        ToolGrant.objects.create(agent=agent, tool=tool, scope=scope)
    return agent


def create_runs(*, agent: Any, count: int, enqueue: bool = True) -> list[int]:
    from agentops.runs.services import run_create

    return [run_create(agent=agent, input=f"chaos {i}", actor="chaos", enqueue=enqueue).pk for i in range(count)]


def statuses(run_ids: list[int]) -> dict[int, str]:
    from agentops.runs.models import Run

    return dict(Run.objects.filter(pk__in=run_ids).values_list("pk", "status"))


def audit(run_ids: list[int], ledger: str | None, *, effects_per_run: int | None = TURNS) -> dict[str, Any]:
    """Every invariant the chaos suite asserts, as data (JSON-able): `problems` must be empty."""
    from django.db.models import Count

    from agentops.runs.models import FINAL_STATUSES, Run, Step, StepKind, ToolExecution

    problems: list[str] = []
    runs = {r.pk: r for r in Run.objects.filter(pk__in=run_ids)}
    if set(runs) != set(run_ids):
        problems.append(f"runs missing: {sorted(set(run_ids) - set(runs))}")
    for run in runs.values():
        label = f"run {run.pk} ({run.status}: {run.status_reason})"
        if run.status not in FINAL_STATUSES:
            problems.append(f"{label} is not terminal")
        steps = list(Step.objects.filter(run=run).order_by("seq").values("seq", "kind", "payload"))
        seqs = [s["seq"] for s in steps]
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"{label}: step seqs not contiguous: {seqs}")
        calls = Counter(s["payload"].get("tool_call_id") for s in steps if s["kind"] == StepKind.TOOL_CALL)
        observed = Counter(s["payload"].get("tool_call_id") for s in steps if s["kind"] == StepKind.OBSERVATION)
        if [c for c, n in calls.items() if n > 1]:
            problems.append(f"{label}: a tool call recorded twice: {calls}")
        if [c for c, n in observed.items() if n > 1]:
            problems.append(f"{label}: an observation recorded twice: {observed}")
        # Every model call is paid for: each answered call, each retry, and each call in flight when
        # a worker died (charged on takeover with an `unsettled_model_call` step).
        model_steps = [
            s
            for s in steps
            if s["kind"] in (StepKind.MODEL_CALL, StepKind.RETRY) or (s["kind"] == StepKind.GUARDRAIL and s["payload"].get("guard") == "unsettled_model_call")
        ]
        if run.model_calls != len(model_steps):
            problems.append(f"{label}: {run.model_calls} model calls counted, {len(model_steps)} recorded")
        reserved = [getattr(run, f, 0) for f in ("reserved_cost_usd", "reserved_input_tokens", "reserved_output_tokens")]
        if run.status in FINAL_STATUSES and any(reserved):
            problems.append(f"{label}: ended with a model call reserved and never settled: {reserved}")
        executions = ToolExecution.objects.filter(run=run).count()
        if executions != len(calls):
            problems.append(f"{label}: {executions} ledger entries for {len(calls)} tool calls")
        if run.status == "succeeded" and effects_per_run is not None and len(calls) != effects_per_run:
            problems.append(f"{label}: succeeded with {len(calls)} tool calls, expected {effects_per_run}")
    duplicates = Step.objects.filter(run_id__in=run_ids).values("run_id", "seq").annotate(n=Count("id")).filter(n__gt=1)
    if duplicates.exists():
        problems.append(f"duplicate steps: {list(duplicates)}")
    effects: Counter[str] = Counter()
    if ledger is not None and Path(ledger).exists():
        effects = Counter(line.split()[0] for line in Path(ledger).read_text().splitlines() if line.strip())
        repeated = {k: n for k, n in effects.items() if n > 1}
        if repeated:
            problems.append(f"side effects repeated: {repeated}")
    # At most once, never lost unseen: a call either did its effect (once), or a worker died inside it
    # and the model was told its outcome is unknown (the ledger never repeats an action in doubt).
    interrupted = 0
    if ledger is not None:
        for step in Step.objects.filter(run_id__in=run_ids, kind=StepKind.OBSERVATION).values("run_id", "payload"):
            key = f"run-{step['run_id']}:{step['payload'].get('tool_call_id')}"
            in_doubt = "interrupted by a worker failure" in str(step["payload"].get("output", ""))
            interrupted += in_doubt
            if key not in effects and not in_doubt and not step["payload"].get("is_error"):
                problems.append(f"{key}: observed as done, but its side effect never happened")
    succeeded = [r for r in runs.values() if r.status == "succeeded"]
    if ledger is not None and effects_per_run is not None:
        for run in succeeded:
            mine = [k for k in effects if k.startswith(f"run-{run.pk}:")]
            if len(mine) > effects_per_run:
                problems.append(f"run {run.pk}: {len(mine)} effects for {effects_per_run} tool calls")
    return {
        "problems": problems,
        "statuses": dict(Counter(r.status for r in runs.values())),
        "reasons": dict(Counter(r.status_reason for r in runs.values())),
        "attempts": sum(r.attempts for r in runs.values()),
        "takeovers": sum(max(0, r.attempts - 1) for r in runs.values()),
        "effects": sum(effects.values()),
        "interrupted": interrupted,
        "steps": Step.objects.filter(run_id__in=run_ids).count(),
    }


def audit_json(run_ids: list[int], ledger: str | None) -> str:
    return json.dumps(audit(run_ids, ledger))
