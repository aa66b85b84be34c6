"""What the run page shows: a window of steps (never all 10,000), each turned into a display row,
and the budget bars. Shared by the page, its fragments, the consumer and the API."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Count, Min, Q
from django.utils import timezone

from agentops.guardrails.budgets import run_budget
from agentops.runs.models import Run, Step, StepKind

WINDOW = 100  # steps per page of the timeline
MAX_CATCH_UP = 500  # steps a consumer sends per message


def steps_window(run_id: int, *, before: int | None = None, after: int | None = None, around: int | None = None, limit: int = WINDOW) -> list[Step]:
    """At most `limit` steps in seq order: the newest (default), those before a seq (scrolling
    back), those after a seq (live catch-up) or those around a seq (a jump to the first error).
    One indexed query on (run, seq)."""
    steps = Step.objects.filter(run_id=run_id)
    if around is not None:
        # Start a little before the step, at its model turn if that is close.
        return list(steps.filter(seq__gte=max(1, around - 10)).order_by("seq")[:limit])
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
    if kind in ("observation", "guardrail"):
        # Bookkeeping of the controller, not evidence: the nesting already shows which call it
        # answers, the error pill shows is_error. The sandbox backend stays, as a small label.
        for internal in ("tool_call_id", "counts_for_loops", "is_error"):
            payload.pop(internal, None)
        backend = payload.pop("sandbox", None)
        if isinstance(backend, str) and backend:
            meta = f"sandbox: {backend[:40]}"
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
    # The caps the controller enforces on this run: the policy's, plus extensions a person granted it.
    b = run_budget(run, policy)
    return [
        _bar("Tokens", run.total_tokens, b.max_tokens, b.alarm_tokens, "{:,}"),
        _bar("Cost", run.cost_usd, b.max_cost_usd, b.alarm_cost_usd, "${:.4f}"),
        _bar("Tool calls", run.tool_calls, b.max_tool_calls, b.alarm_tool_calls, "{:,}"),
        _bar("Iterations", run.iterations, b.max_iterations, b.alarm_iterations, "{:,}"),
        _bar("Time", round(run.active_seconds), b.max_wall_clock_s, b.alarm_wall_clock_s, "{:,} s"),
    ]


def policy_of(agent: Any) -> Any:
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


# --- the trace: model turns as spans, with their tool calls and observations nested -----------------

# Kinds that open a new top-level span; everything else nests under the model turn before it.
_TOP_LEVEL = ("input", "status", "output")
# Kinds a person jumps to: the first of each is linked from the trace header.
JUMP_KINDS = ("error", "guardrail", "gate_failed")
_FILE_WRITE_TOOLS = ("write_file", "apply_patch")
_TEST_TOOLS = ("run_tests", "run_command")
_FAIL_LINE = re.compile(r"^(FAILED|ERROR)\b|^E\s{2,}|^\S+:\d+: \w*(Error|Exception)\b")
_SUMMARY_LINE = re.compile(r"^=+ .*\b(failed|passed|error|errors|no tests ran)\b.* =+$")
CLAMP_LINES = 24  # a payload longer than this is shown clamped, with a button to see all of it


@dataclass
class Span:
    """One node of the trace: a step, with the steps it caused nested under it."""

    row: StepRow
    render: str  # turn | tool | event | top
    start: datetime
    end: datetime
    duration_ms: int | None = None
    children: list[Span] = field(default_factory=list)
    result: Span | None = None  # a tool call's observation
    offset_pct: int = 0
    width_pct: int = 1
    call_id: str = ""
    tool: str = ""
    is_error: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal("0")
    diff: str = ""  # a file write shown as a diff
    diff_path: str = ""
    failures: str = ""  # test output: the failing part, shown first
    gate: dict[str, Any] | None = None
    clamp: bool = False

    @property
    def seq(self) -> int:
        return self.row.seq

    @property
    def kind(self) -> str:
        return self.row.kind

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def tool_count(self) -> int:
        return sum(1 for c in self.children if c.render == "tool")

    @property
    def error_count(self) -> int:
        return sum(1 for c in self.children if c.is_error or (c.result is not None and c.result.is_error))


def _write_diff(tool: str, arguments: Any) -> tuple[str, str]:
    """A file write as a unified diff: a patch as it is; whole new content as added lines."""
    if not isinstance(arguments, dict):
        return "", ""
    if tool == "apply_patch" and isinstance(arguments.get("patch"), str):
        return arguments["patch"], ""
    if tool == "write_file" and isinstance(arguments.get("content"), str):
        path = str(arguments.get("path", "file"))
        lines = arguments["content"].splitlines()
        body = "\n".join("+" + line for line in lines)
        return f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n{body}", path
    return "", ""


def test_failures(output: str, *, limit: int = 60) -> str:
    """The part of a test run's output a person needs first: the summary line, the failing tests
    and the assertion lines; empty when nothing failed."""
    lines = output.splitlines()
    picked: list[str] = []
    summary = ""
    for line in lines:
        stripped = line.rstrip()
        if _SUMMARY_LINE.match(stripped.strip()):
            summary = stripped.strip("= ").strip()
        elif _FAIL_LINE.search(stripped) and stripped not in picked:
            picked.append(stripped)
    if not picked and not (summary and re.search(r"\b(failed|error)", summary)):
        return ""
    head = [summary] if summary else []
    extra = len(picked) - limit
    return "\n".join(head + picked[:limit] + ([f"… {extra} more lines"] if extra > 0 else []))


def _gate(payload: dict[str, Any]) -> dict[str, Any]:
    raw_evidence, raw_flags = payload.get("evidence"), payload.get("flags")
    evidence: dict[Any, Any] = raw_evidence if isinstance(raw_evidence, dict) else {}
    flags: list[Any] = raw_flags if isinstance(raw_flags, list) else []
    return {
        "name": str(payload.get("gate") or payload.get("name") or "?"),
        "passed": payload.get("passed") is True,
        "detail": str(payload.get("detail", "")),
        "flags": [f if isinstance(f, str) else _pretty(f) for f in flags],
        "evidence": [(str(k), v if isinstance(v, str) else _pretty(v)) for k, v in sorted(evidence.items())],
    }


def _span_of(step: Step, row: StepRow, render: str, prev_end: datetime | None) -> Span:
    payload = step.payload if isinstance(step.payload, dict) else {}
    end = step.created_at
    span = Span(row=row, render=render, start=end, end=end)
    span.tool = str(payload.get("tool") or payload.get("name") or "")
    span.call_id = str(payload.get("tool_call_id") or "")
    span.is_error = bool(payload.get("is_error")) or step.kind == "error" or (step.kind == "gate" and payload.get("passed") is False)
    if step.kind == "model_call":
        span.duration_ms = step.latency_ms or None
        span.start = end - timedelta(milliseconds=step.latency_ms or 0)
        span.input_tokens, span.output_tokens, span.cost_usd = step.input_tokens, step.output_tokens, step.cost_usd
    elif step.kind == "observation":
        # The tool ran between the step before it and this one (a read and its call are one commit).
        recorded = payload.get("duration_ms")
        if isinstance(recorded, int | float) and recorded >= 0:
            span.duration_ms = int(recorded)
            span.start = end - timedelta(milliseconds=int(recorded))
        elif prev_end is not None and prev_end <= end:
            span.start = prev_end
            span.duration_ms = int((end - prev_end).total_seconds() * 1000)
        if span.tool in _TEST_TOOLS and isinstance(payload.get("output"), str):
            span.failures = test_failures(payload["output"])
    elif step.kind in ("tool_call", "approval_request"):
        span.diff, span.diff_path = _write_diff(span.tool, payload.get("arguments"))
    elif step.kind == "gate":
        span.gate = _gate(payload)
    span.clamp = row.text.count("\n") >= CLAMP_LINES or len(row.text) > 3000
    return span


def build_trace(steps: list[Step], *, t0: datetime | None = None, t1: datetime | None = None, prev_end: datetime | None = None) -> list[Span]:
    """Nest a window of steps: each model turn a span with its tool calls (their observation
    inside) and events under it; input and status stay at the top. Pure: no query."""
    roots: list[Span] = []
    turn: Span | None = None
    calls: dict[str, Span] = {}
    every_call: dict[str, Span] = {}  # answered ones too: a guardrail may follow the observation
    for step in steps:
        row = step_row(step)
        guarded = str((step.payload or {}).get("tool_call_id") or "") if step.kind == "guardrail" and isinstance(step.payload, dict) else ""
        if guarded and guarded in every_call:
            # A guardrail that refused one call sits under that call, not loose in the turn.
            every_call[guarded].children.append(_span_of(step, row, "event", prev_end))
            prev_end = step.created_at
            continue
        if step.kind == "model_call":
            turn = _span_of(step, row, "turn", prev_end)
            roots.append(turn)
        elif step.kind in ("tool_call",):
            span = _span_of(step, row, "tool", prev_end)
            if span.call_id:
                calls[span.call_id] = span
                every_call[span.call_id] = span
            (turn.children if turn else roots).append(span)
        elif step.kind == "observation" and str((step.payload or {}).get("tool_call_id") or "") in calls:
            span = _span_of(step, row, "result", prev_end)
            owner = calls.pop(span.call_id)
            owner.result = span
            owner.end, owner.duration_ms, owner.is_error = span.end, span.duration_ms, span.is_error
            owner.start = min(owner.start, span.start)
        elif step.kind in _TOP_LEVEL:
            roots.append(_span_of(step, row, "top", prev_end))
            turn = None if step.kind == "status" else turn
        else:
            # An observation whose call is outside the window (or was refused before it was recorded)
            # stands alone, with its duration.
            span = _span_of(step, row, "event", prev_end)
            (turn.children if turn else roots).append(span)
        prev_end = step.created_at
    for root in roots:
        if root.render == "turn" and root.children:
            root.end = max([root.end] + [c.end for c in root.children])
            root.duration_ms = int((root.end - root.start).total_seconds() * 1000)
    _place(roots, t0, t1)
    return roots


def _place(roots: list[Span], t0: datetime | None, t1: datetime | None) -> None:
    """Waterfall offsets and widths, in whole percents of the run's time (the CSS allows no inline style)."""
    every = [s for r in roots for s in [r, *r.children]]
    if not every:
        return
    t0 = t0 or min(s.start for s in every)
    t1 = max([s.end for s in every] + ([t1] if t1 else []))
    total = max((t1 - t0).total_seconds(), 0.001)
    for span in every:
        offset = (span.start - t0).total_seconds() / total * 100
        width = (span.end - span.start).total_seconds() / total * 100
        span.offset_pct = max(0, min(99, int(offset)))
        span.width_pct = max(1, min(100 - span.offset_pct, round(width)))


