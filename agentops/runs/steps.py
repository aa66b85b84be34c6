"""Recording steps: numbered, redacted, committed, then broadcast.

seq comes from the run row itself (`UPDATE ... SET next_seq = next_seq + 1 RETURNING`): the
statement row-locks the run until commit, so concurrent writers (the worker, a person's approval
decision, the kill switch) can never number two steps alike. The same UPDATE moves the run's
counters, so a step and the budget it spent are one atomic fact. On PostgreSQL the UPDATE and the
INSERT are one statement (a data-modifying CTE): one round trip per step, which is most of what a
controller iteration costs.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from agentops.redaction import redact
from agentops.runs.models import Artifact, Run, Step

# Text longer than this is truncated in the step row; the whole text goes to an Artifact.
ROW_TEXT_LIMIT = 4000
# Fields of a payload that may carry long text.
_LONG_FIELDS = ("text", "output", "content_text", "diff", "summary", "report")
# Run counters a step may move (column names of runs_run).
COUNTERS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "model_calls", "tool_calls", "iterations")


class LeaseLost(Exception):
    """The worker no longer owns the run: it must stop without writing anything more."""


def _run_update_sql(run_id: int, lease_owner: str | None, counters: dict[str, Any]) -> tuple[str, list[Any]]:
    sets = ["next_seq = next_seq + 1"]
    params: list[Any] = []
    for name, delta in counters.items():
        if name not in COUNTERS:
            raise ValueError(f"unknown run counter {name!r}")
        sets.append(f"{name} = {name} + %s")
        params.append(delta)
    sql = f"UPDATE runs_run SET {', '.join(sets)} WHERE id = %s"
    params.append(run_id)
    if lease_owner is not None:
        # A worker writes only while it holds the lease: a worker presumed dead that wakes up
        # again cannot interleave steps with the one that took its run over.
        sql += " AND lease_owner = %s"
        params.append(lease_owner)
    return sql, params


def next_seq(run_id: int, lease_owner: str | None = None, counters: dict[str, Any] | None = None) -> int:
    sql, params = _run_update_sql(run_id, lease_owner, counters or {})
    with connection.cursor() as cursor:
        cursor.execute(sql + " RETURNING next_seq", params)
        row = cursor.fetchone()
    if row is None:
        _missing(run_id, lease_owner)
    return int(row[0]) - 1


def _missing(run_id: int, lease_owner: str | None) -> None:
    if lease_owner is not None:
        raise LeaseLost(f"run {run_id} is no longer leased to {lease_owner}")
    raise Run.DoesNotExist(f"run {run_id} does not exist")


def step_record(
    *,
    run: Run | int,
    kind: str,
    payload: dict[str, Any] | None = None,
    model_id: str = "",
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_usd: Decimal | int = 0,
    latency_ms: int = 0,
    lease_owner: str | None = None,
    counters: dict[str, Any] | None = None,
) -> Step:
    """Record one step (and move the run's counters with it); broadcast once committed."""
    run_id = run if isinstance(run, int) else run.pk
    payload = redact(payload or {})
    whole: dict[str, str] = {}
    for name in _LONG_FIELDS:
        value = payload.get(name)
        if isinstance(value, str) and len(value) > ROW_TEXT_LIMIT:
            whole[name] = value
            payload[name] = value[:ROW_TEXT_LIMIT]
            payload[f"{name}_truncated"] = len(value)
    body = json.dumps(payload, default=str)
    fields = dict(kind=kind, model_id=model_id, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=Decimal(cost_usd), latency_ms=latency_ms)
    if connection.vendor == "postgresql" and not whole:
        step = _insert_in_one_statement(run_id, lease_owner, counters or {}, body, fields)
    else:
        with transaction.atomic():
            step = Step.objects.create(run_id=run_id, seq=next_seq(run_id, lease_owner, counters), payload=json.loads(body), **fields)
            for name, value in whole.items():
                Artifact.objects.create(run_id=run_id, step=step, name=f"step-{step.seq}-{name}", content=value, size=len(value))
    seq = step.seq
    transaction.on_commit(lambda: broadcast_step(run_id, seq, kind))
    return step


def _insert_in_one_statement(run_id: int, lease_owner: str | None, counters: dict[str, Any], body: str, fields: dict[str, Any]) -> Step:
    update_sql, params = _run_update_sql(run_id, lease_owner, counters)
    now = timezone.now()
    sql = (
        f"WITH r AS ({update_sql} RETURNING id, next_seq - 1 AS seq) "
        "INSERT INTO runs_step (run_id, seq, kind, payload, model_id, input_tokens, output_tokens, cost_usd, latency_ms, created_at) "
        "SELECT r.id, r.seq, %s, %s::jsonb, %s, %s, %s, %s, %s, %s FROM r RETURNING id, seq"
    )
    params += [fields["kind"], body, fields["model_id"], fields["input_tokens"], fields["output_tokens"], fields["cost_usd"], fields["latency_ms"], now]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        _missing(run_id, lease_owner)
    step = Step(id=row[0], run_id=run_id, seq=row[1], payload=json.loads(body), created_at=now, **fields)
    step._state.adding = False
    return step


def step_full_text(step: Step, field: str) -> str:
    """The whole value of a long payload field (from its artifact when the row holds a prefix)."""
    value = step.payload.get(field, "")
    if f"{field}_truncated" in step.payload:
        artifact = Artifact.objects.filter(step=step, name=f"step-{step.seq}-{field}").first()
        if artifact is not None:
            return artifact.content
    return value


def broadcast_step(run_id: int, seq: int, kind: str) -> None:
    """Tell live views a step exists; they read it from the database (the layer may drop messages)."""
    from agentops.live import broadcast

    broadcast(f"run-{run_id}", {"type": "step.created", "run_id": run_id, "seq": seq, "kind": kind})
    broadcast("overview", {"type": "run.changed", "run_id": run_id, "seq": seq, "kind": kind})
