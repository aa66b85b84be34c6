"""A model call the controller can give up: the helper thread and the calling thread, no database."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from agentops.runs.planning import CallAbandoned, call_watched


def test_a_call_in_flight_is_given_up_at_the_first_poll_that_says_stop():
    abandon = threading.Event()
    polls = []

    def never_answers(**kw: Any) -> str:
        abandon.wait(10)
        return "too late"

    def stop_on_second_poll() -> bool:
        polls.append(time.monotonic())
        return len(polls) >= 2

    started = time.monotonic()
    with pytest.raises(CallAbandoned):
        call_watched(never_answers, {}, on_retry=lambda info: True, should_stop=stop_on_second_poll, abandon=abandon, poll_s=0.01, name="t")
    assert abandon.is_set() and len(polls) == 2
    assert time.monotonic() - started < 2


def test_retries_are_answered_on_the_calling_thread_and_the_answer_comes_back():
    caller = threading.get_ident()
    answered_on: list[int] = []

    def retries_once(*, prompt: str, on_retry: Any) -> str:
        assert on_retry("first attempt failed") is True
        return prompt.upper()

    def on_retry(info: Any) -> bool:
        answered_on.append(threading.get_ident())
        return True

    turn = call_watched(retries_once, {"prompt": "hi"}, on_retry=on_retry, should_stop=lambda: False, abandon=threading.Event(), poll_s=0.01, name="t")
    assert turn == "HI" and answered_on == [caller]


def test_an_error_in_the_helper_thread_is_raised_as_it_is_on_the_calling_thread():
    def fails(**kw: Any) -> str:
        raise ValueError("the planner broke")

    with pytest.raises(ValueError, match="the planner broke"):
        call_watched(fails, {}, on_retry=lambda info: True, should_stop=lambda: False, abandon=threading.Event(), poll_s=0.01, name="t")
