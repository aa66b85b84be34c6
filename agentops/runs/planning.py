"""The planner as the controller uses it: which one a run gets, and a model call it can give up.

A real model call can take minutes (retries, an endpoint's retry-after). It runs in a helper thread
while the calling thread keeps watching the stop conditions, so the kill switch, a person's Stop or
the wall-clock cap give the call up within one poll instead of waiting for the API. The helper never
touches the database: its retry callbacks are answered on the calling thread, and its backoff sleeps
through ``abandoned_wait``, which ends the moment its call is given up.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from agentops.agents.models import Agent
from agentops.guardrails.base import StopRun
from agentops.llm import get_planner
from agentops.runs.models import Run, RunStatus


class CallAbandoned(Exception):
    """The call was given up because a stop condition held; its answer, if any, is never read."""


def make_planner(run: Run, agent: Agent, *, sleep: Callable[[float], None]) -> Any:
    """The run's planner: the Anthropic API (its backoff sleeps through ``sleep``), or a script."""
    if run.planner_kind == "anthropic":
        return get_planner(
            "anthropic",
            api_key=settings.ANTHROPIC_API_KEY,
            base_url=settings.ANTHROPIC_BASE_URL,
            timeout_s=settings.ANTHROPIC_TIMEOUT_S,
            max_retries=settings.ANTHROPIC_MAX_RETRIES,
            backoff_base_s=settings.ANTHROPIC_BACKOFF_S,
            sleep=sleep,
        )
    script = agent.config.get("script")
    if not script:
        raise StopRun(RunStatus.FAILED, "scripted planner without a script (config.script)")
    if isinstance(script, list):  # turns inline in the agent's config
        return get_planner("scripted", script=script)
    path = Path(script)
    if not path.is_absolute():
        path = Path(settings.BASE_DIR) / path
    return get_planner("scripted", script=path)


# On the helper thread of a watched call: ``abandon``, the Event of that call (each call has its own
# thread, so a helper given up earlier never reads a later call's Event).
_helper = threading.local()


def abandoned_wait(seconds: float) -> bool | None:
    """Wait up to ``seconds`` on the helper thread of a watched call: True as soon as the call is
    given up, False when the time ran out. None on any other thread, at once."""
    abandon: threading.Event | None = getattr(_helper, "abandon", None)
    if abandon is None:
        return None
    return abandon.wait(max(0.0, seconds))


def call_watched(
    next_turn: Callable[..., Any],
    kw: dict[str, Any],
    *,
    on_retry: Callable[[Any], bool],
    should_stop: Callable[[], bool],
    poll_s: float,
    name: str,
) -> Any:
    """``next_turn(**kw, on_retry=...)`` in a helper thread. ``on_retry`` and ``should_stop`` run
    on this thread; when ``should_stop`` says so, the call is given up (its helper's
    ``abandoned_wait`` returns True) and CallAbandoned raised.

    The threads share only thread-safe objects: the call's Event, set once by this thread, and two
    queues. The helper's answer is put in ``box`` before the helper puts None on ``requests_q``,
    and read here only after that None came out of it (the queue's lock orders the two)."""
    abandon = threading.Event()
    requests_q: queue.Queue[tuple[Any, queue.Queue[bool]] | None] = queue.Queue()
    box: dict[str, Any] = {}

    def helper_on_retry(info: Any) -> bool:
        if abandon.is_set():
            return False
        reply: queue.Queue[bool] = queue.Queue(maxsize=1)
        requests_q.put((info, reply))
        while not abandon.is_set():
            try:
                return reply.get(timeout=poll_s)
            except queue.Empty:
                continue
        return False

    def work() -> None:
        _helper.abandon = abandon
        try:
            box["turn"] = next_turn(**kw, on_retry=helper_on_retry)
        except BaseException as exc:  # handed to the calling thread as it is
            box["error"] = exc
        finally:
            requests_q.put(None)

    helper = threading.Thread(target=work, daemon=True, name=name)
    helper.start()
    while True:
        try:
            item = requests_q.get(timeout=poll_s)
        except queue.Empty:
            if should_stop():
                abandon.set()
                raise CallAbandoned() from None
            continue
        if item is None:
            break
        info, reply = item
        reply.put(on_retry(info))
    if "error" in box:
        raise box["error"]
    return box["turn"]
