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

from agentops import live
from agentops.redaction import Redacted, redact
from agentops.runs.models import Artifact, Run, Step

# Text longer than this is truncated in the step row; the whole text goes to an Artifact.
ROW_TEXT_LIMIT = 4000
# Fields of a payload that may carry long text.
_LONG_FIELDS = ("text", "output", "content_text", "diff", "summary", "report")
# Run counters a step may move (column names of runs_run).
COUNTERS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "model_calls",
    "tool_calls",
    "iterations",
    "refused_calls",
    "reserved_cost_usd",
    "reserved_input_tokens",
    "reserved_output_tokens",
)


class LeaseLost(Exception):
    """The worker no longer owns the run: it must stop without writing anything more."""


def _run_update_sql(run_id: int, lease_owner: str | None, counters: dict[str, Any], count: int = 1) -> tuple[str, list[Any]]:
    sets = ["next_seq = next_seq + %s"]
    params: list[Any] = [count]
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
    item = dict(kind=kind, payload=payload, model_id=model_id, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd, latency_ms=latency_ms)
    return steps_record(run=run, items=[item], lease_owner=lease_owner, counters=counters)[0]


def steps_record(
    *,
    run: Run | int,
    items: list[dict[str, Any]],
    lease_owner: str | None = None,
    counters: dict[str, Any] | None = None,
    state_out: dict[str, bool] | None = None,
) -> list[Step]:
    """Record consecutive steps atomically: numbered together, committed together, one round trip
    on PostgreSQL. Each item: kind, payload, and optionally model_id, tokens, cost_usd, latency_ms.

    state_out, when given and on PostgreSQL, receives the run's stop state (cancel_requested,
    paused, killed) as the same statement saw it, so the controller's next guard check needs no
    query of its own."""
    run_id = run if isinstance(run, int) else run.pk
    rows: list[tuple[dict[str, Any], str, dict[str, str], dict[str, Any]]] = []
    for item in items:
        payload = redact(item.get("payload") or {})
        whole: dict[str, str] = {}
        for name in _LONG_FIELDS:
            value = payload.get(name)
            if isinstance(value, str) and len(value) > ROW_TEXT_LIMIT:
                whole[name] = value
                payload[name] = value[:ROW_TEXT_LIMIT]
                payload[f"{name}_truncated"] = len(value)
        fields = {
            "kind": item["kind"],
            # The model id comes from the API response: data like any other, redacted and bounded.
            "model_id": redact(str(item.get("model_id") or ""))[:100],
            "input_tokens": item.get("input_tokens", 0),
            "output_tokens": item.get("output_tokens", 0),
            "cost_usd": Decimal(item.get("cost_usd", 0)),
            "latency_ms": item.get("latency_ms", 0),
        }
        rows.append((payload, json.dumps(payload, default=str), whole, fields))
    if connection.vendor == "postgresql" and not any(whole for _, _, whole, _ in rows):
        steps = _insert_in_one_statement(run_id, lease_owner, counters or {}, rows, state_out)
    else:
        with transaction.atomic():
            first = _next_seqs(run_id, lease_owner, counters, len(rows))
            steps = []
            for offset, (_, body, whole, fields) in enumerate(rows):
                # Redacted above: the payload field need not scan it again.
                clean = json.loads(body)
                step = Step.objects.create(run_id=run_id, seq=first + offset, payload=Redacted(clean), **fields)
                step.payload = clean
                for name, value in whole.items():
                    # The field's get_prep_value unwraps the Redacted marker instead of scanning the text again.
                    Artifact.objects.create(run_id=run_id, step=step, name=f"step-{step.seq}-{name}", content=Redacted(value), size=len(value))  # type: ignore[misc]  # django-stubs types the field as str only
                steps.append(step)
    last = steps[-1]
    seq, kind = last.seq, last.kind
    transaction.on_commit(lambda: broadcast_step(run_id, seq, kind))
    return steps


def _next_seqs(run_id: int, lease_owner: str | None, counters: dict[str, Any] | None, count: int) -> int:
    sql, params = _run_update_sql(run_id, lease_owner, counters or {}, count)
    with connection.cursor() as cursor:
        cursor.execute(sql + " RETURNING next_seq", params)
        row = cursor.fetchone()
    if row is None:
        _missing(run_id, lease_owner)
    return int(row[0]) - count


def _insert_in_one_statement(run_id: int, lease_owner: str | None, counters: dict[str, Any], rows: list, state_out: dict[str, bool] | None) -> list[Step]:
    update_sql, params = _run_update_sql(run_id, lease_owner, counters, len(rows))
    now = timezone.now()
    params.append(now)  # the SELECT list's created_at comes before the VALUES in the text
    values = []
    for offset, (_, body, _, fields) in enumerate(rows):
        values.append("(%s, %s, %s::jsonb, %s, %s, %s, %s::numeric, %s)")
        params += [offset, fields["kind"], body, fields["model_id"], fields["input_tokens"], fields["output_tokens"], fields["cost_usd"], fields["latency_ms"]]
    sql = (
        f"WITH r AS ({update_sql} RETURNING id, agent_id, cancel_requested, next_seq - {len(rows)} AS first), "
        "ins AS (INSERT INTO runs_step (run_id, seq, kind, payload, model_id, input_tokens, output_tokens, cost_usd, latency_ms, created_at) "
        "SELECT r.id, r.first + v.o, v.kind, v.payload, v.model_id, v.input_tokens, v.output_tokens, v.cost_usd, v.latency_ms, %s "
        f"FROM r CROSS JOIN (VALUES {', '.join(values)}) AS v(o, kind, payload, model_id, input_tokens, output_tokens, cost_usd, latency_ms) "
        "RETURNING id, seq) "
        "SELECT ins.id, ins.seq, r.cancel_requested, a.paused, "
        "EXISTS (SELECT 1 FROM guardrails_controlstate c WHERE c.id = 1 AND c.engaged) "
        "FROM ins CROSS JOIN r JOIN agents_agent a ON a.id = r.agent_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = sorted(cursor.fetchall(), key=lambda r: r[1])
    if not returned:
        _missing(run_id, lease_owner)
    if state_out is not None:
        _, _, cancel_requested, paused, killed = returned[0]
        state_out.update(cancel_requested=cancel_requested, paused=paused, killed=killed)
    returned = [(row[0], row[1]) for row in returned]
    steps = []
    for (step_id, seq), (payload, _, _, fields) in zip(returned, rows, strict=True):
        step = Step(id=step_id, run_id=run_id, seq=seq, payload=payload, created_at=now, **fields)
        step._state.adding = False
        steps.append(step)
    return steps


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
    live.broadcast(f"run-{run_id}", {"type": "step.created", "run_id": run_id, "seq": seq, "kind": kind})
    live.broadcast("overview", {"type": "run.changed", "run_id": run_id, "seq": seq, "kind": kind})
