"""The first guard: the kill switch, the agent's pause and a person's Stop (in that order).

Read before every model call and tool call, so it costs one query at most, and usually none: every
step write returns the same three flags as its statement saw them (``runs/steps.py``), and a check
right after a write uses them. A running tool's poll (``RunLoop.should_stop``) reads the database.
"""

from __future__ import annotations

from django.db import connection

from agentops.guardrails.base import StopRun
from agentops.guardrails.models import ControlState
from agentops.runs.models import RunOutcome, RunStatus

# How often a running tool, a model call in flight or a rate-limit wait polls the stop state.
STOP_POLL_S = 0.1


def kill_switch_engaged() -> bool:
    """Whether the global kill switch is engaged (its write path is ``guardrails/killswitch.py``)."""
    # One indexed read of a one-row table: cheap enough to do before every action.
    return ControlState.objects.filter(pk=1, engaged=True).exists()


def stop_from(state: dict[str, bool]) -> StopRun | None:
    if state["killed"]:
        return StopRun(RunStatus.KILLED, "kill switch engaged", guard="kill_switch")
    if state["paused"]:
        return StopRun(RunStatus.KILLED, "agent paused", guard="paused")
    if state["cancel_requested"]:
        return StopRun(RunStatus.KILLED, "stopped by a person", guard="stopped_by_person")
    return None


def read_stop_state(run_id: int) -> StopRun | None:
    """Kill switch, pause and a person's Stop, read in one query."""
    # Hand-written: it runs twice per iteration, and the ORM would spend more time compiling it
    # than the database spends answering.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.cancel_requested, a.paused, EXISTS (SELECT 1 FROM guardrails_controlstate c WHERE c.id = 1 AND c.engaged) "
            "FROM runs_run r JOIN agents_agent a ON a.id = r.agent_id WHERE r.id = %s",
            [run_id],
        )
        row = cursor.fetchone()
    if row is None:
        return StopRun(RunStatus.FAILED, "run row vanished", guard="stop_check", outcome=RunOutcome.ERROR)
    cancel_requested, paused, killed = row
    return stop_from({"cancel_requested": cancel_requested, "paused": paused, "killed": killed})


class StopState:
    """The stop flags of one run: as the last step write saw them, or as the database says now."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self._seen_by_write: dict[str, bool] | None = None

    def saw(self, state: dict[str, bool] | None) -> None:
        """The flags a step write just returned (None: it returned none)."""
        self._seen_by_write = state or None

    def read(self) -> StopRun | None:
        """As the database says now (a poll while a tool runs); leaves what the last write saw."""
        return read_stop_state(self.run_id)

    def check(self) -> StopRun | None:
        # The state as the write just before this check saw it (nothing happened in between but
        # Python), or, when there was no such write, as the database says now. Used once.
        seen, self._seen_by_write = self._seen_by_write, None
        return stop_from(seen) if seen is not None else read_stop_state(self.run_id)
