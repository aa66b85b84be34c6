"""The controller loop and its guards, driven by the scripted planner in this process."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agentops.runs.models import Run, Step, StepKind, ToolExecution
from tests.conftest import step_kinds
from tests.support.tools import lines


def call(name: str, **arguments: Any) -> dict:
    return {"name": name, "arguments": arguments}


def turn(*calls: dict, text: str = "thinking", **tokens: int) -> dict:
    return {"text": text, "tool_calls": list(calls), **tokens}


def guardrails(run: Run) -> list[dict]:
    return [s.payload for s in run.steps.filter(kind=StepKind.GUARDRAIL).order_by("seq")]


def observations(run: Run) -> list[dict]:
    return [s.payload for s in run.steps.filter(kind=StepKind.OBSERVATION).order_by("seq")]


def test_it_runs_an_agent_to_success_recording_every_step_in_order(make_agent, start_run):
    agent = make_agent(script=[turn(call("test_echo", text="hi")), {"text": "done"}], grants={"test_echo": {}})
    run = start_run(agent)
    # Only a read: the agent finished, but achieved nothing, and the run says so.
    assert run.status == "failed" and run.outcome == "no_change", run.status_reason
    assert step_kinds(run) == ["input", "model_call", "tool_call", "observation", "model_call", "status"]
    assert list(run.steps.values_list("seq", flat=True)) == [1, 2, 3, 4, 5, 6]
    assert run.iterations == 2 and run.tool_calls == 1
    tool_call = run.steps.get(kind=StepKind.TOOL_CALL).payload
    assert tool_call["arguments"] == {"text": "hi"}
    assert tool_call["idempotency_key"] == f"run-{run.pk}:toolu_scripted_0_0"
    assert observations(run)[0]["output"] == "hi"
    assert run.steps.get(seq=2).payload["scripted"] is True
    assert run.result["final_text"] == "done"


def test_it_refuses_a_tool_the_agent_has_no_grant_for(make_agent, start_run, tmp_path):
    ledger = tmp_path / "effects"
    agent = make_agent(script=[turn(call("test_append", text="x")), {"text": "done"}])
    run = start_run(agent)
    assert [g["guard"] for g in guardrails(run)] == ["no_grant"]
    assert observations(run)[0]["is_error"] is True
    assert not ledger.exists()
    assert run.status == "failed" and run.outcome == "refused" and "1 refused" in run.outcome_detail
    assert run.tool_calls == 1 and run.refused_calls == 1


def test_it_refuses_an_unknown_tool(make_agent, start_run):
    agent = make_agent(script=[turn(call("rm_rf", path="/")), {"text": "done"}])
    run = start_run(agent)
    assert guardrails(run)[0]["guard"] == "unknown_tool"


def test_it_returns_schema_errors_to_the_model_without_running_the_tool(make_agent, start_run, tmp_path):
    ledger = tmp_path / "effects"
    agent = make_agent(
        script=[turn(call("test_append", text=5, extra=True)), {"text": "done"}],
        grants={"test_append": {"path": str(ledger)}},
    )
    run = start_run(agent)
    obs = observations(run)[0]
    assert obs["is_error"] is True and "Invalid arguments" in obs["output"]
    assert not ledger.exists()
    assert not ToolExecution.objects.filter(run=run).exists()


def test_it_fails_closed_on_a_grant_whose_scope_does_not_parse(make_agent, start_run, tmp_path):
    agent = make_agent(script=[turn(call("test_append", text="x")), {"text": "done"}], grants={"test_append": {"path": 42}})
    run = start_run(agent)
    assert guardrails(run)[0]["guard"] == "bad_scope"
    assert not (tmp_path / "effects").exists()


def test_it_stops_at_the_tool_call_cap_before_the_call_that_would_pass_it(make_agent, start_run, tmp_path):
    ledger = tmp_path / "effects"
    script = [turn(call("test_append", text=str(i))) for i in range(5)]
    agent = make_agent(script=script, grants={"test_append": {"path": str(ledger)}}, policy={"max_tool_calls": 2})
    run = start_run(agent)
    assert run.status == "budget_exceeded"
    assert "tool_calls cap" in run.status_reason
    assert len(lines(ledger)) == 2
    assert run.tool_calls == 2


def test_it_stops_at_the_iteration_cap(make_agent, start_run):
    script = [turn(call("test_echo", text=str(i))) for i in range(10)]
    agent = make_agent(script=script, grants={"test_echo": {}}, policy={"max_iterations": 3})
    run = start_run(agent)
    assert run.status == "budget_exceeded" and "iterations" in run.status_reason
    assert run.iterations == 3


def test_it_stops_when_a_model_call_crosses_the_token_cap_before_acting_on_it(make_agent, start_run, tmp_path):
    ledger = tmp_path / "effects"
    script = [
        turn(call("test_append", text="a"), input_tokens=600, output_tokens=100),
        turn(call("test_append", text="b"), input_tokens=600, output_tokens=100),
    ]
    agent = make_agent(script=script, grants={"test_append": {"path": str(ledger)}}, policy={"max_tokens": 1000})
    run = start_run(agent)
    assert run.status == "budget_exceeded" and "tokens" in run.status_reason
    # The first turn's action ran; the second turn crossed the cap, so its action never did.
    assert [line.split()[1] for line in lines(ledger)] == ["a"]


def test_it_stops_at_the_cost_cap(make_agent, start_run):
    script = [turn(call("test_echo", text="x"), input_tokens=100_000, output_tokens=10_000) for _ in range(5)]
    agent = make_agent(script=script, grants={"test_echo": {}}, policy={"max_cost_usd": Decimal("0.5")})
    run = start_run(agent)
    assert run.status == "budget_exceeded" and "cost_usd" in run.status_reason
    assert Decimal("0.5") <= run.cost_usd < Decimal("1.5")


def test_it_stops_a_slow_tool_at_the_wall_clock_cap(make_agent, start_run):
    import time

    agent = make_agent(script=[turn(call("wait", seconds=30))], grants={"wait": {}}, policy={"max_wall_clock_s": 1})
    started = time.monotonic()
    run = start_run(agent)
    assert time.monotonic() - started < 5
    assert run.status == "budget_exceeded" and "wall_clock" in run.status_reason


def test_it_records_an_alarm_once_when_a_threshold_is_crossed(make_agent, start_run):
    script = [turn(call("test_echo", text=str(i))) for i in range(3)] + [{"text": "done"}]
    agent = make_agent(script=script, grants={"test_echo": {}}, policy={"alarm_tool_calls": 1})
    run = start_run(agent)
    assert run.status == "failed" and run.outcome == "no_change"
    alarms = run.steps.filter(kind=StepKind.ALARM)
    assert alarms.count() == 1 and alarms.first().payload["measure"] == "tool_calls"


def test_loop_detector_stops_the_same_failing_call_after_three_failures(make_agent, start_run):
    script = [turn(call("test_fail", what="x")) for _ in range(6)]
    agent = make_agent(script=script, grants={"test_fail": {}}, policy={"loop_escalation": "stop"})  # no nudge first
    run = start_run(agent)
    assert run.status == "failed" and "loop detected" in run.status_reason
    assert len(observations(run)) == 3


def test_loop_detector_stops_four_identical_action_observation_pairs(make_agent, start_run):
    script = [turn(call("test_echo", text="same")) for _ in range(8)]
    agent = make_agent(script=script, grants={"test_echo": {}}, policy={"loop_escalation": "stop"})  # no nudge first
    run = start_run(agent)
    assert run.status == "failed" and "identical" in run.status_reason
    assert len(observations(run)) == 4


def test_loop_detector_stops_an_a_b_a_b_pattern(make_agent, start_run):
    script = [turn(call("test_echo", text="a" if i % 2 == 0 else "b")) for i in range(8)]
    agent = make_agent(script=script, grants={"test_echo": {}}, policy={"loop_escalation": "stop"})  # no nudge first
    run = start_run(agent)
    assert run.status == "failed" and "A-B-A-B" in run.status_reason
    assert len(observations(run)) == 5


def test_secrets_in_tool_output_are_redacted_before_storage(make_agent, start_run):
    secret = "sk-ant-api03-" + "Z" * 40
    agent = make_agent(script=[turn(call("test_echo", text=f"key={secret}")), {"text": "done"}], grants={"test_echo": {}})
    run = start_run(agent)
    stored = observations(run)[0]["output"]
    assert secret not in stored and "[REDACTED]" in stored


def test_a_long_observation_is_truncated_in_the_row_and_whole_in_storage(make_agent, start_run):
    from agentops.runs.steps import ROW_TEXT_LIMIT, step_full_text

    agent = make_agent(script=[turn(call("test_echo", text="0123456789", repeat=1000)), {"text": "done"}], grants={"test_echo": {}})
    run = start_run(agent)
    step = run.steps.get(kind=StepKind.OBSERVATION)
    assert len(step.payload["output"]) == ROW_TEXT_LIMIT
    assert len(step_full_text(step, "output")) == 10_000


def test_the_conversation_rebuilt_from_steps_matches_the_live_one(make_agent, start_run):
    from agentops.runs.controller import RunLoop

    script = [turn(call("test_echo", text="a"), call("test_fail")), turn(call("test_echo", text="b")), {"text": "done"}]
    agent = make_agent(script=script, grants={"test_echo": {}, "test_fail": {}})
    run = start_run(agent, execute=False)
    from agentops.runs.controller import claim_run

    assert claim_run(run.pk, "w1")
    live = RunLoop(Run.objects.get(pk=run.pk), "w1")
    live.heartbeat.start()
    try:
        live.rebuild()
        live.loop()
    finally:
        live.heartbeat.stop()
    rebuilt = RunLoop(Run.objects.get(pk=run.pk), "w2")
    rebuilt.rebuild()
    assert rebuilt.messages == live.messages
    roles = [m["role"] for m in rebuilt.messages]
    assert roles == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert [b["tool_use_id"] for b in rebuilt.messages[2]["content"]] == ["toolu_scripted_0_0", "toolu_scripted_0_1"]


def test_budget_defaults_follow_history_unless_a_person_set_them(make_agent):
    from agentops.runs.controller import effective_budget

    agent = make_agent()
    for cost in ["0.10", "0.20", "0.30", "0.40", "0.50"]:
        Run.objects.create(agent=agent, status="succeeded", cost_usd=Decimal(cost))
    budget = effective_budget(agent.policy)
    assert budget.alarm_cost_usd == Decimal("3.00") and budget.max_cost_usd == Decimal("15.00")
    agent.policy.budget_set_by_person = True
    agent.policy.save()
    assert effective_budget(agent.policy).max_cost_usd == agent.policy.max_cost_usd


def test_a_paused_agent_starts_no_run(make_agent):
    from agentops.guardrails.killswitch import agent_pause
    from agentops.runs.services import RunRefused, run_create

    agent = make_agent()
    agent_pause(agent=agent, actor="test", reason="maintenance")
    with pytest.raises(RunRefused, match="paused"):
        run_create(agent=agent, input="x", enqueue=False)


def test_trace_command_prints_every_step_as_json_lines(make_agent, start_run, capsys):
    import json

    from django.core.management import call_command

    agent = make_agent(script=[turn(call("test_echo", text="hi")), {"text": "done"}], grants={"test_echo": {}})
    run = start_run(agent)
    call_command("agentops", "trace", str(run.pk), "--format", "jsonl")
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == list(Step.objects.filter(run=run).values_list("seq", flat=True))
    assert rows[2]["payload"]["tool"] == "test_echo"
