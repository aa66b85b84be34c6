"""One model turn: its spend reserved, the planner asked, the answer checked and recorded, the spend settled.

In order (``ModelTurns.take``): the tool definitions the agent may see, the worst case of the call
reserved on the run and the day (``guardrails/spend.py``: the call's ``max_tokens`` is lowered so that
it cannot pass the run's cost cap), the planner asked (a real model call in a helper thread the loop
can give up, ``runs/planning.py``), the answer checked (``llm/checks.py``), and the model-call step
written with its counters, which settles the reservation (with the day, in one transaction, when the
day's charge changes). A malformed or cut-off turn is recorded with a controller note and its calls
are never executed; ``MAX_UNUSABLE_TURNS`` of them in a row stop the run.

The loop's state (run, budget, conversation, guards) stays on the ``RunLoop``; this object keeps only
the planner and the tool definitions it was shown.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import transaction

from agentops.guardrails.base import StopRun
from agentops.guardrails.spend import Reservation, daily_delta, hold, price_call, settle_daily
from agentops.guardrails.stop_state import STOP_POLL_S
from agentops.llm.base import ModelTurn, PlannerError, RetryInfo
from agentops.llm.checks import check_turn, text_only
from agentops.runs.conversation import PendingCall
from agentops.runs.models import RunOutcome, RunStatus, StepKind
from agentops.runs.planning import CallAbandoned, abandoned_wait, call_watched, make_planner
from agentops.runs.steps import LeaseLost

if TYPE_CHECKING:
    from agentops.runs.controller import RunLoop

# Consecutive model turns the controller could not act on (malformed or cut off) before it stops.
MAX_UNUSABLE_TURNS = 3
# Planner failures that say the model API could not be reached, as opposed to a refused request.
_INFRA_PLANNER_KINDS = frozenset({"connection", "timeout", "server_error", "overloaded", "rate_limited"})


class ModelTurns:
    """Takes the model turns of one run for its controller (one per RunLoop)."""

    def __init__(self, loop: RunLoop) -> None:
        self.loop = loop
        self.planner = make_planner(loop.run, loop.agent, sleep=self._retry_sleep)
        self._definitions: list[dict[str, Any]] | None = None

    def tool_definitions(self) -> list[dict[str, Any]]:
        """The granted tools the agent's trust phase allows, as the model sees them (sorted by name).
        Grants are fixed for the life of this worker's turn at the run: computed once."""
        if self._definitions is None:
            loop = self.loop
            definitions = []
            for name in sorted(loop.grants):
                tool = loop.tools.get(name)
                if tool is not None and loop.agent.trust_phase >= tool.min_trust_phase:
                    definitions.append(tool.definition())
            self._definitions = definitions
        return self._definitions

    # --- one turn ----------------------------------------------------------------------------

    def take(self) -> None:
        loop = self.loop
        remaining_tokens = loop.budget.max_tokens - loop.run.total_tokens
        max_tokens = max(1, min(int(loop.agent.config.get("max_output_tokens", 4096)), remaining_tokens))
        tools = self.tool_definitions()
        reservation = self.reserve(max_tokens, tools)
        turn = self._ask(tools, reservation)
        self._record(turn, reservation)
        # Crossing a cap with this very call stops the run before anything it asked for happens.
        loop.check_caps(moment="after")

    def _ask(self, tools: list[dict[str, Any]], reservation: Reservation) -> ModelTurn:
        """The planner's answer; a failed or abandoned call is recorded (its reservation settled) and
        stops the run."""
        loop = self.loop
        try:
            return self.call_planner(
                system=loop.agent.objective,
                messages=loop.conversation.messages,
                tools=tools,
                model=loop.agent.model,
                max_tokens=reservation.max_tokens,
            )
        except CallAbandoned:
            # The call may still be answered and billed: the reservation is charged as spent.
            stop = loop.polled_stop or StopRun(RunStatus.KILLED, "stopped", guard="stop")
            loop.record(
                StepKind.ERROR,
                {"kind": "abandoned_model_call", "error": f"the model call in flight was abandoned: {stop.reason}", "cost_usd": str(reservation.cost_usd)},
                counters=reservation.charged(),
            )
            raise stop from None
        except PlannerError as exc:
            # Nothing was answered, so nothing was billed: the reservation is released with the step.
            with transaction.atomic():
                settle_daily(reservation, agent_id=loop.agent.pk, actual=Decimal("0"))
                loop.record(StepKind.ERROR, {"error": str(exc), "kind": exc.kind, "status": exc.status}, counters=reservation.release())
            if exc.kind == "budget_stop" and loop.polled_stop is not None:
                raise loop.polled_stop from None
            outcome = RunOutcome.INFRASTRUCTURE if exc.kind in _INFRA_PLANNER_KINDS else RunOutcome.ERROR
            raise StopRun(RunStatus.FAILED, f"model call failed: {exc.kind}: {exc}", outcome=outcome, recorded=True) from None

    def _record(self, turn: ModelTurn, reservation: Reservation) -> None:
        """The model-call step (with any error steps of the turn) and its counters, which settle the
        reservation; then the turn joins the conversation. Raises the stop a refusal or too many
        unusable turns call for, once all of it is recorded."""
        loop = self.loop
        check = check_turn(turn.content, turn.stop_reason, seen_ids=loop.conversation.seen_call_ids)
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
                kind, what = "truncated", f"was cut off ({turn.stop_reason}) at {reservation.max_tokens} output tokens"
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
            if loop.conversation.unusable_turns + 1 >= MAX_UNUSABLE_TURNS:
                outcome = RunOutcome.MALFORMED_OUTPUT if problems else RunOutcome.TRUNCATED
                stop = StopRun(RunStatus.FAILED, f"{MAX_UNUSABLE_TURNS} model turns in a row could not be used ({kind})", guard="model_output", outcome=outcome)
        elif turn.stop_reason == "refusal":
            calls = payload["tool_calls"] = []
            stop = StopRun(RunStatus.FAILED, "the model refused to continue (stop_reason refusal)", guard="model_output", outcome=RunOutcome.MODEL_REFUSED)
        counters = {**tokens, "cost_usd": cost, "model_calls": 1, "iterations": 1, **reservation.release()}
        if daily_delta(reservation, cost):
            # The day and the run are settled together, or neither is (then takeover reconciles).
            with transaction.atomic():
                settle_daily(reservation, agent_id=loop.agent.pk, actual=cost)
                loop.record_many(items, counters=counters)
        else:  # the common scripted case: one statement, no transaction block
            loop.record_many(items, counters=counters)
        loop.conversation.add_turn(
            payload["content"], turn.text, [PendingCall(c["id"], c["name"], c["arguments"]) for c in calls], None if usable else payload["controller_note"]
        )
        if stop is not None:
            raise stop

    # --- the planner call --------------------------------------------------------------------

    def call_planner(self, **kw: Any) -> ModelTurn:
        """One model turn. A scripted planner answers at once, in this thread. A real model call
        runs in a helper thread while this one keeps watching the stop conditions: the kill switch,
        a person's Stop or the wall-clock cap give the call up within STOP_POLL_S (CallAbandoned)
        instead of waiting for the API. The helper never touches the database or the loop: its
        retry callbacks are answered on this thread, and it reads only its own call's arguments."""
        loop = self.loop
        if self.planner.kind == "scripted":
            turn: ModelTurn = self.planner.next_turn(**kw, on_retry=self.on_retry)
            return turn
        # The helper gets its own copy of the message list: the conversation is only appended to
        # on this thread, and an abandoned helper may still be reading its arguments.
        kw = {**kw, "messages": list(kw["messages"])}
        return call_watched(
            self.planner.next_turn,
            kw,
            on_retry=self.on_retry,
            should_stop=lambda: loop.should_stop(force=True),
            poll_s=STOP_POLL_S,
            name=f"model-call-{loop.run.pk}",
        )

    def _retry_sleep(self, seconds: float) -> None:
        """The planner's backoff (an endpoint's retry-after included) is the controller's time: the
        kill switch, a person's Stop and the wall-clock cap end it at once."""
        gone = abandoned_wait(seconds)
        if gone is not None:
            # In the helper thread of a watched call: the loop's thread watches the stop conditions
            # and gives the call up, which ends this wait.
            if gone:
                raise PlannerError("stopped while waiting to retry", kind="budget_stop")
            return
        loop = self.loop
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if loop.should_stop(force=True):
                raise PlannerError(f"stopped while waiting to retry: {loop.polled_stop.reason if loop.polled_stop else ''}", kind="budget_stop")
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.2, left))

    def on_retry(self, info: RetryInfo) -> bool:
        """Called by the planner before each retry (on the loop's thread): recorded, counted, and a
        chance to stop. A stop found here is the loop's ``polled_stop``, raised once the planner
        has given the call up."""
        loop = self.loop
        loop.record(
            StepKind.RETRY,
            {"attempt": info.attempt, "status": info.status, "error": info.error, "wait_s": info.wait_s},
            counters={"model_calls": 1, "iterations": 1},
        )
        try:
            loop.check_guards(before="model")
        except StopRun as stop:
            loop.polled_stop = stop
            return False
        return True

    # --- model spend: reserved before the call, settled with its step, reconciled on takeover ---

    def reserve(self, max_tokens: int, tools: list[dict[str, Any]]) -> Reservation:
        """Reserve the call's worst case on the run and the day, in one transaction, before it is
        sent; lower max_tokens so that the call cannot pass the run's cost cap."""
        loop = self.loop
        run = loop.run
        if run.planner_kind == "scripted":
            reservation = Reservation(max_tokens=max_tokens)
        else:
            reservation = price_call(
                model=loop.agent.model,
                messages=loop.conversation.messages,
                system=loop.agent.objective,
                tools=tools,
                max_tokens=max_tokens,
                cap_usd=loop.budget.max_cost_usd,
                spent_usd=run.cost_usd,
            )
        if not hold(reservation, run_id=run.pk, lease_owner=loop.owner, agent_id=loop.agent.pk, daily_cap=loop.policy.daily_max_cost_usd):
            raise LeaseLost(f"run {run.pk}")
        if reservation.daily:  # held: mirror the run row
            run.reserved_cost_usd = reservation.cost_usd
            run.reserved_input_tokens = reservation.input_tokens
            run.reserved_output_tokens = reservation.output_tokens
        return reservation

    def reconcile_reservation(self) -> None:
        """A model call reserved by a worker that died before recording it: it may have been
        answered and billed, so the reservation is charged to the run as spent (the day was
        charged when it was reserved) and a step says so."""
        loop = self.loop
        unsettled = Reservation.unsettled(loop.run)
        if unsettled is None:
            return
        loop.record(
            StepKind.GUARDRAIL,
            {
                "guard": "unsettled_model_call",
                "reason": "a model call was in flight when its worker stopped; its reserved estimate is charged as spent",
                "cost_usd": str(unsettled.cost_usd),
                "input_tokens": unsettled.input_tokens,
                "output_tokens": unsettled.output_tokens,
            },
            counters=unsettled.charged(),
        )
        loop.check_caps(moment="after")
