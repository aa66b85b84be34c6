"""The checks on a model turn: everything the API would refuse back, or the database could not hold."""

from __future__ import annotations

from agentops.llm.checks import check_turn, usage_value


def use(id: object, name: object = "read_file", input: object = None) -> dict:
    return {"type": "tool_use", "id": id, "name": name, "input": {} if input is None else input}


def test_it_accepts_a_normal_turn_and_keeps_only_blocks_the_api_accepts_back():
    check = check_turn([{"type": "text", "text": "hi", "citations": None}, use("toolu_01")], "tool_use")
    assert check.acceptable and [c.id for c in check.calls] == ["toolu_01"]
    assert check.content == [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "toolu_01", "name": "read_file", "input": {}}]


def test_it_refuses_ids_outside_the_api_pattern_or_longer_than_64():
    for bad in ["x" * 65, "toolu 1", "toolu/1", "", 7, None, "toolu_\u00e9"]:
        check = check_turn([use(bad)], "tool_use")
        assert not check.acceptable and check.calls == [], bad
    assert check_turn([use("a" * 64)], "tool_use").acceptable


def test_it_refuses_duplicate_ids_in_a_turn_and_ids_seen_before():
    assert "used twice" in check_turn([use("t1"), use("t1")], "tool_use").problems[0]
    assert "already used" in check_turn([use("t1")], "tool_use", seen_ids={"t1"}).problems[0]


def test_it_refuses_bad_tool_names_and_non_object_inputs():
    assert check_turn([use("t1", name="x" * 65)], "tool_use").problems
    assert check_turn([use("t1", name="rm -rf")], "tool_use").problems
    assert check_turn([use("t1", input=[1, 2])], "tool_use").problems


def test_a_cut_off_turn_is_truncated_and_unknown_blocks_are_dropped_not_echoed():
    check = check_turn([{"type": "weird"}, {"type": "text", "text": ""}, use("t1")], "max_tokens")
    assert check.truncated and not check.acceptable
    assert check.dropped == ["weird"] and {"type": "text", "text": ""} not in check.content


def test_an_unexpected_stop_reason_is_a_problem():
    assert check_turn([], "banana").problems and check_turn([], None).problems
    assert check_turn([], "end_turn").acceptable


def test_usage_values_must_be_plausible_non_negative_integers():
    problems: list[str] = []
    assert [usage_value(v, "n", problems) for v in (5, -1, "7", 1.5, True, None, 10**30)] == [5, 0, 0, 0, 0, 0, 0]
    assert len(problems) == 6
    assert usage_value(None, "cache", problems, optional=True) == 0 and len(problems) == 6


def test_a_deeply_nested_or_huge_input_is_a_problem_not_a_recursion_error():
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    assert "nested deeper" in check_turn([use("t1", input=deep)], "tool_use").problems[0]
    assert "characters" in check_turn([use("t1", input={"x": "y" * 1_000_001})], "tool_use").problems[0]
