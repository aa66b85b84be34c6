from __future__ import annotations

import json
from decimal import Decimal

import pytest

from agentops.llm import PlannerError, ToolCall, get_planner
from agentops.llm.anthropic_planner import AnthropicPlanner
from agentops.llm.scripted import FINISHED_TEXT, ScriptedPlanner, ScriptError, parse_script

MODEL = "claude-sonnet-4-6"
SCRIPT = [
    {"text": "Reading the trace.", "tool_calls": [{"name": "read_file", "arguments": {"path": "app/stats.py"}}]},
    {
        "text": "Patching and testing.",
        "tool_calls": [
            {"name": "write_file", "arguments": {"path": "app/stats.py", "content": "x"}, "id": "toolu_given"},
            {"name": "run_tests", "arguments": {}},
        ],
        "input_tokens": 1000,
        "output_tokens": 100,
    },
    {"text": "The fix is proven.", "stop_reason": "end_turn"},
]


def ask(planner, messages):
    return planner.next_turn(system="sys", messages=messages, tools=[], model=MODEL)


def continue_conversation(messages, turn):
    """What the controller does: append the turn and a tool result per call."""
    messages = [*messages, turn.as_message()]
    if turn.tool_calls:
        results = [{"type": "tool_result", "tool_use_id": c.id, "content": "ok"} for c in turn.tool_calls]
        messages.append({"role": "user", "content": results})
    return messages


def test_it_replays_the_script_in_order():
    planner = ScriptedPlanner(SCRIPT)
    messages = [{"role": "user", "content": "go"}]
    turns = []
    for _ in range(3):
        turn = ask(planner, messages)
        turns.append(turn)
        messages = continue_conversation(messages, turn)

    assert [t.text for t in turns] == ["Reading the trace.", "Patching and testing.", "The fix is proven."]
    assert turns[0].tool_calls == [ToolCall("toolu_scripted_0_0", "read_file", {"path": "app/stats.py"})]
    assert [c.id for c in turns[1].tool_calls] == ["toolu_given", "toolu_scripted_1_1"]
    assert [t.stop_reason for t in turns] == ["tool_use", "tool_use", "end_turn"]
    assert all(t.scripted for t in turns)
    assert turns[0].content == [
        {"type": "text", "text": "Reading the trace."},
        {"type": "tool_use", "id": "toolu_scripted_0_0", "name": "read_file", "input": {"path": "app/stats.py"}},
    ]
    assert planner.kind == "scripted"


def test_a_new_planner_resumes_from_the_conversation_alone():
    first = ScriptedPlanner(SCRIPT)
    messages = [{"role": "user", "content": "go"}]
    messages = continue_conversation(messages, ask(first, messages))
    messages = continue_conversation(messages, ask(first, messages))

    # "another process" after a crash: a fresh planner, the rebuilt conversation
    resumed = ScriptedPlanner(SCRIPT)
    assert ask(resumed, messages).text == "The fix is proven."
    # asking again with the same conversation gives the same turn: no hidden cursor
    assert ask(resumed, messages).text == "The fix is proven."
    assert ask(resumed, messages[:1]).text == "Reading the trace."


def test_an_exhausted_script_finishes_the_run():
    planner = ScriptedPlanner(SCRIPT[:1])
    messages = continue_conversation([{"role": "user", "content": "go"}], ask(ScriptedPlanner(SCRIPT[:1]), []))
    turn = ask(planner, messages)
    assert turn.text == FINISHED_TEXT == "Script finished."
    assert turn.tool_calls == []
    assert turn.stop_reason == "end_turn"
    assert turn.scripted is True


def test_a_strict_script_raises_when_exhausted():
    planner = ScriptedPlanner([], strict=True)
    with pytest.raises(PlannerError) as info:
        ask(planner, [{"role": "user", "content": "go"}])
    assert info.value.kind == "script_exhausted"


def test_it_loads_a_yaml_file(tmp_path):
    path = tmp_path / "fix.yaml"
    path.write_text(
        "- text: Looking at the error\n  tool_calls:\n    - name: read_file\n      arguments: {path: app/views.py}\n  input_tokens: 500\n- text: Done\n",
        encoding="utf-8",
    )
    planner = ScriptedPlanner(path)
    turn = ask(planner, [])
    assert turn.tool_calls == [ToolCall("toolu_scripted_0_0", "read_file", {"path": "app/views.py"})]
    assert turn.input_tokens == 500
    assert ScriptedPlanner(str(path)).turns == planner.turns  # a str path works too


def test_it_loads_a_json_file_and_inline_yaml(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"turns": SCRIPT}), encoding="utf-8")
    assert ScriptedPlanner(path).turns == SCRIPT
    assert parse_script("- text: hi\n") == [{"text": "hi"}]


def test_script_tokens_are_priced_so_budgets_can_be_exercised():
    planner = ScriptedPlanner(SCRIPT)
    turn = ask(planner, [{"role": "assistant", "content": "x"}])  # second turn: 1000 in, 100 out
    assert (turn.input_tokens, turn.output_tokens) == (1000, 100)
    assert turn.cost_usd == Decimal("0.004500")  # 1000*3 + 100*15 per million
    assert ask(planner, []).cost_usd == 0  # no tokens, no cost


def test_an_unpriced_model_costs_nothing_when_scripted():
    turn = ScriptedPlanner(SCRIPT).next_turn(system="", messages=[{"role": "assistant", "content": "x"}], tools=[], model="claude-unknown-9")
    assert turn.input_tokens == 1000
    assert turn.cost_usd == 0


def test_delay_simulates_model_latency():
    turn = ask(ScriptedPlanner([{"text": "slow", "delay_s": 0.15}]), [])
    assert turn.latency_ms >= 150


def test_arguments_are_passed_through_unvalidated_and_never_shared():
    planner = ScriptedPlanner([{"tool_calls": [{"name": "shell", "arguments": "rm -rf /"}]}, {"tool_calls": [{"name": "x", "arguments": {"a": [1]}}]}])
    assert ask(planner, []).tool_calls[0].arguments == "rm -rf /"
    second = ask(planner, [{"role": "assistant", "content": "x"}])
    second.tool_calls[0].arguments["a"].append(2)
    again = ask(planner, [{"role": "assistant", "content": "x"}])
    assert again.tool_calls[0].arguments == {"a": [1]}
    assert again.content[0]["input"] == {"a": [1]}


@pytest.mark.parametrize(
    "script",
    [
        {"not": "a list"},
        ["a string turn"],
        [{"txt": "typo"}],
        [{"tool_calls": [{"arguments": {}}]}],
        [{"tool_calls": "read_file"}],
        [{"input_tokens": -1}],
        [{"delay_s": "soon"}],
    ],
)
def test_an_invalid_script_is_refused(script):
    with pytest.raises(ScriptError):
        ScriptedPlanner(script)


def test_a_missing_or_broken_file_is_refused(tmp_path):
    with pytest.raises(ScriptError):
        ScriptedPlanner(tmp_path / "nope.yaml")
    broken = tmp_path / "b.yaml"
    broken.write_text("- text: [unclosed\n", encoding="utf-8")
    with pytest.raises(ScriptError):
        ScriptedPlanner(broken)


def test_get_planner_builds_each_kind():
    assert isinstance(get_planner("scripted", script=SCRIPT), ScriptedPlanner)
    anthropic_planner = get_planner("anthropic", api_key="k", base_url="http://127.0.0.1:9")
    assert isinstance(anthropic_planner, AnthropicPlanner) and anthropic_planner.kind == "anthropic"
    with pytest.raises(ValueError):
        get_planner("openai")
