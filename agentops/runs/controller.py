"""The controller: drives a model through tools, inside the agent's bounds. It only sequences.

Everything a run knows lives in its rows. The loop rebuilds the conversation from the steps when it
starts (a fresh run, a resume after an approval, or a takeover after a worker died), then mirrors
each step it commits in memory. Before every model call and every tool call it asks the guards, in
order: the lease, the stop state (kill switch, agent paused, a person's Stop), the per-run caps and
alarms, the loop detector; before a new tool call also the daily action caps and the rate limit.
The model proposes; only the controller disposes.

Where the parts live (see docs/ARCHITECTURE.md): the lease in ``runs/leases.py``, the conversation
in ``runs/conversation.py``, one model turn (its spend reserved and settled) in ``runs/turns.py``,
the planner and a model call it can give up in ``runs/planning.py``, one tool call in
``runs/dispatch.py``, each status change in ``runs/transitions.py``, the guards in
``agentops/guardrails/``, the run's tools in its ``ToolSet`` (``tools/toolset.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import InterfaceError, OperationalError
from django.db.models import F
from django.utils import timezone

from agentops.agents.models import Agent, Policy, ToolGrant
from agentops.guardrails.base import StopRun
from agentops.guardrails.budgets import HISTORY_MIN_RUNS, Budget, cost_history, effective_budget, run_budget
from agentops.guardrails.caps import RunCaps
from agentops.guardrails.daily import DailyActionCaps
from agentops.guardrails.loops import Action, Detection, LoopDetector, action_key, observation_hash, shape_key
from agentops.guardrails.rate import RateLimit
from agentops.guardrails.spend import Reservation
from agentops.guardrails.stop_state import STOP_POLL_S, StopState
from agentops.llm.base import context_window, count_tokens_estimate
from agentops.mcp.runtime import tools_for_run
from agentops.notify import notify
from agentops.runs import conversation as conv
from agentops.runs import transitions
from agentops.runs.conversation import Conversation, LoopMark, PendingCall
from agentops.runs.decisions import Decisions, WaitForApproval
from agentops.runs.dispatch import (
    MODEL_OBSERVATION_LIMIT,
    PROGRESS_CHUNK,
    SLOW_TOOL_S,
    Dispatcher,
    infrastructure_cause,
)
from agentops.runs.leases import Heartbeat, claim_run, worker_identity
from agentops.runs.models import Artifact, Run, RunOutcome, RunStatus, Step, StepKind
from agentops.runs.steps import LeaseLost, steps_record
from agentops.runs.turns import MAX_UNUSABLE_TURNS, ModelTurns
from agentops.runs.workspace import RunServices
from agentops.tools.registry import Tool
from agentops.tools.toolset import ToolSet

# Names other modules and the tests know the controller by; each now lives where its concept does.
__all__ = [
    "HISTORY_MIN_RUNS",
    "MAX_UNUSABLE_TURNS",
    "MODEL_OBSERVATION_LIMIT",
    "PROGRESS_CHUNK",
    "SLOW_TOOL_S",
    "STOP_POLL_S",
    "Budget",
    "Heartbeat",
    "PendingCall",
    "Reservation",
    "RunLoop",
    "StopRun",
    "WaitForApproval",
    "claim_run",
    "cost_history",
    "effective_budget",
    "execute_run",
    "infrastructure_cause",
    "worker_identity",
]

log = logging.getLogger(__name__)

# Compact the conversation when it passes this share of the model's context window.
COMPACTION_THRESHOLD = 0.7


def execute_run(run_id: int, owner: str | None = None) -> str:
    """Entry point of the django-q2 task (and of `agentops run --wait`, tests and benchmarks)."""
    owner = owner or worker_identity()
    if not claim_run(run_id, owner):
        return "not-claimed"
    loop = RunLoop(Run.objects.select_related("agent", "agent__policy").get(pk=run_id), owner)
    return loop.execute()


class RunLoop:
    def __init__(self, run: Run, owner: str) -> None:
        self.run = run
        self.agent: Agent = run.agent
        self.policy: Policy = run.agent.policy
        self.owner = owner
        self.budget = run_budget(run, self.policy)  # the policy's caps and the extensions a person granted this run
        self.grants: dict[str, ToolGrant] = {g.tool: g for g in self.agent.grants.all()}
        self.tools = ToolSet()  # the global tools; a run's own ones (MCP) are added to it
        self.services = RunServices(run)
        self.heartbeat = Heartbeat(run.pk, owner)
        self.segment_started = time.monotonic()
        self.conversation = Conversation()
        # The guards, asked in this order (check_guards).
        self.stop_state = StopState(run.pk)
        self.caps = RunCaps(self.budget, run.alarms_raised or [])
        self.loops = LoopDetector()
        self.daily_caps = DailyActionCaps(self.agent.pk, self.policy.daily_action_caps)
        self.rate = RateLimit(self.policy.rate_limit_per_minute)
        self.dispatch = Dispatcher(self)
        self.turns = ModelTurns(self)
        self.decisions = Decisions(self)
        self.effects = 0  # side-effecting calls that succeeded
        self.succeeded_calls = 0
        self.run_result: dict[str, Any] = dict(run.result or {})
        # The stop a poll found (a tool's should_stop, a planner retry): the loop's thread raises it
        # when the call it interrupted returns.
        self.polled_stop: StopRun | None = None
        self._last_stop_poll = 0.0

    # The conversation's state under the names the tests and tools have always read.
    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.conversation.messages

    @property
    def unusable_turns(self) -> int:
        return self.conversation.unusable_turns

    @property
    def seen_call_ids(self) -> set[str]:
        return self.conversation.seen_call_ids

    @property
    def last_turn_calls(self) -> list[PendingCall]:
        return self.conversation.last_turn_calls

    @property
    def last_turn_text(self) -> str:
        return self.conversation.last_turn_text

    # --- lifecycle --------------------------------------------------------------------------

    def execute(self) -> str:
        if self.run.started_at is None:
            Run.objects.filter(pk=self.run.pk, started_at__isnull=True).update(started_at=timezone.now())
        self.heartbeat.start()
        try:
            self.rebuild()
            self.decisions.on_resume()
            self.turns.reconcile_reservation()
            self.open_run_tools()
            self.loop()
            return "finished"
        except WaitForApproval:
            return "waiting"
        except StopRun as stop:
            return self.stop(stop)
        except LeaseLost:
            log.warning("run %s: lease lost, stopping without further writes", self.run.pk)
            return "lease-lost"
        except (OperationalError, InterfaceError):
            # The database, not the run, failed: fail nothing. The lease runs out and the reaper
            # hands the run to a worker that can reach the database; it resumes from the steps.
            log.exception("run %s: database unavailable; leaving it to be taken over", self.run.pk)
            return "database-unavailable"
        except Exception as exc:
            log.exception("run %s failed", self.run.pk)
            try:
                self.record(StepKind.ERROR, {"error": f"{type(exc).__name__}: {exc}"})
                self.finish(RunStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}", error=repr(exc), outcome=RunOutcome.ERROR)
            except LeaseLost:
                pass
            return RunStatus.FAILED
        finally:
            self.heartbeat.stop()
            try:
                self._save_active_time()
            except (OperationalError, InterfaceError):
                log.warning("run %s: active time not saved (database unavailable)", self.run.pk)
            self.services.close()

    def open_run_tools(self) -> None:
        """The tools of the agent's MCP servers, for this run only: started now (a sandboxed server
        inside this run's sandbox), closed with the run. A granted tool the server no longer offers
        as granted (changed, gone, or its server failed) is left out, and a guardrail step says why;
        the model never sees it."""
        tools, refusals, close = tools_for_run(
            agent=self.agent, grants=self.grants.values(), sandbox_factory=self.services.sandbox, should_stop=self.should_stop
        )
        self.services.add_close_hook(close)
        for tool in tools:
            self.tools.add(tool)
        if refusals:
            self.record_many([{"kind": StepKind.GUARDRAIL, "payload": {"guard": "mcp_tools", "reason": reason, "stops_run": False}} for reason in refusals])

    def _save_active_time(self) -> None:
        elapsed = time.monotonic() - self.segment_started
        Run.objects.filter(pk=self.run.pk).update(active_seconds=F("active_seconds") + elapsed)

    def wall_clock_s(self) -> float:
        return self.run.active_seconds + (time.monotonic() - self.segment_started)

    def finish(self, status: str, reason: str, error: str = "", outcome: str = "", outcome_detail: str = "") -> None:
        self.run_result.setdefault("final_text", self.conversation.last_turn_text)
        transitions.finish(
            run_id=self.run.pk,
            status=status,
            reason=reason,
            lease_owner=self.owner,
            error=error,
            result=self.run_result,
            outcome=outcome,
            outcome_detail=outcome_detail,
        )

    def stop(self, stop: StopRun) -> str:
        """Every stop explains itself: a guardrail step, unless the step that stopped the run was
        just written, then the final status with its outcome. A per-run cap a person may extend
        asks them first (the run waits)."""
        try:
            stop = self.decisions.extend_or_stop(stop)
        except WaitForApproval:
            return "waiting"
        except LeaseLost:
            return "lease-lost"
        outcome = stop.final_outcome
        try:
            if not stop.recorded:
                self.record(StepKind.GUARDRAIL, {"guard": stop.guard, "reason": stop.reason, "stops_run": True, **stop.payload})
        except LeaseLost:
            return "lease-lost"  # another worker owns the run now: write nothing more
        self.finish(stop.status, stop.reason, outcome=outcome)
        if outcome == RunOutcome.INFRASTRUCTURE:
            notify(
                event="alarm",
                subject=f"Infrastructure failure stopped run {self.run.pk} of {self.agent.name}",
                text=stop.reason[:500],
                path=f"/runs/{self.run.pk}/",
            )
        return stop.status

    def finish_done(self) -> None:
        """The agent says it is done: succeeded only if it achieved something."""
        result = self.run_result
        pull = result.get("pull_request") or {}
        if pull.get("status") == "merged":
            self.finish(RunStatus.SUCCEEDED, "the agent finished", outcome=RunOutcome.PR_MERGED, outcome_detail=f"merged pull request #{pull.get('number')}")
        elif pull:
            self.finish(RunStatus.SUCCEEDED, "the agent finished", outcome=RunOutcome.PR_OPENED, outcome_detail=f"opened pull request #{pull.get('number')}")
        elif result.get("report"):
            self.finish(RunStatus.SUCCEEDED, "the agent finished", outcome=RunOutcome.REPORT_SUBMITTED, outcome_detail="submitted a report")
        elif self.effects:
            self.finish(RunStatus.SUCCEEDED, "the agent finished", outcome=RunOutcome.ACTED, outcome_detail=f"{self.effects} actions succeeded")
        elif Step.objects.filter(run_id=self.run.pk, kind=StepKind.GATE, payload__passed=False).exists():
            self.finish(RunStatus.FAILED, "the agent finished, but a verification gate failed and nothing was published", outcome=RunOutcome.GATE_FAILED)
        elif self.loops.rejections and not self.succeeded_calls:
            detail = f"a person rejected {sum(self.loops.rejections.values())} of its actions"
            self.finish(RunStatus.REJECTED, f"the agent finished without achieving anything: {detail}", outcome=RunOutcome.REJECTED, outcome_detail=detail)
        elif self.run.refused_calls and not self.succeeded_calls:
            detail = f"refused ({self.run.refused_calls} refused calls, none succeeded)"
            self.finish(RunStatus.FAILED, f"the agent finished without achieving anything: {detail}", outcome=RunOutcome.REFUSED, outcome_detail=detail)
        else:
            detail = f"changed nothing ({self.run.tool_calls} tool calls, {self.run.refused_calls} refused)"
            self.finish(RunStatus.FAILED, f"the agent finished without achieving anything: {detail}", outcome=RunOutcome.NO_CHANGE, outcome_detail=detail)

    def record_many(self, items: list[dict[str, Any]], counters: dict[str, Any] | None = None) -> list[Step]:
        state: dict[str, bool] = {}
        steps = steps_record(run=self.run.pk, items=items, lease_owner=self.owner, counters=counters, state_out=state)
        # The write saw the stop state in the same statement: the next guard check may use it.
        self.stop_state.saw(state)
        # The same UPDATE moved the counters in the database; mirror them.
        for name, value in (counters or {}).items():
            setattr(self.run, name, getattr(self.run, name) + value)
        return steps

    def record(self, kind: str, payload: dict[str, Any], counters: dict[str, Any] | None = None, **fields: Any) -> Step:
        return self.record_many([{"kind": kind, "payload": payload, **fields}], counters)[0]

    # --- conversation memory ----------------------------------------------------------------

    def rebuild(self) -> None:
        """The conversation, from the steps alone (never from a previous worker's memory)."""
        steps = list(Step.objects.filter(run=self.run).order_by("seq"))
        # Whole texts of truncated payload fields, by (step, field).
        whole = {
            (a.step_id, a.name.rsplit("-", 1)[-1]): a.content
            for a in Artifact.objects.filter(run=self.run, step__isnull=False).only("step_id", "name", "content")
        }
        self.conversation = rebuilt = conv.rebuild(steps, whole, self.run.context or {})
        self.rate.started.extend(rebuilt.tool_times)
        for seen in rebuilt.observations:
            if isinstance(seen, LoopMark):  # a detection the controller resolved there (nudge, question, continue)
                self.loops.resolved(Detection.from_payload(seen.detection), reset=seen.escalation == "continue")
                continue
            self.tally(seen.is_error, seen.refused, seen.effect)
            if seen.call is not None and seen.counts_for_loops:
                key = action_key(seen.call.name, seen.call.arguments)
                if seen.rejected:
                    self.loops.rejected(seen.call.name, key)
                self.loops.add(Action(key, observation_hash(seen.text), seen.is_error, shape_key(seen.call.name, seen.call.arguments)))
        rebuilt.observations = []  # replayed; the live loop feeds the detector itself

    def tally(self, is_error: bool, refused: str | None, effect: bool) -> None:
        if is_error or refused:
            return
        self.succeeded_calls += 1
        if effect:
            self.effects += 1

    def observed(self, call: PendingCall, text: str, *, is_error: bool, refused: str | None, effect: bool, counts_for_loops: bool) -> None:
        """An observation was just recorded (by the dispatcher): count it and show it to the loop detector."""
        self.tally(is_error, refused, effect)
        if counts_for_loops:
            self.loops.add(
                Action(action_key(call.name, call.arguments), observation_hash(text), is_error or bool(refused), shape_key(call.name, call.arguments))
            )

    def maybe_compact(self) -> None:
        if self.turns.planner.kind == "scripted":
            # A script replays turns by counting the assistant messages it is shown; compaction
            # would rewind it. Scripted runs are short by construction.
            return
        memory = self.conversation
        if count_tokens_estimate(memory.messages, self.agent.objective) < COMPACTION_THRESHOLD * context_window(self.agent.model):
            return
        done = conv.compact(memory.messages, memory.summary, memory.input_text)
        if done is None:
            return
        memory.summary = done.summary
        self.record(StepKind.COMPACTION, {"summary": done.summary, "compacted_messages": done.compacted_messages, "kept_messages": done.kept_messages})
        memory.messages = done.messages

    # --- the loop ----------------------------------------------------------------------------

    def loop(self) -> None:
        while True:
            for call in self.conversation.last_turn_calls:
                if call.id not in self.conversation.observed:
                    self.handle_tool_call(call)
            if self.conversation.last_turn_final:
                self.finish_done()
                return
            self.check_guards(before="model")
            self.maybe_compact()
            self.turns.take()

    def handle_tool_call(self, call: PendingCall) -> None:
        self.dispatch.handle(call)

    def flush_tool_call(self) -> None:
        self.dispatch.flush_tool_call()

    # --- guards ------------------------------------------------------------------------------

    def check_guards(self, *, before: str, call: PendingCall | None = None) -> None:
        """before: "model" or "tool". The order is the product's contract: lease, stop state (kill
        switch, pause, a person's Stop), per-run caps, loop detector (daily action caps and the rate
        limit follow, for a call found valid)."""
        if self.heartbeat.lost.is_set():
            raise StopRun(RunStatus.FAILED, "lease lost: the heartbeat could not renew it", guard="lease")
        stop = self.stop_state.check()
        if stop is not None:
            raise stop
        new_call = call is not None and call.id not in self.conversation.recorded_tool_calls
        self.check_caps(moment=before if (before == "model" or new_call) else "after")
        detection = self.loops.detect(action_key(call.name, call.arguments) if new_call and call else None)
        if detection:
            self.decisions.loop_detected(detection, call if new_call else None)  # nudge, ask a person, or stop

    def check_caps(self, moment: str = "after") -> None:
        """moment: "model" (a model call is next), "tool" (a new tool call is next) or "after"
        (something was just spent)."""
        verdict = self.caps.check(self.run, self.wall_clock_s(), moment)
        for alarm in verdict.alarms:
            self.raise_alarm(alarm.measure, alarm.value, alarm.limit)
        if verdict.cap is not None:
            name, value, cap = verdict.cap.measure, verdict.cap.value, verdict.cap.limit
            self.record(StepKind.GUARDRAIL, {"guard": "budget", "measure": name, "value": str(value), "cap": str(cap), "source": self.budget.source})
            raise StopRun(RunStatus.BUDGET_EXCEEDED, f"{name} cap reached: {value} of {cap}", guard="budget", recorded=True, payload={"measure": name})

    def raise_alarm(self, name: str, value: Any, threshold: Any) -> None:
        Run.objects.filter(pk=self.run.pk).update(alarms_raised=self.caps.mark_raised(name))
        self.record(StepKind.ALARM, {"measure": name, "value": str(value), "threshold": str(threshold)})
        notify(
            event="alarm",
            subject=f"Alarm: run {self.run.pk} of {self.agent.name} passed its {name} alarm",
            text=f"{name} is {value} (alarm at {threshold}).",
            path=f"/runs/{self.run.pk}/",
        )

    def check_daily_actions(self, tool: Tool) -> None:
        reached = self.daily_caps.consume(tool.risk_class, tool.name)
        if reached is not None:
            key, cap = reached
            self.record(StepKind.GUARDRAIL, {"guard": "daily_cap", "key": key, "cap": cap})
            raise StopRun(RunStatus.BUDGET_EXCEEDED, f"daily cap for {key} reached ({cap})", guard="daily_cap", recorded=True)

    def wait_for_rate_limit(self) -> None:
        wait = self.rate.wait_s(time.time())
        if wait is None:
            return
        self.record(StepKind.GUARDRAIL, {"guard": "rate_limit", "limit_per_minute": self.rate.limit, "waiting_s": round(wait, 2)})
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.should_stop(force=True):
                raise self.polled_stop or StopRun(RunStatus.KILLED, "stopped while rate limited", guard="rate_limit")
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def should_stop(self, force: bool = False) -> bool:
        """Polled by running tools. Cheap: at most one check per STOP_POLL_S."""
        now = time.monotonic()
        if not force and now - self._last_stop_poll < STOP_POLL_S:
            return self.polled_stop is not None
        self._last_stop_poll = now
        try:
            self.dispatch.flush_if_slow(now)
            if self.heartbeat.lost.is_set():
                self.polled_stop = StopRun(RunStatus.FAILED, "lease lost: the heartbeat could not renew it", guard="lease")
            else:
                self.polled_stop = self.stop_state.read()
                if self.polled_stop is None and self.wall_clock_s() >= self.budget.max_wall_clock_s:
                    cap = self.budget.max_wall_clock_s
                    self.polled_stop = StopRun(
                        RunStatus.BUDGET_EXCEEDED,
                        f"wall_clock_s cap reached: {cap}",
                        guard="budget",
                        payload={"measure": "wall_clock_s", "value": str(int(self.wall_clock_s())), "cap": str(cap), "during_tool": True},
                    )
        except Exception:
            # Cannot tell whether we may go on: fail closed.
            log.exception("stop check of run %s failed", self.run.pk)
            self.polled_stop = StopRun(RunStatus.FAILED, "could not check stop conditions", guard="stop_check")
        return self.polled_stop is not None
