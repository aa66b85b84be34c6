"""AnthropicPlanner through the real `anthropic` SDK against FakeAnthropic over a real socket."""

from __future__ import annotations

import json
import socket
from decimal import Decimal

import pytest

from agentops.llm import PlannerError, RetryInfo, ToolCall, get_planner
from agentops.llm.anthropic_planner import AnthropicPlanner
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    delay,
    error,
    malformed_json,
    message,
    missing_content,
    raw,
    tool_use,
)

MODEL = "claude-sonnet-4-6"  # $3 in / $15 out / $3.75 cache write / $0.30 cache read
KEY = "sk-ant-test-0123"
SYSTEM = "You are the debugging agent. Fix the failing test."
TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file from the sandbox.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]
MESSAGES = [{"role": "user", "content": "ZeroDivisionError in app/stats.py line 12"}]


def planner(fake: FakeAnthropic, **kw) -> AnthropicPlanner:
    opts = dict(api_key=KEY, base_url=fake.base_url, timeout_s=5.0, backoff_base_s=0.001, backoff_max_s=0.01)
    opts.update(kw)
    return AnthropicPlanner(**opts)


def ask(p: AnthropicPlanner, **kw):
    args = dict(system=SYSTEM, messages=MESSAGES, tools=TOOLS, model=MODEL)
    args.update(kw)
    return p.next_turn(**args)


class Recorder:
    """An on_retry callback that records what it was told."""

    def __init__(self, answer: bool = True) -> None:
        self.calls: list[RetryInfo] = []
        self.answer = answer

    def __call__(self, info: RetryInfo) -> bool:
        self.calls.append(info)
        return self.answer


# -- a normal turn -------------------------------------------------------------------------------


def test_it_parses_a_tool_use_turn_with_usage_and_cost():
    reply = message(
        "I'll read the file first.",
        [tool_use("read_file", {"path": "app/stats.py"}, id="toolu_01"), tool_use("read_file", {"path": "t.py"}, id="toolu_02")],
        input_tokens=1000,
        output_tokens=200,
        cache_creation_input_tokens=300,
        cache_read_input_tokens=5000,
    )
    with FakeAnthropic([reply]) as fake:
        turn = ask(planner(fake))

    assert turn.text == "I'll read the file first."
    assert turn.tool_calls == [
        ToolCall(id="toolu_01", name="read_file", arguments={"path": "app/stats.py"}),
        ToolCall(id="toolu_02", name="read_file", arguments={"path": "t.py"}),
    ]
    assert turn.stop_reason == "tool_use"
    assert turn.model == MODEL
    assert (turn.input_tokens, turn.output_tokens, turn.cache_write_tokens, turn.cache_read_tokens) == (1000, 200, 300, 5000)
    # 1000*3 + 200*15 + 300*3.75 + 5000*0.30 = 8625 per million
    assert turn.cost_usd == Decimal("0.008625")
    assert turn.scripted is False
    assert turn.latency_ms >= 0
    assert turn.content == [
        {"type": "text", "text": "I'll read the file first."},
        {"type": "tool_use", "id": "toolu_01", "name": "read_file", "input": {"path": "app/stats.py"}},
        {"type": "tool_use", "id": "toolu_02", "name": "read_file", "input": {"path": "t.py"}},
    ]
    assert json.loads(json.dumps(turn.content)) == turn.content


def test_missing_cache_usage_counts_as_zero():
    reply = message("done", input_tokens=10, output_tokens=2, cache_creation_input_tokens=None, cache_read_input_tokens=None)
    with FakeAnthropic([reply]) as fake:
        turn = ask(planner(fake))
    assert (turn.cache_read_tokens, turn.cache_write_tokens) == (0, 0)
    assert turn.tool_calls == [] and turn.stop_reason == "end_turn"
    assert turn.cost_usd == Decimal("0.000060")  # 10*3 + 2*15 = 60 per million


def test_the_request_carries_model_system_tools_messages_and_api_key():
    with FakeAnthropic([message("ok")]) as fake:
        ask(planner(fake), max_tokens=777)

    assert len(fake.requests) == 1
    req = fake.requests[0]
    assert (req.method, req.path) == ("POST", "/v1/messages")
    assert req.api_key == KEY
    assert "anthropic-version" in req.headers
    assert req.headers.get("x-stainless-retry-count") == "0"  # the SDK's own retries are off
    body = req.body
    assert body["model"] == MODEL
    assert body["max_tokens"] == 777
    assert body["tools"] == TOOLS
    assert body["system"] == [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": MESSAGES[0]["content"], "cache_control": {"type": "ephemeral"}}],
        }
    ]
    assert MESSAGES[0]["content"] == "ZeroDivisionError in app/stats.py line 12"  # caller's list untouched


