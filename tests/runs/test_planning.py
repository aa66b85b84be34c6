"""A model call the controller can give up: the helper thread and the calling thread, no database."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from agentops.runs.planning import CallAbandoned, abandoned_wait, call_watched


def test_a_call_in_flight_is_given_up_at_the_first_poll_that_says_stop():
    polls = []
    woken: list[bool | None] = []
    done = threading.Event()

    def never_answers(**kw: Any) -> str:
        woken.append(abandoned_wait(10))  # a planner's backoff: ends when the call is given up
        done.set()
        return "too late"

    def stop_on_second_poll() -> bool:
        polls.append(time.monotonic())
        return len(polls) >= 2

    started = time.monotonic()
    with pytest.raises(CallAbandoned):
        call_watched(never_answers, {}, on_retry=lambda info: True, should_stop=stop_on_second_poll, poll_s=0.01, name="t")
    assert len(polls) == 2
    assert done.wait(5) and woken == [True], "the helper's wait ends the moment its call is given up"
    assert time.monotonic() - started < 2


def test_a_helper_given_up_earlier_is_not_kept_waiting_by_a_later_call():
    """Each call has its own abandon signal: a new call on the same loop does not reset the signal
    of a helper that was given up and is still sleeping."""
    first_woke = threading.Event()
    second_waiting = threading.Event()

    def slow_first(**kw: Any) -> str:
        abandoned_wait(10)
        first_woke.set()
        return "first"

    def second(**kw: Any) -> str:
        second_waiting.set()
        assert abandoned_wait(0.05) is False, "the later call was not given up"
        return "second"

    with pytest.raises(CallAbandoned):
        call_watched(slow_first, {}, on_retry=lambda info: True, should_stop=lambda: True, poll_s=0.01, name="first")
    assert call_watched(second, {}, on_retry=lambda info: True, should_stop=lambda: False, poll_s=0.01, name="second") == "second"
    assert second_waiting.is_set()
    assert first_woke.wait(5), "the first helper still waits: it read the later call's signal"


def test_waiting_outside_a_helper_thread_returns_at_once():
    started = time.monotonic()
    assert abandoned_wait(5) is None
    assert time.monotonic() - started < 1


def test_retries_are_answered_on_the_calling_thread_and_the_answer_comes_back():
    caller = threading.get_ident()
    answered_on: list[int] = []

    def retries_once(*, prompt: str, on_retry: Any) -> str:
        assert on_retry("first attempt failed") is True
        return prompt.upper()

    def on_retry(info: Any) -> bool:
        answered_on.append(threading.get_ident())
        return True

    turn = call_watched(retries_once, {"prompt": "hi"}, on_retry=on_retry, should_stop=lambda: False, poll_s=0.01, name="t")
    assert turn == "HI" and answered_on == [caller]


def test_an_error_in_the_helper_thread_is_raised_as_it_is_on_the_calling_thread():
    def fails(**kw: Any) -> str:
        raise ValueError("the planner broke")

    with pytest.raises(ValueError, match="the planner broke"):
        call_watched(fails, {}, on_retry=lambda info: True, should_stop=lambda: False, poll_s=0.01, name="t")
