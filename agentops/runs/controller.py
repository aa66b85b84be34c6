"""The controller: drives a model through tools, inside the agent's bounds. It only sequences.

Everything a run knows lives in its rows. The loop rebuilds the conversation from the steps when it
starts (a fresh run, a resume after an approval, or a takeover after a worker died), then mirrors
each step it commits in memory. Before every model call and every tool call it asks the guards, in
order: the lease, the stop state (kill switch, agent paused, a person's Stop), the per-run caps and
alarms, the loop detector; before a new tool call also the daily action caps and the rate limit.
The model proposes; only the controller disposes.

Where the parts live (see docs/ARCHITECTURE.md): the lease in ``runs/leases.py``, the conversation
in ``runs/conversation.py``, the planner and a model call it can give up in ``runs/planning.py``,
one tool call in ``runs/dispatch.py``, each status change in
``runs/transitions.py``, the guards in ``agentops/guardrails/``.
"""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from typing import Any

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone

from agentops.agents.models import Agent, Policy, ToolGrant
from agentops.guardrails.base import StopRun
from agentops.guardrails.budgets import HISTORY_MIN_RUNS, Budget, cost_history, effective_budget
from agentops.guardrails.caps import RunCaps
from agentops.guardrails.daily import DailyActionCaps, daily_add, daily_consume
from agentops.guardrails.loops import Action, LoopDetector, action_key, observation_hash, shape_key
from agentops.guardrails.rate import RateLimit
from agentops.guardrails.spend import Reservation, daily_delta, price_call
from agentops.guardrails.stop_state import StopState
from agentops.llm.base import PlannerError, context_window, count_tokens_estimate
from agentops.llm.checks import check_turn, text_only
from agentops.notify import notify
from agentops.runs import conversation as conv
from agentops.runs import transitions
from agentops.runs.conversation import Conversation, PendingCall
from agentops.runs.dispatch import (
    MODEL_OBSERVATION_LIMIT,
    PROGRESS_CHUNK,
    SLOW_TOOL_S,
    Dispatcher,
    WaitForApproval,
    infrastructure_cause,
)
from agentops.runs.leases import Heartbeat, claim_run, worker_identity
from agentops.runs.models import Artifact, Run, RunOutcome, RunStatus, Step, StepKind
from agentops.runs.planning import CallAbandoned, call_watched, make_planner
from agentops.runs.steps import LeaseLost, steps_record
from agentops.runs.workspace import RunServices
from agentops.tools.registry import Tool, get_tool

