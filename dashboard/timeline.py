"""What the run page shows: a window of steps (never all 10,000), each turned into a display row,
and the budget bars. Shared by the page, its fragments, the consumer and the API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from agentops.runs.models import Run, Step

WINDOW = 100  # steps per page of the timeline
MAX_CATCH_UP = 500  # steps a consumer sends per message


def steps_window(run_id: int, *, before: int | None = None, after: int | None = None, limit: int = WINDOW) -> list[Step]:
    """At most `limit` steps in seq order: the newest (default), those before a seq (scrolling
    back) or those after a seq (live catch-up). One indexed query on (run, seq)."""
    steps = Step.objects.filter(run_id=run_id)
    if after is not None:
        return list(steps.filter(seq__gt=after).order_by("seq")[:limit])
    if before is not None:
        steps = steps.filter(seq__lt=before)
    return list(reversed(steps.order_by("-seq")[:limit]))


@dataclass
class StepRow:
    seq: int
    kind: str
    at: datetime
    title: str
    css: str
    meta: str
    text: str
    truncated: int
    text_field: str
    data: str  # pretty JSON of what else the step carries
    open: bool = False  # show the data unfolded (arguments of actions)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


_TEXT_FIELDS = ("text", "output", "report", "summary", "diff", "content_text", "message", "reason", "comment")
_CSS = {
    "input": "k-input",
    "model_call": "k-model",
    "tool_call": "k-tool",
    "observation": "k-obs",
    "guardrail": "k-guard",
    "alarm": "k-guard",
    "approval_request": "k-approval",
    "approval_decision": "k-approval",
    "gate": "k-gate",
    "output": "k-output",
    "error": "k-error",
    "status": "k-status",
}


def step_row(step: Step) -> StepRow:
    payload = dict(step.payload or {})
    kind = step.kind
    tool = payload.get("tool") or payload.get("name") or ""
    title = kind.replace("_", " ").capitalize()
    meta = ""
    css = _CSS.get(kind, "k-other")
    if kind == "model_call":
        title = f"Model turn · {step.model_id or payload.get('model', '')}".rstrip(" ·")
        meta = f"{step.input_tokens:,} in / {step.output_tokens:,} out · ${step.cost_usd:.4f} · {step.latency_ms} ms"
    elif kind == "tool_call":
        title = f"Tool call · {tool}"
    elif kind == "observation":
        title = f"Observation · {tool}" if tool else "Observation"
        if payload.get("is_error"):
            css += " is-error"
    elif kind == "approval_request":
        title = f"Approval requested · {tool}"
        meta = f"{payload.get('risk_class', '')} · {payload.get('why_needed', '')}".strip(" ·")
    elif kind == "approval_decision":
        title = f"Approval {payload.get('status', '')} by {payload.get('by', '')}"
        if payload.get("status") in ("rejected", "expired"):
            css += " is-error"
    elif kind == "gate":
        name = payload.get("gate") or payload.get("name") or ""
        passed = payload.get("passed")
        title = f"Gate {name} · {'passed' if passed else 'failed' if passed is not None else ''}".rstrip(" ·")
        if passed is False:
            css += " is-error"
    elif kind == "status":
        title = f"Status → {payload.get('status', '')}"
        if payload.get("status") in ("failed", "killed", "budget_exceeded", "rejected"):
            css += " is-error"
    elif kind in ("guardrail", "alarm"):
        what = payload.get("guardrail") or payload.get("limit") or payload.get("name") or ""
        title = f"{'Guardrail' if kind == 'guardrail' else 'Alarm'} · {what}".rstrip(" ·")
    text, text_field = "", ""
    for name in _TEXT_FIELDS:
        if isinstance(payload.get(name), str) and payload[name]:
            text, text_field = payload.pop(name), name
            break
    truncated = int(payload.pop(f"{text_field}_truncated", 0) or 0) if text_field else 0
    for drop in ("tool", "name", "status", "by", "risk_class", "why_needed"):
        if drop in payload and kind in ("tool_call", "observation", "approval_request", "approval_decision", "status"):
            payload.pop(drop)
    if kind in ("tool_call", "approval_request") and isinstance(payload.get("arguments"), dict):
        # The arguments are what a person checks: show them as they are, not wrapped.
        payload = payload.pop("arguments")
    return StepRow(
        seq=step.seq,
        kind=kind,
        at=step.created_at,
        title=title,
        css=css,
        meta=meta,
        text=text,
        truncated=truncated,
        text_field=text_field,
        data=_pretty(payload) if payload else "",
        open=kind in ("tool_call", "approval_request", "gate", "guardrail", "alarm", "error"),
    )


@dataclass
class Bar:
    label: str
    value: str
    cap: str
    pct: float
    alarm_pct: float | None
    css: str


def _bar(label: str, value: float | Decimal, cap: float | Decimal | None, alarm: float | Decimal | None, fmt: str) -> Bar:
    cap_f = float(cap) if cap else 0.0
    pct = min(100.0, float(value) / cap_f * 100) if cap_f else 0.0
    alarm_pct = min(100.0, float(alarm) / cap_f * 100) if cap_f and alarm else None
    css = "bad" if cap_f and float(value) >= cap_f else "warn" if (alarm and float(value) >= float(alarm)) or pct >= 80 else "ok"
    return Bar(label, fmt.format(value), fmt.format(cap) if cap else "no cap", round(pct, 1), alarm_pct, css)


def budget_bars(run: Run, policy: Any) -> list[Bar]:
    if policy is None:
        return []
    return [
        _bar("Tokens", run.total_tokens, policy.max_tokens, policy.alarm_tokens, "{:,}"),
        _bar("Cost", run.cost_usd, policy.max_cost_usd, policy.alarm_cost_usd, "${:.4f}"),
        _bar("Tool calls", run.tool_calls, policy.max_tool_calls, policy.alarm_tool_calls, "{:,}"),
        _bar("Iterations", run.iterations, policy.max_iterations, policy.alarm_iterations, "{:,}"),
        _bar("Time", round(run.active_seconds), policy.max_wall_clock_s, policy.alarm_wall_clock_s, "{:,} s"),
    ]


def policy_of(agent: Any) -> Any:
    from django.core.exceptions import ObjectDoesNotExist

    try:
        return agent.policy
    except ObjectDoesNotExist:
        return None


def run_diff(run: Run) -> str:
    """The change a run produced: from its result, else none (the PR link carries the rest)."""
    result = run.result or {}
    for key in ("diff", "patch"):
        if isinstance(result.get(key), str) and result[key]:
            return result[key]
    pr = result.get("pull_request")
    if isinstance(pr, dict) and isinstance(pr.get("diff"), str):
        return pr["diff"]
    return ""