@dataclass
class TraceSummary:
    counts: dict[str, int]
    first: dict[str, int | None]  # the first error / guardrail / failed gate of the whole run


def trace_summary(run_id: int) -> TraceSummary:
    """Counts per kind and the first error, guardrail and failed gate of the whole run: one
    aggregate query over the run's (run, seq) index, however long the run."""
    kinds = [k for k, _ in StepKind.choices]
    aggregates: dict[str, Any] = {f"n_{k}": Count("id", filter=Q(kind=k)) for k in kinds}
    aggregates["first_error"] = Min("seq", filter=Q(kind="error") | Q(kind="observation", payload__is_error=True))
    aggregates["first_guardrail"] = Min("seq", filter=Q(kind="guardrail"))
    aggregates["first_gate_failed"] = Min("seq", filter=Q(kind="gate", payload__passed=False))
    row = Step.objects.filter(run_id=run_id).aggregate(**aggregates)
    return TraceSummary(
        counts={k: row[f"n_{k}"] for k in kinds if row[f"n_{k}"]},
        first={"error": row["first_error"], "guardrail": row["first_guardrail"], "gate_failed": row["first_gate_failed"]},
    )


def live_spans(run: Run, steps: list[Step]) -> list[Span]:
    """Each new step as its own span, for the live view (the browser nests it under its turn or
    its call): durations from the step before each, the waterfall on the run's axis so far."""
    if not steps:
        return []
    before = Step.objects.filter(run_id=run.pk, seq=steps[0].seq - 1).values_list("created_at", flat=True).first()
    t0 = run.started_at or run.created_at
    t1 = run.finished_at or timezone.now()
    spans = []
    prev_end = before
    for step in steps:
        render = "turn" if step.kind == "model_call" else "tool" if step.kind == "tool_call" else "top" if step.kind in _TOP_LEVEL else "event"
        span = _span_of(step, step_row(step), render, prev_end)
        spans.append(span)
        prev_end = step.created_at
    _place(spans, t0, t1)
    return spans
