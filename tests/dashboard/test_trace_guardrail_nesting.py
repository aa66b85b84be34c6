"""The run trace: a guardrail that refused one tool call sits under that call, and an observation's
details fold hides the controller's bookkeeping (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentops.runs.models import Step
from dashboard.timeline import build_trace, step_row

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def step(seq: int, kind: str, payload: dict, **fields: object) -> Step:
    return Step(seq=seq, kind=kind, payload=payload, created_at=T0 + timedelta(seconds=seq), **fields)


def test_a_guardrail_that_refused_a_call_sits_under_that_call():
    steps = [
        step(1, "model_call", {"text": "two calls"}, latency_ms=100),
        step(2, "tool_call", {"tool_call_id": "a", "tool": "run_shell", "arguments": {"cmd": "ls"}}),
        step(3, "tool_call", {"tool_call_id": "b", "tool": "http_get", "arguments": {"url": "https://evil.example"}}),
        step(4, "guardrail", {"guardrail": "network_scope", "tool_call_id": "b", "reason": "domain not in scope"}),
        step(5, "observation", {"tool_call_id": "b", "tool": "http_get", "output": "refused", "is_error": True}),
        step(6, "guardrail", {"guardrail": "turn_budget", "reason": "a guardrail of the turn"}),
    ]
    [turn] = build_trace(steps)
    tools = [c for c in turn.children if c.render == "tool"]
    assert [t.call_id for t in tools] == ["a", "b"]
    assert [g.seq for g in tools[1].children] == [4] and tools[0].children == []
    assert tools[1].result is not None and tools[1].result.seq == 5
    # the guardrail without a call stays under its turn; the nested one is not also there
    assert [c.seq for c in turn.children if c.kind == "guardrail"] == [6]


def test_a_guardrail_for_a_call_outside_the_window_stays_under_its_turn():
    steps = [step(1, "model_call", {}, latency_ms=5), step(2, "guardrail", {"guardrail": "scope", "tool_call_id": "gone"})]
    [turn] = build_trace(steps)
    assert [c.seq for c in turn.children] == [2]


def test_an_observation_details_fold_hides_internal_keys_and_labels_the_sandbox():
    row = step_row(
        step(
            7,
            "observation",
            {"tool_call_id": "call_1", "tool": "run_tests", "output": "ok", "is_error": False, "counts_for_loops": False, "sandbox": "docker", "exit_code": 0},
        )
    )
    assert "tool_call_id" not in row.data and "counts_for_loops" not in row.data and "sandbox" not in row.data
    assert "exit_code" in row.data and row.meta == "sandbox: docker"


def test_the_run_page_renders_a_nested_guardrail_inside_its_call(team, agent):
    from helpers_dashboard import client_for, make_run

    from agentops.runs.models import RunStatus
    from agentops.runs.steps import step_record

    run = make_run(agent, status=RunStatus.SUCCEEDED, steps=0)
    step_record(run=run, kind="model_call", payload={"text": "fetch it"})
    step_record(run=run, kind="tool_call", payload={"tool_call_id": "c9", "tool": "http_get", "arguments": {"url": "https://x.example"}})
    guard = step_record(run=run, kind="guardrail", payload={"guardrail": "network_scope", "tool_call_id": "c9", "reason": "not in scope"})
    html = client_for(team.viewer).get(f"/runs/{run.pk}/").content.decode()
    call_at = html.index('data-call-id="c9"')
    guard_at = html.index(f'id="step-{guard.seq}"')
    result_start = html.index('<ol class="result">', call_at)
    assert result_start < guard_at < html.index("</ol>", result_start)
