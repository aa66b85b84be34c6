"""Runs on the real anthropic SDK, against a local server speaking the Messages API."""

from __future__ import annotations

import pytest

from agentops.runs.models import StepKind
from tests.fakes.anthropic_server import FakeAnthropic, error, message, tool_use


@pytest.fixture
def anthropic_settings(settings):
    settings.ANTHROPIC_API_KEY = "sk-ant-test-" + "k" * 30
    settings.ANTHROPIC_BACKOFF_S = 0.01
    settings.ANTHROPIC_TIMEOUT_S = 5
    return settings


def test_a_run_on_claude_records_tokens_cost_and_the_tool_loop(make_agent, start_run, anthropic_settings):
    with FakeAnthropic(
        [message("I will look.", [tool_use("test_echo", {"text": "pong"}, id="toolu_1")], input_tokens=1000, output_tokens=200), message("Fixed.")]
    ) as fake:
        anthropic_settings.ANTHROPIC_BASE_URL = fake.base_url
        agent = make_agent(config={"planner": "anthropic"}, grants={"test_echo": {}})
        run = start_run(agent, planner_kind="anthropic")
        assert run.status == "failed" and run.outcome == "no_change", run.status_reason
        first = run.steps.filter(kind=StepKind.MODEL_CALL).first()
        assert first.input_tokens == 1000 and first.output_tokens == 200 and first.cost_usd > 0
        assert first.payload["scripted"] is False
        assert run.cost_usd == sum(s.cost_usd for s in run.steps.filter(kind=StepKind.MODEL_CALL))
        # The second request carried the tool result for the first request's tool_use.
        second = fake.requests[1].body
        results = second["messages"][-1]["content"]
        assert results[0]["type"] == "tool_result" and results[0]["tool_use_id"] == "toolu_1"
        assert results[0]["content"] == "pong" or results[0]["content"][0]["text"] == "pong"
        assert [t["name"] for t in second["tools"]] == ["test_echo"]
        assert second["system"][0]["text"] == agent.objective if isinstance(second["system"], list) else second["system"] == agent.objective


def test_retries_are_recorded_and_counted_against_the_budget(make_agent, start_run, anthropic_settings):
    with FakeAnthropic([error(529), error(500), message("done")]) as fake:
        anthropic_settings.ANTHROPIC_BASE_URL = fake.base_url
        agent = make_agent(config={"planner": "anthropic"})
        run = start_run(agent, planner_kind="anthropic")
        assert run.outcome == "no_change", run.status_reason
        retries = run.steps.filter(kind=StepKind.RETRY)
        assert [r.payload["status"] for r in retries] == [529, 500]
        assert run.iterations == 3


def test_retries_stop_at_the_iteration_cap(make_agent, start_run, anthropic_settings):
    with FakeAnthropic([error(529)] * 10) as fake:
        anthropic_settings.ANTHROPIC_BASE_URL = fake.base_url
        agent = make_agent(config={"planner": "anthropic"}, policy={"max_iterations": 2})
        run = start_run(agent, planner_kind="anthropic")
        assert run.status == "budget_exceeded"
        assert len(fake.requests) == 2


def test_a_malformed_model_response_becomes_an_error_step_not_a_crash(make_agent, start_run, anthropic_settings):
    from tests.fakes.anthropic_server import malformed_json

    with FakeAnthropic([malformed_json()]) as fake:
        anthropic_settings.ANTHROPIC_BASE_URL = fake.base_url
        run = start_run(make_agent(config={"planner": "anthropic"}), planner_kind="anthropic")
        assert run.status == "failed" and "malformed" in run.status_reason
        assert run.steps.filter(kind=StepKind.ERROR).exists()


def test_a_model_without_a_price_is_refused_before_any_request(make_agent, start_run, anthropic_settings):
    with FakeAnthropic([message("hi")]) as fake:
        anthropic_settings.ANTHROPIC_BASE_URL = fake.base_url
        run = start_run(make_agent(config={"planner": "anthropic"}, model="claude-unknown-9"), planner_kind="anthropic")
        assert run.status == "failed" and "unknown_price" in run.status_reason
        assert fake.requests == []


def test_a_long_conversation_is_compacted_and_the_model_sees_the_summary(make_agent, start_run, anthropic_settings, monkeypatch):
    from agentops.runs import controller

    monkeypatch.setattr(controller, "COMPACTION_THRESHOLD", 0.0)
    replies = [message(f"step {i}", [tool_use("test_echo", {"text": f"r{i}"}, id=f"toolu_{i}")]) for i in range(3)] + [message("done")]
    with FakeAnthropic(replies) as fake:
        anthropic_settings.ANTHROPIC_BASE_URL = fake.base_url
        run = start_run(make_agent(config={"planner": "anthropic"}, grants={"test_echo": {}}), planner_kind="anthropic")
        assert run.outcome == "no_change", run.status_reason
        compaction = run.steps.filter(kind=StepKind.COMPACTION).last()
        assert "you called test_echo" in compaction.payload["summary"]
        last = fake.requests[-1].body["messages"]
        first_text = last[0]["content"] if isinstance(last[0]["content"], str) else last[0]["content"][0]["text"]
        assert "Summary of earlier work" in first_text
        assert len(last) <= 3