def test_without_prompt_caching_it_sends_system_and_messages_as_given():
    with FakeAnthropic([message("ok")]) as fake:
        ask(planner(fake, cache_prompt=False), tools=[])
    body = fake.requests[0].body
    assert body["system"] == SYSTEM
    assert body["messages"] == MESSAGES
    assert "tools" not in body  # an empty tool list is left out


def test_an_assistant_turn_round_trips_into_the_next_request():
    first = message("Looking.", [tool_use("read_file", {"path": "a.py"}, id="toolu_rt")])
    with FakeAnthropic([first, message("Fixed.")]) as fake:
        p = planner(fake, cache_prompt=False)
        turn = ask(p)
        conversation = [
            *MESSAGES,
            turn.as_message(),
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_rt", "content": "x = 1/0"}]},
        ]
        second = ask(p, messages=conversation)

    assert second.text == "Fixed."
    assert fake.requests[1].body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_rt", "name": "read_file", "input": {"path": "a.py"}},
        ],
    }


def test_cache_breakpoint_goes_on_the_last_block_of_a_tool_result_message():
    conversation = [
        *MESSAGES,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read_file", "input": {"path": "a"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "data"}]},
    ]
    with FakeAnthropic([message("ok")]) as fake:
        ask(planner(fake), messages=conversation)
    sent = fake.requests[0].body["messages"]
    assert sent[-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert sent[:-1] == conversation[:-1]
    assert "cache_control" not in conversation[-1]["content"][-1]


# -- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure, status",
    [
        (error(429, retry_after=0.02), 429),
        (error(500), 500),
        (error(502), 502),
        (error(503), 503),
        (error(529), 529),
    ],
    ids=["429", "500", "502", "503", "529"],
)
def test_it_retries_a_transient_error_then_succeeds(failure, status):
    on_retry = Recorder()
    with FakeAnthropic([failure, message("recovered", input_tokens=7, output_tokens=3)]) as fake:
        turn = ask(planner(fake), on_retry=on_retry)

    assert turn.text == "recovered"
    assert turn.input_tokens == 7  # usage of the successful attempt only
    assert len(fake.requests) == 2
    assert [(c.attempt, c.status) for c in on_retry.calls] == [(1, status)]
    assert str(status) in on_retry.calls[0].error


def test_it_honours_retry_after():
    on_retry = Recorder()
    with FakeAnthropic([error(429, retry_after=0.05), message("ok")]) as fake:
        ask(planner(fake, backoff_max_s=1.0), on_retry=on_retry)
    assert on_retry.calls[0].wait_s == pytest.approx(0.05)


def test_retry_after_is_capped_at_backoff_max():
    on_retry = Recorder()
    with FakeAnthropic([error(429, retry_after=3600), message("ok")]) as fake:
        ask(planner(fake, backoff_max_s=0.01), on_retry=on_retry)
    assert on_retry.calls[0].wait_s == pytest.approx(0.01)


def test_backoff_grows_exponentially_and_the_wait_is_really_slept():
    slept: list[float] = []
    on_retry = Recorder()
    with FakeAnthropic([error(500), error(500), error(500), message("ok")]) as fake:
        p = planner(fake, backoff_base_s=0.004, backoff_max_s=1.0, sleep=slept.append)
        ask(p, on_retry=on_retry)
    waits = [c.wait_s for c in on_retry.calls]
    assert slept == waits
    for n, wait in enumerate(waits):
        ceiling = 0.004 * 2**n
        assert ceiling / 2 <= wait <= ceiling  # jitter within [0.5, 1] of the ceiling


@pytest.mark.parametrize(
    "failure, kind, status",
    [
        (error(429), "rate_limited", 429),
        (error(500), "server_error", 500),
        (error(503), "server_error", 503),
        (error(529), "overloaded", 529),
    ],
    ids=["429", "500", "503", "529"],
)
def test_it_gives_up_when_retries_are_exhausted(failure, kind, status):
    on_retry = Recorder()
    with FakeAnthropic([failure] * 3 + [message("too late")]) as fake:
        with pytest.raises(PlannerError) as info:
            ask(planner(fake, max_retries=2), on_retry=on_retry)

    assert info.value.kind == kind
    assert info.value.status == status
    assert info.value.retryable is True
    assert len(fake.requests) == 3
    assert fake.remaining == 1
    assert [c.attempt for c in on_retry.calls] == [1, 2]


@pytest.mark.parametrize("status, kind", [(400, "bad_request"), (404, "bad_request"), (401, "auth"), (403, "auth")])
def test_a_client_error_is_not_retried(status, kind):
    on_retry = Recorder()
    with FakeAnthropic([error(status, "tools.0.input_schema: invalid"), message("never")]) as fake:
        with pytest.raises(PlannerError) as info:
            ask(planner(fake), on_retry=on_retry)
    assert (info.value.kind, info.value.status, info.value.retryable) == (kind, status, False)
    assert len(fake.requests) == 1
    assert on_retry.calls == []


