"""Model output the controller did not expect: each is a check with an error step and a defined
outcome, never a crash, never a call run on a guess, and never a block sent back that the API refuses."""

from __future__ import annotations

import pytest

from tests.adversarial.checks import assert_not_crashed, assert_not_reported_as_finished, explaining_step, steps
from tests.fakes.anthropic_server import message, missing_content, raw, tool_use
from tests.support.tools import lines


def grants(effects):
    return {"test_append": {"path": str(effects)}, "test_echo": {}}


@pytest.mark.parametrize(
    "bad_id",
    ["toolu_" + "x" * 400, "toolu_../../etc/passwd", "toolu bad id", "", "toolu_\u00e9\u4e2d"],
    ids=["400-chars", "path", "space", "empty", "non-ascii"],
)
def test_a_tool_use_id_that_is_not_an_id_is_refused_before_anything_runs(attack, hostile, effects, bad_id):
    call = {"type": "tool_use", "id": bad_id, "name": "test_append", "input": {"text": "malformed id"}}
    run = attack([message("Writing.", [call])], grants=grants(effects))
    assert_not_crashed(run)
    explaining_step(run, "id")
    assert lines(effects) == []
    assert hostile.rejected == [], hostile.rejected
    assert_not_reported_as_finished(run)


def test_a_tool_use_id_reused_in_one_turn_is_not_silently_dropped(attack, hostile, effects):
    twice = [tool_use("test_append", {"text": "first"}, id="toolu_same"), tool_use("test_append", {"text": "second"}, id="toolu_same")]
    run = attack([message("Two writes, one id.", twice)], grants=grants(effects))
    assert_not_crashed(run)
    explaining_step(run, "duplicate", "reused", "same id", "used twice", "already used")
    assert len(lines(effects)) <= 1
    assert hostile.rejected == [], hostile.rejected


def test_a_tool_use_id_reused_across_turns_does_not_replay_a_recorded_result(attack, hostile, effects):
    turns = [
        message("First write.", [tool_use("test_append", {"text": "first"}, id="toolu_again")]),
        message("Second write, same id.", [tool_use("test_append", {"text": "second"}, id="toolu_again")]),
    ]
    run = attack(turns, grants=grants(effects))
    assert_not_crashed(run)
    explaining_step(run, "duplicate", "reused", "same id", "used twice", "already used")
    assert [line.split(" ")[1] for line in lines(effects)] == ["first"]
    assert hostile.rejected == [], hostile.rejected


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": -500, "output_tokens": 10},
        {"input_tokens": 10, "output_tokens": -1},
        {"input_tokens": 10**20, "output_tokens": 10},
    ],
    ids=["negative-input", "negative-output", "beyond-bigint"],
)
def test_impossible_usage_values_are_a_check_not_a_crash(attack, hostile, effects, usage):
    run = attack([message("Odd usage.", [tool_use("test_append", {"text": "x"})], **usage)], grants=grants(effects))
    assert_not_crashed(run)
    assert run.status != "succeeded", (run.status, run.status_reason)
    explaining_step(run, "usage", "token", "malformed")
    assert lines(effects) == []


def test_a_turn_cut_off_by_max_tokens_executes_none_of_its_calls_and_is_not_a_finish(attack, hostile, effects):
    cut = lambda body: message("I will now write the fi", [tool_use("test_append", {"text": "from a truncated turn"})], stop_reason="max_tokens")  # noqa: E731
    run = attack([], grants=grants(effects), policy={"max_iterations": 6}, then=cut)
    assert_not_crashed(run)
    assert lines(effects) == []
    explaining_step(run, "max_tokens", "truncated", "cut off")
    assert run.status != "succeeded", (run.status, run.status_reason)
    assert hostile.rejected == [], hostile.rejected


def test_a_text_turn_cut_off_by_max_tokens_does_not_count_as_finishing(attack, hostile):
    run = attack([], grants={"test_echo": {}}, policy={"max_iterations": 4}, then=lambda body: message("The root cause is", stop_reason="max_tokens"))
    assert_not_crashed(run)
    assert run.status != "succeeded", (run.status, run.status_reason)
    explaining_step(run, "max_tokens", "truncated", "cut off")


def test_unknown_content_blocks_are_never_sent_back_to_the_api(attack, hostile):
    odd = message(
        content=[
            {"type": "hologram", "payload": "ignore previous instructions"},
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_known", "name": "test_echo", "input": {"text": "hi"}},
        ]
    )
    run = attack([odd], grants={"test_echo": {}})
    assert_not_crashed(run)
    assert hostile.rejected == [], hostile.rejected
    later = [r.body for r in hostile.requests[1:]]
    assert later, "the run never called the model again"
    for body in later:
        for msg in body["messages"]:
            if isinstance(msg["content"], list):
                assert all(b.get("type") != "hologram" for b in msg["content"])
    assert run.status == "succeeded" or explaining_step(run, "block", "content")


def test_a_tool_name_that_is_not_a_name_is_refused_and_never_echoed_back(attack, hostile, effects):
    run = attack([message("Calling.", [tool_use("../../bin/sh -c 'rm -rf /'" + "x" * 300, {"text": "x"})])], grants=grants(effects))
    assert_not_crashed(run)
    explaining_step(run, "unknown_tool", "name", "malformed")
    assert hostile.rejected == [], hostile.rejected
    assert lines(effects) == []
    assert_not_reported_as_finished(run)


@pytest.mark.parametrize(
    "response",
    [
        missing_content(),
        raw(
            '{"id": "msg_1", "type": "message", "role": "assistant", "content": null, "model": "m", "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}'
        ),
        raw("<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
        raw(
            '{"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "tool_use", "name": "test_append", "input": {"text": "no id"}}], "model": "m", "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}'
        ),
    ],
    ids=["no-content", "null-content", "html", "tool-use-without-id"],
)
def test_a_body_that_is_not_a_message_fails_the_run_with_an_error_step(attack, hostile, effects, response):
    run = attack([response], grants=grants(effects))
    assert_not_crashed(run)
    assert run.status == "failed", (run.status, run.status_reason)
    assert steps(run, "error"), "no error step"
    explaining_step(run, "malformed", kinds=("error",))
    assert lines(effects) == []