# Names other modules and the tests know the controller by; each now lives where its concept does.
__all__ = [
    "HISTORY_MIN_RUNS",
    "MODEL_OBSERVATION_LIMIT",
    "PROGRESS_CHUNK",
    "SLOW_TOOL_S",
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
# How often a running tool polls for stop requests (kill switch, pause, cancel, lease).
STOP_POLL_S = 0.1
# Consecutive model turns the controller could not act on (malformed or cut off) before it stops.
MAX_UNUSABLE_TURNS = 3
# Planner failures that say the model API could not be reached, as opposed to a refused request.
_INFRA_PLANNER_KINDS = frozenset({"connection", "timeout", "server_error", "overloaded", "rate_limited"})


class AbandonedCall(Exception):
    """A model call in flight was given up because the run must stop."""

    def __init__(self, stop: StopRun) -> None:
        super().__init__(stop.reason)
        self.stop = stop


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
        self.budget = effective_budget(self.policy)
        self.grants: dict[str, ToolGrant] = {g.tool: g for g in self.agent.grants.all()}
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
        self.effects = 0  # side-effecting calls that succeeded
        self.succeeded_calls = 0
        self.run_result: dict[str, Any] = dict(run.result or {})
        # The stop a poll found (a tool's should_stop, a planner retry): the loop's thread raises it
        # when the call it interrupted returns.
        self.polled_stop: StopRun | None = None
        self._last_stop_poll = 0.0
        self._loop_thread = threading.get_ident()
        self._abandon = threading.Event()  # set when a model call in flight is given up
        self._tool_definitions: list[dict[str, Any]] | None = None
        self.planner = self._make_planner()

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
            self.reconcile_reservation()
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
        just written, then the final status with its outcome."""
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

    def _make_planner(self) -> Any:
        return make_planner(self.run, self.agent, sleep=self._retry_sleep)

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
        if self.planner.kind == "scripted":
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

    def reconcile_reservation(self) -> None:
        """A model call reserved by a worker that died before recording it: it may have been
        answered and billed, so the reservation is charged to the run as spent (the day was
        charged when it was reserved) and a step says so."""
        run = self.run
        if not (run.reserved_cost_usd or run.reserved_input_tokens or run.reserved_output_tokens):
            return
        self.record(
            StepKind.GUARDRAIL,
            {
                "guard": "unsettled_model_call",
                "reason": "a model call was in flight when its worker stopped; its reserved estimate is charged as spent",
                "cost_usd": str(run.reserved_cost_usd),
                "input_tokens": run.reserved_input_tokens,
                "output_tokens": run.reserved_output_tokens,
            },
            counters={
                "cost_usd": run.reserved_cost_usd,
                "input_tokens": run.reserved_input_tokens,
                "output_tokens": run.reserved_output_tokens,
                "model_calls": 1,
                "iterations": 1,
                "reserved_cost_usd": -run.reserved_cost_usd,
                "reserved_input_tokens": -run.reserved_input_tokens,
                "reserved_output_tokens": -run.reserved_output_tokens,
            },
        )
        self.check_caps(moment="after")

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
            self.model_turn()

    def handle_tool_call(self, call: PendingCall) -> None:
        self.dispatch.handle(call)

    def flush_tool_call(self) -> None:
        self.dispatch.flush_tool_call()

    def tool_definition(self, name: str) -> dict[str, Any] | None:
        tool = get_tool(name)
        if tool is None or self.agent.trust_phase < tool.min_trust_phase:
            return None
        return tool.definition()

    # --- the model turn ----------------------------------------------------------------------

    def model_turn(self) -> None:
        remaining_tokens = self.budget.max_tokens - self.run.total_tokens
        max_tokens = max(1, min(int(self.agent.config.get("max_output_tokens", 4096)), remaining_tokens))
        if self._tool_definitions is None:  # grants are fixed for the life of this worker's turn at the run
            self._tool_definitions = [t for t in (self.tool_definition(name) for name in sorted(self.grants)) if t is not None]
        tools = self._tool_definitions
        reservation = self.reserve(max_tokens, tools)
        max_tokens = reservation.max_tokens
        try:
            turn = self.call_planner(
                system=self.agent.objective,
                messages=self.conversation.messages,
                tools=tools,
                model=self.agent.model,
                max_tokens=max_tokens,
            )
        except AbandonedCall as gone:
            # The call may still be answered and billed: the reservation is charged as spent.
            self.record(
                StepKind.ERROR,
                {"kind": "abandoned_model_call", "error": f"the model call in flight was abandoned: {gone.stop.reason}", "cost_usd": str(reservation.cost_usd)},
                counters={
                    "cost_usd": reservation.cost_usd,
                    "input_tokens": reservation.input_tokens,
                    "output_tokens": reservation.output_tokens,
                    "model_calls": 1,
                    "iterations": 1,
                    **reservation.release(),
                },
            )
            raise gone.stop from None
        except PlannerError as exc:
            # Nothing was answered, so nothing was billed: the reservation is released with the step.
            with transaction.atomic():
                self.settle_daily(reservation, Decimal("0"))
                self.record(StepKind.ERROR, {"error": str(exc), "kind": exc.kind, "status": exc.status}, counters=reservation.release())
            if exc.kind == "budget_stop" and self.polled_stop is not None:
                raise self.polled_stop from None
            outcome = RunOutcome.INFRASTRUCTURE if exc.kind in _INFRA_PLANNER_KINDS else RunOutcome.ERROR
            raise StopRun(RunStatus.FAILED, f"model call failed: {exc.kind}: {exc}", outcome=outcome, recorded=True) from None

        check = check_turn(turn.content, turn.stop_reason, seen_ids=self.conversation.seen_call_ids)
        problems = list(turn.usage_problems) + check.problems
        usable = not problems and not check.truncated
        tokens = {
            "input_tokens": turn.input_tokens,
            "output_tokens": turn.output_tokens,
            "cache_read_tokens": turn.cache_read_tokens,
            "cache_write_tokens": turn.cache_write_tokens,
        }
        cost = turn.cost_usd
        if turn.usage_problems:
            # The answer's own count cannot be believed: charge what was reserved for it.
            tokens = {"input_tokens": reservation.input_tokens, "output_tokens": reservation.output_tokens, "cache_read_tokens": 0, "cache_write_tokens": 0}
            cost = reservation.cost_usd
        calls: list[dict[str, Any]] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in check.calls] if usable else []
        content = check.content if usable else text_only(check.content)
        payload: dict[str, Any] = {
            "text": turn.text,
            "tool_calls": calls,
            "content": content or [{"type": "text", "text": "(empty)"}],
            "stop_reason": turn.stop_reason if isinstance(turn.stop_reason, str) else str(turn.stop_reason),
            "scripted": turn.scripted,
            "planner": self.planner.kind,
            "cache_read_tokens": tokens["cache_read_tokens"],
            "cache_write_tokens": tokens["cache_write_tokens"],
        }
        items: list[dict[str, Any]] = [
            {
                "kind": StepKind.MODEL_CALL,
                "payload": payload,
                "model_id": turn.model[:100] if isinstance(turn.model, str) else "",
                "input_tokens": tokens["input_tokens"],
                "output_tokens": tokens["output_tokens"],
                "cost_usd": cost,
                "latency_ms": max(0, min(int(turn.latency_ms or 0), 2**31 - 1)),
            }
        ]
        stop: StopRun | None = None
        if check.dropped:
            payload["dropped_blocks"] = check.dropped
            items.append(
                {
                    "kind": StepKind.ERROR,
                    "payload": {"kind": "unknown_content", "error": f"content blocks the API does not accept back were dropped: {check.dropped[:10]}"},
                }
            )
        if not usable:
            if problems:
                kind, what = "malformed_output", "was malformed: " + "; ".join(problems[:10])
            else:
                kind, what = "truncated", f"was cut off ({turn.stop_reason}) at {max_tokens} output tokens"
            payload["rejected"] = kind
            payload["controller_note"] = (
                f"[controller] Your previous turn {what}. None of its tool calls were executed. "
                "Answer again, shorter if it was cut off, with complete, valid tool calls."
            )[:4000]
            items.append(
                {
                    "kind": StepKind.ERROR,
                    "payload": {"kind": kind, "error": f"the model's turn {what}", "problems": problems[:20], "tool_calls_not_executed": len(check.calls)},
                }
            )
            if self.conversation.unusable_turns + 1 >= MAX_UNUSABLE_TURNS:
                outcome = RunOutcome.MALFORMED_OUTPUT if problems else RunOutcome.TRUNCATED
                stop = StopRun(RunStatus.FAILED, f"{MAX_UNUSABLE_TURNS} model turns in a row could not be used ({kind})", guard="model_output", outcome=outcome)
        elif turn.stop_reason == "refusal":
            calls = payload["tool_calls"] = []
            stop = StopRun(RunStatus.FAILED, "the model refused to continue (stop_reason refusal)", guard="model_output", outcome=RunOutcome.MODEL_REFUSED)
        counters = {**tokens, "cost_usd": cost, "model_calls": 1, "iterations": 1, **reservation.release()}
        if daily_delta(reservation, cost):
            # The day and the run are settled together, or neither is (then takeover reconciles).
            with transaction.atomic():
                self.settle_daily(reservation, cost)
                self.record_many(items, counters=counters)
        else:  # the common scripted case: one statement, no transaction block
            self.record_many(items, counters=counters)
        self.conversation.add_turn(
            payload["content"], turn.text, [PendingCall(c["id"], c["name"], c["arguments"]) for c in calls], None if usable else payload["controller_note"]
        )
        if stop is not None:
            raise stop
        # Crossing a cap with this very call stops the run before anything it asked for happens.
        self.check_caps(moment="after")

    def call_planner(self, **kw: Any) -> Any:
        """One model turn. A scripted planner answers at once, in this thread. A real model call
        runs in a helper thread while this one keeps watching the stop conditions: the kill switch,
        a person's Stop or the wall-clock cap give the call up within STOP_POLL_S instead of
        waiting for the API. The helper never touches the database: its retry callbacks are
        answered here."""
        if self.planner.kind == "scripted":
            return self.planner.next_turn(**kw, on_retry=self.on_retry)
        abandon = self._abandon = threading.Event()
        try:
            return call_watched(
                self.planner.next_turn,
                kw,
                on_retry=self.on_retry,
                should_stop=lambda: self.should_stop(force=True),
                abandon=abandon,
                poll_s=STOP_POLL_S,
                name=f"model-call-{self.run.pk}",
            )
        except CallAbandoned:
            raise AbandonedCall(self.polled_stop or StopRun(RunStatus.KILLED, "stopped", guard="stop")) from None

    def _retry_sleep(self, seconds: float) -> None:
        """The planner's backoff (an endpoint's retry-after included) is the controller's time: the
        kill switch, a person's Stop and the wall-clock cap end it at once."""
        if threading.get_ident() != self._loop_thread:
            # In the helper thread of call_planner: the loop's thread watches the stop conditions
            # and sets the event when the call is given up.
            if self._abandon.wait(max(0.0, seconds)):
                raise PlannerError("stopped while waiting to retry", kind="budget_stop")
            return
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if self.should_stop(force=True):
                raise PlannerError(f"stopped while waiting to retry: {self.polled_stop.reason if self.polled_stop else ''}", kind="budget_stop")
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.2, left))

    def on_retry(self, info: Any) -> bool:
        """Called by the planner before each retry: recorded, counted, and a chance to stop."""
        self.record(
            StepKind.RETRY,
            {"attempt": info.attempt, "status": info.status, "error": info.error, "wait_s": info.wait_s},
            counters={"model_calls": 1, "iterations": 1},
        )
        try:
            self.check_guards(before="model")
        except StopRun as stop:
            self.polled_stop = stop
            return False
        return True

    # --- model spend: reserved before the call, settled with its step, reconciled on takeover ---

    def reserve(self, max_tokens: int, tools: list[dict[str, Any]]) -> Reservation:
        """Reserve the call's worst case on the run and the day, in one transaction, before it is
        sent; lower max_tokens so that the call cannot pass the run's cost cap."""
        cap = self.policy.daily_max_cost_usd
        if self.run.planner_kind == "scripted":
            reservation = Reservation(max_tokens=max_tokens)
        else:
            reservation = price_call(
                model=self.agent.model,
                messages=self.conversation.messages,
                system=self.agent.objective,
                tools=tools,
                max_tokens=max_tokens,
                cap_usd=self.budget.max_cost_usd,
                spent_usd=self.run.cost_usd,
            )
        if cap is None and not reservation.cost_usd:
            return reservation
        with transaction.atomic():
            if not daily_consume(agent_id=self.agent.pk, key="cost_usd", amount=reservation.cost_usd, cap=cap):
                raise StopRun(RunStatus.BUDGET_EXCEEDED, f"daily cost cap ${cap} reached", guard="daily_cost_cap")
            reservation.daily = True
            if reservation.cost_usd and not Run.objects.filter(pk=self.run.pk, lease_owner=self.owner).update(
                reserved_cost_usd=reservation.cost_usd,
                reserved_input_tokens=reservation.input_tokens,
                reserved_output_tokens=reservation.output_tokens,
            ):
                raise LeaseLost(f"run {self.run.pk}")
        self.run.reserved_cost_usd = reservation.cost_usd
        self.run.reserved_input_tokens = reservation.input_tokens
        self.run.reserved_output_tokens = reservation.output_tokens
        return reservation

    def settle_daily(self, reservation: Reservation, actual: Decimal) -> None:
        delta = daily_delta(reservation, actual)
        if delta:
            daily_add(agent_id=self.agent.pk, key="cost_usd", amount=delta)

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
        reason = self.loops.check(action_key(call.name, call.arguments) if new_call and call else None)
        if reason:
            self.record(StepKind.GUARDRAIL, {"guard": "loop_detector", "reason": reason})
            raise StopRun(RunStatus.FAILED, f"loop detected: {reason}", guard="loop_detector", recorded=True)

    def check_caps(self, moment: str = "after") -> None:
        """moment: "model" (a model call is next), "tool" (a new tool call is next) or "after"
        (something was just spent)."""
        verdict = self.caps.check(self.run, self.wall_clock_s(), moment)
        for alarm in verdict.alarms:
            self.raise_alarm(alarm.measure, alarm.value, alarm.limit)
        if verdict.cap is not None:
            name, value, cap = verdict.cap.measure, verdict.cap.value, verdict.cap.limit
            self.record(StepKind.GUARDRAIL, {"guard": "budget", "measure": name, "value": str(value), "cap": str(cap), "source": self.budget.source})
            raise StopRun(RunStatus.BUDGET_EXCEEDED, f"{name} cap reached: {value} of {cap}", guard="budget", recorded=True)

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