def test_a_slow_response_times_out_and_is_retried():
    on_retry = Recorder()
    with FakeAnthropic([delay(2.0), message("fast enough")]) as fake:
        turn = ask(planner(fake, timeout_s=0.3), on_retry=on_retry)
    assert turn.text == "fast enough"
    assert len(fake.requests) == 2
    assert [(c.attempt, c.status) for c in on_retry.calls] == [(1, None)]
    assert "timed out" in on_retry.calls[0].error


def test_timeouts_exhausted_raise_the_timeout_kind():
    with FakeAnthropic([delay(2.0), delay(2.0)]) as fake:
        with pytest.raises(PlannerError) as info:
            ask(planner(fake, timeout_s=0.2, max_retries=1))
    assert (info.value.kind, info.value.status) == ("timeout", None)
    assert len(fake.requests) == 2


def test_an_unreachable_server_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nothing listens on that port any more
    p = AnthropicPlanner(api_key=KEY, base_url=f"http://127.0.0.1:{port}", timeout_s=2, max_retries=1, backoff_base_s=0.001, backoff_max_s=0.001)
    on_retry = Recorder()
    with pytest.raises(PlannerError) as info:
        ask(p, on_retry=on_retry)
    assert info.value.kind == "connection"
    assert [(c.attempt, c.status) for c in on_retry.calls] == [(1, None)]


def test_on_retry_returning_false_stops_before_the_retry():
    on_retry = Recorder(answer=False)
    with FakeAnthropic([error(529), message("never asked")]) as fake:
        with pytest.raises(PlannerError) as info:
            ask(planner(fake), on_retry=on_retry)
    assert info.value.kind == "budget_stop"
    assert info.value.status == 529
    assert len(fake.requests) == 1
    assert len(on_retry.calls) == 1


def test_x_should_retry_false_is_honoured():
    failure = error(503)
    failure["headers"]["x-should-retry"] = "false"
    with FakeAnthropic([failure, message("never")]) as fake:
        with pytest.raises(PlannerError) as info:
            ask(planner(fake))
    assert (info.value.kind, info.value.retryable) == ("server_error", False)
    assert len(fake.requests) == 1


# -- malformed responses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [malformed_json(), missing_content(), raw("<html>gateway</html>", content_type="text/html")],
    ids=["invalid-json", "no-content", "not-json"],
)
def test_a_malformed_response_is_a_planner_error_not_a_crash(body):
    with FakeAnthropic([body, message("never")]) as fake:
        with pytest.raises(PlannerError) as info:
            ask(planner(fake))
    assert info.value.kind == "malformed"
    assert len(fake.requests) == 1


def test_a_response_without_usage_is_malformed():
    reply = message("hi")
    del reply["body"]["usage"]
    with FakeAnthropic([reply]) as fake:
        with pytest.raises(PlannerError) as info:
            ask(planner(fake))
    assert info.value.kind == "malformed"


# -- fail closed on price ------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-unknown-9", "claude-sonnet-4-5", "claude-mythos-preview"])
def test_a_model_without_a_price_fails_closed_before_any_request(model):
    with FakeAnthropic([message("should not be reached")]) as fake:
        with pytest.raises(PlannerError) as info:
            ask(planner(fake), model=model)
    assert info.value.kind == "unknown_price"
    assert fake.requests == []


# -- configuration -------------------------------------------------------------------------------


def test_it_reads_base_url_and_key_from_the_environment(monkeypatch):
    with FakeAnthropic([message("from env")]) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
        turn = ask(get_planner("anthropic", backoff_base_s=0.001))
    assert turn.text == "from env"
    assert fake.requests[0].api_key == "sk-ant-from-env"


def test_the_fake_server_handler_answers_dynamically():
    def handler(request: dict) -> dict:
        n = len(request["messages"])
        return message(f"saw {n} messages", input_tokens=n)

    with FakeAnthropic(handler=handler) as fake:
        p = planner(fake, cache_prompt=False)
        turn = ask(p, messages=[*MESSAGES, {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}])
    assert turn.text == "saw 3 messages"
    assert turn.input_tokens == 3


def test_negative_or_non_numeric_usage_is_reported_on_the_turn_not_raised():
    bad = message("hi", input_tokens=-5)
    bad["body"]["usage"]["output_tokens"] = "many"
    with FakeAnthropic([bad]) as fake:
        turn = ask(planner(fake))
    assert turn.input_tokens == 0 and turn.output_tokens == 0 and turn.cost_usd == Decimal("0")
    assert any("input_tokens" in p for p in turn.usage_problems) and any("output_tokens" in p for p in turn.usage_problems)


def test_a_tool_use_with_an_overlong_id_reaches_the_controller_as_data():
    with FakeAnthropic([message("x", [tool_use("read_file", {"path": "a"}, id="t" * 400)])]) as fake:
        turn = ask(planner(fake))
    assert turn.content[-1]["id"] == "t" * 400  # the controller's check refuses it, with a step
