"""The guards the controller asks in order, each on plain data where it can be."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from agentops.guardrails.budgets import Budget
from agentops.guardrails.caps import RunCaps
from agentops.guardrails.rate import RateLimit
from agentops.guardrails.stop_state import StopState, stop_from


def budget(**overrides: object) -> Budget:
    fields: dict[str, object] = {
        "max_tokens": 1000,
        "max_cost_usd": Decimal("1"),
        "max_iterations": 10,
        "max_tool_calls": 5,
        "max_wall_clock_s": 60,
        "alarm_tokens": 800,
        "alarm_cost_usd": None,
        "alarm_iterations": None,
        "alarm_tool_calls": 4,
        "alarm_wall_clock_s": None,
        "source": "policy",
    }
    fields.update(overrides)
    return Budget(**fields)


def run(**values: object) -> SimpleNamespace:
    base: dict[str, object] = {"total_tokens": 0, "cost_usd": Decimal("0"), "iterations": 0, "tool_calls": 0}
    base.update(values)
    return SimpleNamespace(**base)


def test_the_kill_switch_wins_over_a_pause_and_a_pause_over_a_persons_stop():
    assert stop_from({"killed": True, "paused": True, "cancel_requested": True}).guard == "kill_switch"
    assert stop_from({"killed": False, "paused": True, "cancel_requested": True}).guard == "paused"
    assert stop_from({"killed": False, "paused": False, "cancel_requested": True}).guard == "stopped_by_person"
    assert stop_from({"killed": False, "paused": False, "cancel_requested": False}) is None


def test_the_state_a_step_write_saw_answers_the_next_check_once_only():
    state = StopState(run_id=0)
    state.saw({"killed": True, "paused": False, "cancel_requested": False})
    stop = state.check()
    assert stop is not None and stop.guard == "kill_switch" and stop.final_outcome == "killed_by_switch"
    assert state._seen_by_write is None, "the next check must read the database again"


def test_a_counted_measure_stops_only_before_the_call_that_would_pass_it():
    caps = RunCaps(budget(), [])
    at_cap = run(tool_calls=5, iterations=10)
    assert caps.check(at_cap, 0, "after").cap is None
    assert caps.check(at_cap, 0, "model").cap.measure == "iterations"
    assert caps.check(at_cap, 0, "tool").cap.measure == "tool_calls"


def test_a_spent_measure_stops_at_its_cap_whatever_comes_next():
    verdict = RunCaps(budget(), []).check(run(cost_usd=Decimal("1")), 0, "after")
    assert verdict.cap is not None and verdict.cap.measure == "cost_usd" and verdict.cap.limit == Decimal("1")
    assert RunCaps(budget(), []).check(run(), 61, "after").cap.measure == "wall_clock_s"


def test_an_alarm_is_raised_once_and_not_again_after_a_takeover():
    caps = RunCaps(budget(), [])
    first = caps.check(run(total_tokens=900, tool_calls=4), 0, "after")
    assert [(a.measure, a.value, a.limit) for a in first.alarms] == [("tokens", 900, 800), ("tool_calls", 4, 4)]
    assert caps.mark_raised("tokens") == ["tokens"] and caps.mark_raised("tool_calls") == ["tokens", "tool_calls"]
    assert caps.check(run(total_tokens=950, tool_calls=4), 0, "after").alarms == []
    assert RunCaps(budget(), ["tokens"]).check(run(total_tokens=900), 0, "after").alarms == []


def test_alarms_past_the_measure_that_stops_the_run_are_not_raised():
    verdict = RunCaps(budget(), []).check(run(total_tokens=1000, tool_calls=4), 0, "after")
    assert verdict.cap is not None and verdict.cap.measure == "tokens"
    assert [a.measure for a in verdict.alarms] == ["tokens"]


def test_the_rate_limit_waits_until_the_oldest_call_of_the_minute_leaves_the_window():
    rate = RateLimit(2, [100.0])
    assert rate.wait_s(110.0) is None
    rate.note(110.0)
    assert rate.wait_s(120.0) == 40.0
    assert rate.wait_s(161.0) is None and list(rate.started) == [110.0]
    assert RateLimit(None, [1.0] * 100).wait_s(2.0) is None
