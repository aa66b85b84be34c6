"""The one JSON shape of a Run and of a Step, shared by the API, the CLI (`agentops trace`) and anything
else that shows them outside the browser: a field added here shows up everywhere at once."""

from __future__ import annotations

from typing import Any, TypedDict

from agentops.runs.models import Run, Step
from agentops.runs.steps import step_full_text


class RunDict(TypedDict):
    id: int
    agent: str
    status: str
    status_reason: str
    outcome: str
    outcome_detail: str
    trigger_kind: str
    input: str
    model: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    tokens: int
    cost_usd: str
    tool_calls: int
    iterations: int
    steps: int
    result: Any
    url: str


def run_to_dict(run: Run) -> RunDict:
    return {
        "id": run.pk,
        "agent": run.agent.slug,
        "status": run.status,
        "status_reason": run.status_reason,
        "outcome": run.outcome,
        "outcome_detail": run.outcome_detail,
        "trigger_kind": run.trigger_kind,
        "input": run.input,
        "model": run.model,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "tokens": run.total_tokens,
        "cost_usd": str(run.cost_usd),
        "tool_calls": run.tool_calls,
        "iterations": run.iterations,
        "steps": run.next_seq - 1,
        "result": run.result,
        "url": f"/runs/{run.pk}/",
    }


class StepDict(TypedDict):
    seq: int
    kind: str
    payload: dict[str, Any]
    model_id: str
    input_tokens: int
    output_tokens: int
    cost_usd: str
    latency_ms: int | None
    created_at: str


def step_payload(step: Step, *, full_text: bool = False) -> dict[str, Any]:
    """The step's payload; with ``full_text``, each field stored truncated is replaced by its full text
    (the ``<field>_truncated`` markers go), as an export wants it."""
    payload = dict(step.payload)
    if full_text:
        for name in list(payload):
            if name.endswith("_truncated"):
                field = name[: -len("_truncated")]
                payload[field] = step_full_text(step, field)
                del payload[name]
    return payload


def step_to_dict(step: Step, *, full_text: bool = False) -> StepDict:
    return {
        "seq": step.seq,
        "kind": step.kind,
        "payload": step_payload(step, full_text=full_text),
        "model_id": step.model_id,
        "input_tokens": step.input_tokens,
        "output_tokens": step.output_tokens,
        "cost_usd": str(step.cost_usd),
        "latency_ms": step.latency_ms,
        "created_at": step.created_at.isoformat(),
    }
