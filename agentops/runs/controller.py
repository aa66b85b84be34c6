"""The controller: drives a model through tools, inside the agent's bounds.

Everything a run knows lives in its rows. The loop rebuilds the conversation from the steps when it
starts (a fresh run, a resume after an approval, or a takeover after a worker died), then mirrors
each step it commits in memory. Before every model call and every tool call it checks, in order:
kill switch, agent paused, per-run caps, daily aggregate caps, rate limit, loop detector. The model
proposes; only this module disposes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from statistics import median
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from agentops.agents.models import Agent, ApprovalOverride, Policy, ToolGrant
from agentops.guardrails.daily import daily_add, daily_consume
from agentops.guardrails.loops import Action, LoopDetector, action_key, observation_hash
from agentops.runs.models import (
    Artifact,
    ExecutionStatus,
    Run,
    RunStatus,
    Step,
    StepKind,
    ToolExecution,
)
from agentops.runs.services import run_finish
from agentops.runs.steps import LeaseLost, steps_record
from agentops.runs.workspace import RunServices
from agentops.tools.registry import ScopeViolation, Tool, ToolContext, ToolError, ToolResult, get_tool

log = logging.getLogger(__name__)

# What the model sees of one observation; the whole output is kept in the trace.
MODEL_OBSERVATION_LIMIT = 20_000
# Compact the conversation when it passes this share of the model's context window.
COMPACTION_THRESHOLD = 0.7
# How often a running tool polls for stop requests (kill switch, pause, cancel, lease).
STOP_POLL_S = 0.1
# A read-only call still running after this long gets its tool_call step written at once.
SLOW_TOOL_S = 0.05
HISTORY_MIN_RUNS = 5  # successful runs before history-based budget defaults apply


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Budget:
    max_tokens: int
    max_cost_usd: Decimal
    max_tool_calls: int
    max_iterations: int
    max_wall_clock_s: int
    alarm_tokens: int | None
    alarm_cost_usd: Decimal | None
    alarm_tool_calls: int | None
    alarm_iterations: int | None
    alarm_wall_clock_s: int | None
    source: str = "policy"


def cost_history(agent: Agent) -> list[Decimal]:
    return list(
        Run.objects.filter(agent=agent, status=RunStatus.SUCCEEDED, cost_usd__gt=0)
        .order_by("-finished_at")
        .values_list("cost_usd", flat=True)[:100]
    )


def effective_budget(policy: Policy) -> Budget:
    """The policy's caps, with the cost alarm and cap following the agent's history (seeds/001:
    alarm at 10x, hard stop at 50x the median successful run) unless a person set them."""
    budget = Budget(
        max_tokens=policy.max_tokens,
        max_cost_usd=policy.max_cost_usd,
        max_tool_calls=policy.max_tool_calls,
        max_iterations=policy.max_iterations,
        max_wall_clock_s=policy.max_wall_clock_s,
        alarm_tokens=policy.alarm_tokens,
        alarm_cost_usd=policy.alarm_cost_usd,
        alarm_tool_calls=policy.alarm_tool_calls,
        alarm_iterations=policy.alarm_iterations,
        alarm_wall_clock_s=policy.alarm_wall_clock_s,
    )
    if not policy.budget_set_by_person:
        history = cost_history(policy.agent)
        if len(history) >= HISTORY_MIN_RUNS:
            typical = Decimal(median(history))
            budget.alarm_cost_usd = (typical * 10).quantize(Decimal("0.000001"))
            budget.max_cost_usd = (typical * 50).quantize(Decimal("0.000001"))
            budget.source = f"history: median ${typical:.4f} over {len(history)} runs"
    return budget


class StopRun(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class WaitForApproval(Exception):
    pass


@dataclass
class PendingCall:
    id: str
    name: str
    arguments: Any


class Heartbeat(threading.Thread):
    """Renews the lease; if renewal fails the run belongs to someone else and we must stop."""

    def __init__(self, run_id: int, owner: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{run_id}")
        self.run_id = run_id
        self.owner = owner
        self.lost = threading.Event()
        self._stop = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop.wait(settings.AGENTOPS_HEARTBEAT_S):
                now = timezone.now()
                renewed = Run.objects.filter(pk=self.run_id, lease_owner=self.owner).update(
                    heartbeat_at=now, lease_expires_at=now + timedelta(seconds=settings.AGENTOPS_LEASE_TTL_S)
                )
                if not renewed:
                    self.lost.set()
                    return
        except Exception:
            log.exception("heartbeat of run %s failed", self.run_id)
            self.lost.set()
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop.set()


def claim_run(run_id: int, owner: str) -> bool:
    """Take a queued run, or a running one whose worker stopped renewing its lease. Two workers
    racing for the same run: the conditional UPDATE lets exactly one win."""
    now = timezone.now()
    expires = now + timedelta(seconds=settings.AGENTOPS_LEASE_TTL_S)
    claimable = Q(status=RunStatus.QUEUED) | Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    return (
        Run.objects.filter(claimable, pk=run_id).update(
            status=RunStatus.RUNNING,
            lease_owner=owner,
            lease_expires_at=expires,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
        )
        == 1
    )


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
        self.messages: list[dict[str, Any]] = []
        self.loops = LoopDetector()
        self.recorded_tool_calls: set[str] = set()
        self.observed: set[str] = set()
        self.last_turn_calls: list[PendingCall] = []
        self.last_turn_text = ""
        self.last_turn_final = False
        self.tool_times: deque[float] = deque()
        self.alarms = set(run.alarms_raised or [])
        self.run_result: dict[str, Any] = dict(run.result or {})
        self.input_text = ""
        self.summary = ""
        self._last_stop_poll = 0.0
        self._stop_reason: StopRun | None = None
        self._pending_tool_call: dict[str, Any] | None = None
        self._tool_started = 0.0
        self._fresh_state: dict[str, bool] | None = None
        self._tool_definitions: list[dict[str, Any]] | None = None
        self.planner = self._make_planner()

    # --- lifecycle --------------------------------------------------------------------------

    def execute(self) -> str:
        if self.run.started_at is None:
            Run.objects.filter(pk=self.run.pk, started_at__isnull=True).update(started_at=timezone.now())
        self.heartbeat.start()
        try:
            self.rebuild()
            self.loop()
            return "finished"
        except WaitForApproval:
            return "waiting"
        except StopRun as stop:
            self.finish(stop.status, stop.reason)
            return stop.status
        except LeaseLost:
            log.warning("run %s: lease lost, stopping without further writes", self.run.pk)
            return "lease-lost"
        except Exception as exc:
            log.exception("run %s failed", self.run.pk)
            try:
                self.record(StepKind.ERROR, {"error": f"{type(exc).__name__}: {exc}"})
                self.finish(RunStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}", error=repr(exc))
            except LeaseLost:
                pass
            return RunStatus.FAILED
        finally:
            self.heartbeat.stop()
            self._save_active_time()
            self.services.close()

    def _save_active_time(self) -> None:
        elapsed = time.monotonic() - self.segment_started
        Run.objects.filter(pk=self.run.pk).update(active_seconds=F("active_seconds") + elapsed)

    def wall_clock_s(self) -> float:
        return self.run.active_seconds + (time.monotonic() - self.segment_started)

    def finish(self, status: str, reason: str, error: str = "") -> None:
        self.run_result.setdefault("final_text", self.last_turn_text)
        run_finish(
            run_id=self.run.pk,
            status=status,
            reason=reason,
            lease_owner=self.owner,
            error=error,
            result=self.run_result,
        )

    def record_many(self, items: list[dict[str, Any]], counters: dict[str, Any] | None = None) -> list[Step]:
        state: dict[str, bool] = {}
        steps = steps_record(run=self.run.pk, items=items, lease_owner=self.owner, counters=counters, state_out=state)
        # The write saw the stop state in the same statement: the next guard check may use it.
        self._fresh_state = state or None
        # The same UPDATE moved the counters in the database; mirror them.
        for name, value in (counters or {}).items():
            setattr(self.run, name, getattr(self.run, name) + value)
        return steps

    def record(self, kind: str, payload: dict[str, Any], counters: dict[str, Any] | None = None, **fields: Any) -> Step:
        return self.record_many([{"kind": kind, "payload": payload, **fields}], counters)[0]

    def _make_planner(self) -> Any:
        from agentops.llm import get_planner

        if self.run.planner_kind == "anthropic":
            return get_planner(
                "anthropic",
                api_key=settings.ANTHROPIC_API_KEY,
                base_url=settings.ANTHROPIC_BASE_URL,
                timeout_s=settings.ANTHROPIC_TIMEOUT_S,
                max_retries=settings.ANTHROPIC_MAX_RETRIES,
                backoff_base_s=settings.ANTHROPIC_BACKOFF_S,
            )
        script = self.agent.config.get("script")
        if not script:
            raise StopRun(RunStatus.FAILED, "scripted planner without a script (config.script)")
        if isinstance(script, list):  # turns inline in the agent's config
            return get_planner("scripted", script=script)
        path = Path(script)
        if not path.is_absolute():
            path = Path(settings.BASE_DIR) / path
        return get_planner("scripted", script=path)

    # --- conversation memory ----------------------------------------------------------------

    def rebuild(self) -> None:
        """The conversation, from the steps alone (never from a previous worker's memory)."""
        steps = list(Step.objects.filter(run=self.run).order_by("seq"))
        # Whole texts of truncated payload fields, by (step, field).
        whole = {
            (a.step_id, a.name.rsplit("-", 1)[-1]): a.content
            for a in Artifact.objects.filter(run=self.run, step__isnull=False).only("step_id", "name", "content")
        }
        messages: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        calls_by_id: dict[str, PendingCall] = {}
        input_text = ""

        def flush_results() -> None:
            if results:
                messages.append({"role": "user", "content": list(results)})
                results.clear()

        for step in steps:
            p = step.payload
            if step.kind == StepKind.INPUT:
                input_text = whole.get((step.pk, "text")) or p.get("text", "")
                input_text = self._input_message(input_text)
                messages.append({"role": "user", "content": input_text})
            elif step.kind == StepKind.MODEL_CALL:
                flush_results()
                messages.append({"role": "assistant", "content": p.get("content") or [{"type": "text", "text": p.get("text", "")}]})
                self.last_turn_text = p.get("text", "")
                self.last_turn_calls = [PendingCall(c["id"], c["name"], c.get("arguments")) for c in p.get("tool_calls", [])]
                for call in self.last_turn_calls:
                    calls_by_id[call.id] = call
                self.last_turn_final = not self.last_turn_calls
            elif step.kind == StepKind.TOOL_CALL:
                self.recorded_tool_calls.add(p.get("tool_call_id", ""))
                self.tool_times.append(step.created_at.timestamp())
            elif step.kind == StepKind.OBSERVATION:
                text = p.get("output", "")
                if "output_truncated" in p:
                    text = whole.get((step.pk, "output"), text)
                tool_use_id = p.get("tool_call_id", "")
                self.observed.add(tool_use_id)
                results.append(self._tool_result_block(tool_use_id, text, bool(p.get("is_error"))))
                call = calls_by_id.get(tool_use_id)
                if call is not None and p.get("counts_for_loops", True):
                    self.loops.add(Action(action_key(call.name, call.arguments), observation_hash(text), bool(p.get("is_error"))))
            elif step.kind == StepKind.COMPACTION:
                flush_results()
                kept = int(p.get("kept_messages", 0))
                summary = whole.get((step.pk, "summary")) or p.get("summary", "")
                self.summary = summary
                messages = [{"role": "user", "content": input_text + "\n\n" + summary}] + (messages[-kept:] if kept else [])
        flush_results()
        self.messages = messages
        self.input_text = input_text

    def _input_message(self, text: str) -> str:
        context = self.run.context or {}
        if context:
            import json

            # Trigger data is untrusted input (an error message can carry instructions): it is
            # framed as data for the model, and nothing in the controller acts on its content.
            return f"{text}\n\n<trigger_data>\n{json.dumps(context, indent=2, default=str)[:20000]}\n</trigger_data>"
        return text

    @staticmethod
    def _tool_result_block(tool_use_id: str, text: str, is_error: bool) -> dict[str, Any]:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": text or "(no output)"}
        if is_error:
            block["is_error"] = True
        return block

    def _append_result(self, tool_use_id: str, text: str, is_error: bool) -> None:
        block = self._tool_result_block(tool_use_id, text, is_error)
        last = self.messages[-1] if self.messages else None
        if last and last["role"] == "user" and isinstance(last["content"], list) and last["content"] and last["content"][0].get("type") == "tool_result":
            last["content"].append(block)
        else:
            self.messages.append({"role": "user", "content": [block]})

    # --- the loop ----------------------------------------------------------------------------

    def loop(self) -> None:
        while True:
            for call in self.last_turn_calls:
                if call.id not in self.observed:
                    self.handle_tool_call(call)
            if self.last_turn_final:
                self.finish(RunStatus.SUCCEEDED, "the agent finished")
                return
            self.check_guards(before="model")
            self.maybe_compact()
            self.model_turn()

    def model_turn(self) -> None:
        from agentops.llm.base import PlannerError

        reserved = self._reserve_daily_cost()
        remaining_tokens = self.budget.max_tokens - self.run.total_tokens
        max_tokens = max(1, min(int(self.agent.config.get("max_output_tokens", 4096)), remaining_tokens))
        if self._tool_definitions is None:  # grants are fixed for the life of this worker's turn at the run
            self._tool_definitions = [t for t in (self.tool_definition(name) for name in sorted(self.grants)) if t is not None]
        tools = self._tool_definitions
        try:
            turn = self.planner.next_turn(
                system=self.agent.objective,
                messages=self.messages,
                tools=tools,
                model=self.agent.model,
                max_tokens=max_tokens,
                on_retry=self.on_retry,
            )
        except PlannerError as exc:
            self._settle_daily_cost(reserved, Decimal("0"))
            self.record(StepKind.ERROR, {"error": str(exc), "kind": exc.kind, "status": exc.status})
            if exc.kind == "budget_stop" and self._stop_reason is not None:
                raise self._stop_reason from None
            raise StopRun(RunStatus.FAILED, f"model call failed: {exc.kind}: {exc}") from None
        self._settle_daily_cost(reserved, turn.cost_usd)
        calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in turn.tool_calls]
        self.record(
            StepKind.MODEL_CALL,
            {
                "text": turn.text,
                "tool_calls": calls,
                "content": turn.content,
                "stop_reason": turn.stop_reason,
                "scripted": turn.scripted,
                "planner": self.planner.kind,
                "cache_read_tokens": turn.cache_read_tokens,
                "cache_write_tokens": turn.cache_write_tokens,
            },
            counters={
                "input_tokens": turn.input_tokens,
                "output_tokens": turn.output_tokens,
                "cache_read_tokens": turn.cache_read_tokens,
                "cache_write_tokens": turn.cache_write_tokens,
                "cost_usd": turn.cost_usd,
                "model_calls": 1,
                "iterations": 1,
            },
            model_id=turn.model,
            input_tokens=turn.input_tokens,
            output_tokens=turn.output_tokens,
            cost_usd=turn.cost_usd,
            latency_ms=turn.latency_ms,
        )
        self.messages.append({"role": "assistant", "content": turn.content or [{"type": "text", "text": turn.text or "(empty)"}]})
        self.last_turn_text = turn.text
        self.last_turn_calls = [PendingCall(c["id"], c["name"], c["arguments"]) for c in calls]
        self.last_turn_final = not calls
        # Crossing a cap with this very call stops the run before anything it asked for happens.
        self.check_caps(moment="after")

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
            self._stop_reason = stop
            return False
        return True

    # --- daily cost: reserve before the call so concurrent runs cannot jointly overshoot -----

    def _reserve_daily_cost(self) -> Decimal:
        cap = self.policy.daily_max_cost_usd
        if cap is None:
            return Decimal("0")
        from agentops.llm.base import count_tokens_estimate
        from agentops.llm.prices import UnknownModelPrice, cost_of

        if self.run.planner_kind == "scripted":
            estimate = Decimal("0")
        else:
            try:
                estimate = cost_of(self.agent.model, count_tokens_estimate(self.messages, self.agent.objective), 4096, 0, 0)
            except UnknownModelPrice:
                raise StopRun(RunStatus.FAILED, f"no price known for model {self.agent.model}: refusing to spend") from None
        if not daily_consume(agent_id=self.agent.pk, key="cost_usd", amount=estimate, cap=cap):
            raise StopRun(RunStatus.BUDGET_EXCEEDED, f"daily cost cap ${cap} reached")
        return estimate

    def _settle_daily_cost(self, reserved: Decimal, actual: Decimal) -> None:
        if self.policy.daily_max_cost_usd is None:
            if actual:
                daily_add(agent_id=self.agent.pk, key="cost_usd", amount=actual)
        elif actual != reserved:
            daily_add(agent_id=self.agent.pk, key="cost_usd", amount=actual - reserved)

    # --- guards ------------------------------------------------------------------------------

    def check_guards(self, *, before: str, call: PendingCall | None = None, tool: Tool | None = None) -> None:
        """before: "model" or "tool". The order is the product's contract: kill switch, pause,
        per-run caps, daily caps, rate limit, loop detector."""
        if self.heartbeat.lost.is_set():
            raise LeaseLost(f"run {self.run.pk}")
        # The state as the write just before this check saw it (nothing happened in between but
        # Python), or, when there was no such write, as the database says now.
        fresh, self._fresh_state = self._fresh_state, None
        stop = self._stop_from(fresh) if fresh is not None else self.stop_state()
        if stop is not None:
            raise stop
        new_call = call is not None and call.id not in self.recorded_tool_calls
        self.check_caps(moment=before if (before == "model" or new_call) else "after")
        if new_call and tool is not None:
            self.check_daily_actions(tool)
            self.wait_for_rate_limit()
        reason = self.loops.check(action_key(call.name, call.arguments) if new_call and call else None)
        if reason:
            self.record(StepKind.GUARDRAIL, {"guard": "loop_detector", "reason": reason})
            raise StopRun(RunStatus.FAILED, f"loop detected: {reason}")

    def stop_state(self) -> StopRun | None:
        """Kill switch, pause and a person's Stop, read in one query (this runs before every action)."""
        # Hand-written: it runs twice per iteration, and the ORM would spend more time compiling
        # it than the database spends answering.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT r.cancel_requested, a.paused, EXISTS (SELECT 1 FROM guardrails_controlstate c WHERE c.id = 1 AND c.engaged) "
                "FROM runs_run r JOIN agents_agent a ON a.id = r.agent_id WHERE r.id = %s",
                [self.run.pk],
            )
            row = cursor.fetchone()
        if row is None:
            return StopRun(RunStatus.FAILED, "run row vanished")
        cancel_requested, paused, killed = row
        return self._stop_from({"cancel_requested": cancel_requested, "paused": paused, "killed": killed})

    @staticmethod
    def _stop_from(state: dict[str, bool]) -> StopRun | None:
        cancel_requested, paused, killed = state["cancel_requested"], state["paused"], state["killed"]
        if killed:
            return StopRun(RunStatus.KILLED, "kill switch engaged")
        if paused:
            return StopRun(RunStatus.KILLED, "agent paused")
        if cancel_requested:
            return StopRun(RunStatus.KILLED, "stopped by a person")
        return None

    def check_caps(self, moment: str = "after") -> None:
        """moment: "model" (a model call is next), "tool" (a new tool call is next) or "after"
        (something was just spent). Spent measures stop at the cap; counted ones stop when the
        next call would pass it."""
        b, r = self.budget, self.run
        measures = [
            ("tokens", r.total_tokens, b.max_tokens, b.alarm_tokens, True),
            ("cost_usd", r.cost_usd, b.max_cost_usd, b.alarm_cost_usd, True),
            ("iterations", r.iterations, b.max_iterations, b.alarm_iterations, moment == "model"),
            ("tool_calls", r.tool_calls, b.max_tool_calls, b.alarm_tool_calls, moment == "tool"),
            ("wall_clock_s", int(self.wall_clock_s()), b.max_wall_clock_s, b.alarm_wall_clock_s, True),
        ]
        for name, value, cap, alarm, applies in measures:
            if alarm is not None and value >= alarm and name not in self.alarms:
                self.raise_alarm(name, value, alarm)
            if applies and value >= cap:
                self.record(StepKind.GUARDRAIL, {"guard": "budget", "measure": name, "value": str(value), "cap": str(cap), "source": b.source})
                raise StopRun(RunStatus.BUDGET_EXCEEDED, f"{name} cap reached: {value} of {cap}")

    def raise_alarm(self, name: str, value: Any, threshold: Any) -> None:
        from agentops.notify import notify

        self.alarms.add(name)
        Run.objects.filter(pk=self.run.pk).update(alarms_raised=sorted(self.alarms))
        self.record(StepKind.ALARM, {"measure": name, "value": str(value), "threshold": str(threshold)})
        notify(
            event="alarm",
            subject=f"Alarm: run {self.run.pk} of {self.agent.name} passed its {name} alarm",
            text=f"{name} is {value} (alarm at {threshold}).",
            path=f"/runs/{self.run.pk}/",
        )

    def check_daily_actions(self, tool: Tool) -> None:
        caps = self.policy.daily_action_caps or {}
        for key in (f"action:{tool.risk_class}", f"tool:{tool.name}"):
            short = key.split(":", 1)[1] if key.startswith("action:") else key
            cap = caps.get(short, caps.get(key))
            if cap is None:
                continue
            if not daily_consume(agent_id=self.agent.pk, key=key, amount=1, cap=cap):
                self.record(StepKind.GUARDRAIL, {"guard": "daily_cap", "key": key, "cap": cap})
                raise StopRun(RunStatus.BUDGET_EXCEEDED, f"daily cap for {key} reached ({cap})")

    def wait_for_rate_limit(self) -> None:
        limit = self.policy.rate_limit_per_minute
        if not limit:
            return
        now = time.time()
        while self.tool_times and self.tool_times[0] < now - 60:
            self.tool_times.popleft()
        if len(self.tool_times) < limit:
            return
        wait = self.tool_times[0] + 60 - now
        self.record(StepKind.GUARDRAIL, {"guard": "rate_limit", "limit_per_minute": limit, "waiting_s": round(wait, 2)})
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.should_stop(force=True):
                raise self._stop_reason or StopRun(RunStatus.KILLED, "stopped while rate limited")
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def should_stop(self, force: bool = False) -> bool:
        """Polled by running tools. Cheap: at most one check per STOP_POLL_S."""
        now = time.monotonic()
        if not force and now - self._last_stop_poll < STOP_POLL_S:
            return self._stop_reason is not None
        self._last_stop_poll = now
        try:
            if self._pending_tool_call is not None and now - self._tool_started > SLOW_TOOL_S:
                # A slow call is shown live while it runs, not only when it ends.
                self.flush_tool_call()
            if self.heartbeat.lost.is_set():
                self._stop_reason = StopRun(RunStatus.FAILED, "lease lost")
            else:
                self._stop_reason = self.stop_state()
                if self._stop_reason is None and self.wall_clock_s() >= self.budget.max_wall_clock_s:
                    self._stop_reason = StopRun(RunStatus.BUDGET_EXCEEDED, f"wall_clock_s cap reached: {self.budget.max_wall_clock_s}")
        except Exception:
            # Cannot tell whether we may go on: fail closed.
            log.exception("stop check of run %s failed", self.run.pk)
            self._stop_reason = StopRun(RunStatus.FAILED, "could not check stop conditions")
        return self._stop_reason is not None

    # --- tools -------------------------------------------------------------------------------

    def tool_definition(self, name: str) -> dict[str, Any] | None:
        tool = get_tool(name)
        if tool is None or self.agent.trust_phase < tool.min_trust_phase:
            return None
        return tool.definition()

    def observe(self, call: PendingCall, text: str, *, is_error: bool, counts_for_loops: bool = True, data: dict[str, Any] | None = None) -> None:
        model_text = text
        if len(model_text) > MODEL_OBSERVATION_LIMIT:
            model_text = model_text[:MODEL_OBSERVATION_LIMIT] + f"\n[output truncated: {len(text)} characters in all]"
        payload: dict[str, Any] = {"tool_call_id": call.id, "tool": call.name, "output": model_text, "is_error": is_error}
        if self.services.sandbox_backend:
            payload["sandbox"] = self.services.sandbox_backend
        if not counts_for_loops:
            payload["counts_for_loops"] = False
        if data:
            payload["data"] = {k: v for k, v in data.items() if k not in ("workspace_diff", "run_result")}
        if self._pending_tool_call is not None and self._pending_tool_call["tool_call_id"] == call.id:
            pending, self._pending_tool_call = self._pending_tool_call, None
            self.record_many([{"kind": StepKind.TOOL_CALL, "payload": pending}, {"kind": StepKind.OBSERVATION, "payload": payload}], counters={"tool_calls": 1})
        else:
            self.record(StepKind.OBSERVATION, payload)
        self.observed.add(call.id)
        self._append_result(call.id, model_text, is_error)
        if counts_for_loops:
            self.loops.add(Action(action_key(call.name, call.arguments), observation_hash(model_text), is_error))

    def refuse(self, call: PendingCall, guard: str, reason: str) -> None:
        self.record(StepKind.GUARDRAIL, {"guard": guard, "tool": call.name, "tool_call_id": call.id, "reason": reason})
        self.observe(call, f"Refused by the controller: {reason}", is_error=True)

    def handle_tool_call(self, call: PendingCall) -> None:
        tool = get_tool(call.name)
        self.check_guards(before="tool", call=call, tool=tool)
        if tool is None:
            return self.refuse(call, "unknown_tool", f"there is no tool named {call.name!r}")
        grant = self.grants.get(call.name)
        if grant is None:
            return self.refuse(call, "no_grant", f"this agent has no grant for {call.name!r}")
        scope_errors = tool.scope_errors(grant.scope)
        if scope_errors:
            # An unparsable scope means we do not know the boundary: fail closed.
            return self.refuse(call, "bad_scope", "the grant's scope is invalid: " + "; ".join(scope_errors))
        if self.agent.trust_phase < tool.min_trust_phase:
            return self.refuse(call, "trust_phase", f"{call.name} needs trust phase {tool.min_trust_phase}; this agent is at phase {self.agent.trust_phase}")
        if not isinstance(call.arguments, dict):
            return self.observe(call, "Invalid arguments: expected a JSON object", is_error=True)
        arg_errors = tool.argument_errors(call.arguments)
        if arg_errors:
            return self.observe(call, "Invalid arguments, the tool did not run:\n" + "\n".join(arg_errors), is_error=True)

        key = f"run-{self.run.pk}:{call.id}"
        ctx = ToolContext(
            run=self.run,
            agent=self.agent,
            scope=grant.scope,
            tool_call_id=call.id,
            idempotency_key=key,
            should_stop=self.should_stop,
            emit=self.emitter(call),
            services=self.services,  # type: ignore[arg-type]
        )
        resumed = call.id in self.recorded_tool_calls
        if not resumed:
            self.recorded_tool_calls.add(call.id)
            self.tool_times.append(time.time())
            self._tool_started = time.monotonic()
            self._pending_tool_call = {
                "tool": call.name, "tool_call_id": call.id, "arguments": call.arguments, "idempotency_key": key, "risk_class": tool.risk_class,
            }
            # A side effect, or anything a person may have to approve, is on record (committed)
            # before it happens. A read-only call is recorded with its observation in one commit:
            # if the worker dies meanwhile, repeating a read harms nothing.
            if tool.side_effecting or self.approval_needed_statically(tool, grant):
                self.flush_tool_call()
        decision = self.approval_gate(call, tool, grant, ctx, resumed=resumed)
        if decision is not None:
            return self.observe(call, decision, is_error=True, counts_for_loops=False)
        result = self.execute_with_ledger(call, tool, ctx)
        if self._stop_reason is not None:
            self.observe(call, f"Cancelled: {self._stop_reason.reason}", is_error=True, counts_for_loops=False)
            raise self._stop_reason
        if result.data.get("run_result"):
            self.run_result.update(result.data["run_result"])
            Run.objects.filter(pk=self.run.pk).update(result=self.run_result)
        self.observe(call, result.output, is_error=result.is_error, data=result.data)

    def flush_tool_call(self) -> None:
        """Write the pending tool_call step now (before a side effect, or before streamed output)."""
        if self._pending_tool_call is not None:
            payload, self._pending_tool_call = self._pending_tool_call, None
            self.record(StepKind.TOOL_CALL, payload, counters={"tool_calls": 1})

    @staticmethod
    def approval_needed_statically(tool: Tool, grant: ToolGrant) -> bool:
        return grant.approval == ApprovalOverride.ALWAYS or tool.risk_class == "irreversible"

    def approval_gate(self, call: PendingCall, tool: Tool, grant: ToolGrant, ctx: ToolContext, *, resumed: bool) -> str | None:
        """None to proceed; a text (the observation) when a person said no; raises to wait."""
        from agentops.approvals.models import Approval, ApprovalStatus

        # Only a call recorded before this worker started can have an approval already.
        existing = Approval.objects.filter(run=self.run, tool_call_id=call.id).first() if resumed else None
        if existing is not None:
            if existing.status == ApprovalStatus.APPROVED:
                return None
            if existing.status == ApprovalStatus.PENDING:
                self._wait()
            return f"{existing.status.capitalize()} by {existing.decided_by_label or 'nobody'}: {existing.comment or 'no comment'}"
        why = self.approval_needed(call, tool, grant, ctx)
        if why is None:
            return None
        from agentops.approvals.services import approval_request
        from agentops.notify import notify

        with transaction.atomic():
            approval = approval_request(
                run=self.run,
                step_id=None,
                tool_call_id=call.id,
                tool=call.name,
                arguments=call.arguments,
                risk_class=tool.risk_class,
                reason=self.last_turn_text,
                why_needed=why,
                timeout_s=self.policy.approval_timeout_s,
            )
            if not Run.objects.filter(pk=self.run.pk, lease_owner=self.owner, status=RunStatus.RUNNING).update(
                status=RunStatus.WAITING_APPROVAL, lease_owner="", lease_expires_at=None
            ):
                raise LeaseLost(f"run {self.run.pk}")
        notify(
            event="approval",
            subject=f"{self.agent.name} asks to run {call.name}",
            text=f"Run {self.run.pk} waits for a person: {why}.",
            path=f"/approvals/#approval-{approval.pk}",
        )
        raise WaitForApproval()

    def approval_needed(self, call: PendingCall, tool: Tool, grant: ToolGrant, ctx: ToolContext) -> str | None:
        if grant.approval == ApprovalOverride.ALWAYS:
            return "the grant requires a person for every call"
        if tool.risk_class == "irreversible":
            if tool.auto_approve is not None and self.agent.trust_phase >= 4:
                allowed, why = tool.auto_approve(call.arguments, ctx)
                self.record(StepKind.GUARDRAIL, {"guard": "auto_approve", "tool": call.name, "allowed": allowed, "reason": why})
                if allowed:
                    return None
                return f"irreversible action, not low-risk: {why}"
            return "irreversible action"
        return None

    def _wait(self) -> None:
        if not Run.objects.filter(pk=self.run.pk, lease_owner=self.owner, status=RunStatus.RUNNING).update(
            status=RunStatus.WAITING_APPROVAL, lease_owner="", lease_expires_at=None
        ):
            raise LeaseLost(f"run {self.run.pk}")
        raise WaitForApproval()

    def emitter(self, call: PendingCall) -> Any:
        """Stream a tool's output into the trace, at most a few steps per second."""
        buffer: list[str] = []
        last = [time.monotonic()]

        def emit(text: str, flush: bool = False) -> None:
            buffer.append(text)
            if flush or time.monotonic() - last[0] >= 0.5 or sum(map(len, buffer)) > 8000:
                chunk = "".join(buffer)
                buffer.clear()
                last[0] = time.monotonic()
                if chunk:
                    self.flush_tool_call()  # the call comes before its output in the trace
                    self.record(
                        StepKind.PROGRESS,
                        {"tool_call_id": call.id, "tool": call.name, "output": chunk[-8000:], "sandbox": self.services.sandbox_backend},
                    )

        return emit

    def execute_with_ledger(self, call: PendingCall, tool: Tool, ctx: ToolContext) -> ToolResult:
        if tool.side_effecting:
            try:
                with transaction.atomic():
                    ToolExecution.objects.create(key=ctx.idempotency_key, run=self.run, tool=tool.name, arguments=call.arguments)
            except IntegrityError:
                done = ToolExecution.objects.get(key=ctx.idempotency_key)
                if done.status == ExecutionStatus.STARTED:
                    # A worker died while this action ran: we cannot know whether it happened.
                    # Never act twice; tell the model and let it look before trying anything.
                    return ToolResult(
                        output="This action was interrupted by a worker failure; its outcome is unknown and it was not repeated. Inspect the state before retrying.",
                        is_error=True,
                    )
                recorded = done.result or {}
                return ToolResult(output=recorded.get("output", ""), is_error=recorded.get("is_error", False), data=recorded.get("data", {}))
        try:
            result = tool.executor(call.arguments, ctx)
        except ScopeViolation as exc:
            self.record(StepKind.GUARDRAIL, {"guard": "scope", "tool": call.name, "reason": str(exc)})
            result = ToolResult(output=f"Refused: {exc}", is_error=True)
        except ToolError as exc:
            result = ToolResult(output=f"Error: {exc}", is_error=True)
        except LeaseLost:
            raise
        except Exception as exc:  # a tool's crash is an observation, not the controller's crash
            log.exception("tool %s crashed in run %s", call.name, self.run.pk)
            result = ToolResult(output=f"Tool failed: {type(exc).__name__}: {exc}", is_error=True)
        try:
            ctx.emit("", True)  # type: ignore[call-arg]
        except TypeError:
            pass
        if tool.side_effecting:
            from agentops.redaction import redact

            ToolExecution.objects.filter(key=ctx.idempotency_key).update(
                status=ExecutionStatus.FAILED if result.is_error else ExecutionStatus.SUCCEEDED,
                result=redact({"output": result.output, "is_error": result.is_error, "data": result.data}),
                finished_at=timezone.now(),
            )
        return result

    # --- memory compaction -------------------------------------------------------------------

    def maybe_compact(self) -> None:
        from agentops.llm.base import context_window, count_tokens_estimate

        if self.planner.kind == "scripted":
            # A script replays turns by counting the assistant messages it is shown; compaction
            # would rewind it. Scripted runs are short by construction.
            return
        window = context_window(self.agent.model)
        if count_tokens_estimate(self.messages, self.agent.objective) < COMPACTION_THRESHOLD * window:
            return
        # Keep the last exchange verbatim (an assistant turn and its results); summarise the rest.
        keep = self.messages[-2:] if len(self.messages) >= 4 else []
        older = self.messages[1 : len(self.messages) - len(keep)]
        if not older:
            return
        lines = [self.summary] if self.summary else ["Summary of earlier work (older turns were compacted by the controller):"]
        for message in older:
            content = message["content"]
            if isinstance(content, str):
                lines.append(f"- {message['role']}: {content[:300]}")
                continue
            for block in content:
                if block.get("type") == "text":
                    lines.append(f"- you said: {block['text'][:300]}")
                elif block.get("type") == "tool_use":
                    lines.append(f"- you called {block['name']} with {str(block.get('input'))[:200]}")
                elif block.get("type") == "tool_result":
                    lines.append(f"  result{' (error)' if block.get('is_error') else ''}: {str(block.get('content'))[:300]}")
        # The newest lines matter most when the summary itself grows too long.
        self.summary = "\n".join(lines)[-40_000:]
        self.record(StepKind.COMPACTION, {"summary": self.summary, "compacted_messages": len(older), "kept_messages": len(keep)})
        self.messages = [{"role": "user", "content": self.input_text + "\n\n" + self.summary}] + keep
