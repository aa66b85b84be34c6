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
import queue
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from agentops.agents.models import Agent, ApprovalOverride, Policy, ToolGrant
from agentops.guardrails.budgets import HISTORY_MIN_RUNS, Budget, cost_history, effective_budget  # noqa: F401  re-exported
from agentops.guardrails.daily import daily_add, daily_consume
from agentops.guardrails.loops import Action, LoopDetector, action_key, observation_hash, shape_key
from agentops.llm.checks import ECHOABLE_BLOCKS
from agentops.redaction import redact_text
from agentops.runs import transitions
from agentops.runs.models import (
    Artifact,
    ExecutionStatus,
    Run,
    RunOutcome,
    RunStatus,
    Step,
    StepKind,
    ToolExecution,
)
from agentops.runs.steps import LeaseLost, steps_record
from agentops.runs.workspace import RunServices
from agentops.tools.registry import ScopeViolation, Tool, ToolContext, ToolError, ToolResult, get_tool

log = logging.getLogger(__name__)

# The most of a tool's streamed output one progress step keeps.
PROGRESS_CHUNK = 8000
# What the model sees of one observation; the whole output is kept in the trace.
MODEL_OBSERVATION_LIMIT = 20_000
# Compact the conversation when it passes this share of the model's context window.
COMPACTION_THRESHOLD = 0.7
# How often a running tool polls for stop requests (kill switch, pause, cancel, lease).
STOP_POLL_S = 0.1
# A read-only call still running after this long gets its tool_call step written at once.
SLOW_TOOL_S = 0.05
# Consecutive model turns the controller could not act on (malformed or cut off) before it stops.
MAX_UNUSABLE_TURNS = 3
# Planner failures that say the model API could not be reached, as opposed to a refused request.
_INFRA_PLANNER_KINDS = frozenset({"connection", "timeout", "server_error", "overloaded", "rate_limited"})


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class StopRun(Exception):
    """Ends the run. ``recorded``: a step explaining the stop was already written; otherwise the
    controller writes a guardrail step for it before finishing (every stop explains itself)."""

    def __init__(
        self, status: str, reason: str, *, guard: str = "stop", outcome: str = "", recorded: bool = False, payload: dict[str, Any] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.guard = guard
        self.outcome = outcome
        self.recorded = recorded
        self.payload = payload or {}


_OUTCOME_OF_GUARD = {
    "budget": RunOutcome.BUDGET,
    "daily_cap": RunOutcome.BUDGET,
    "daily_cost_cap": RunOutcome.BUDGET,
    "loop_detector": RunOutcome.LOOP,
    "kill_switch": RunOutcome.KILLED_BY_SWITCH,
    "paused": RunOutcome.STOPPED_BY_PERSON,
    "stopped_by_person": RunOutcome.STOPPED_BY_PERSON,
    "infrastructure": RunOutcome.INFRASTRUCTURE,
    "lease": RunOutcome.INFRASTRUCTURE,
    "stop_check": RunOutcome.INFRASTRUCTURE,
}


def infrastructure_cause(exc: BaseException) -> str | None:
    """What could not be reached, when an exception (or one it was raised from or during) says the
    sandbox engine, the forge or the network failed rather than the model's request. None otherwise.
    Tools often re-raise as ToolError ``from None``: the original stays in ``__context__``."""
    import requests

    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError, requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    try:
        import urllib3.exceptions

        kinds += [urllib3.exceptions.ProtocolError, urllib3.exceptions.NewConnectionError, urllib3.exceptions.MaxRetryError]
    except ImportError:  # pragma: no cover
        pass
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 12:
        seen.add(id(current))
        if isinstance(current, tuple(kinds)):
            return "network"
        module = type(current).__module__ or ""
        if module.startswith("docker.") and not (getattr(current, "status_code", None) or 500) < 500:
            return "sandbox engine"
        if module.startswith("github") and (getattr(current, "status", 0) or 0) >= 500:
            return "forge"
        current = current.__cause__ or current.__context__
    return None


def _path_rejection(exc: BaseException) -> bool:
    from agentops.sandbox.base import PathRejected

    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 12:
        if isinstance(current, PathRejected):
            return True
        seen += 1
        current = current.__cause__ or current.__context__
    return False


class _WatchedServices:
    """The run's services as tools see them: remembers whether acquiring one failed, so the
    controller knows that a failed call never got as far as acting (and may be retried)."""

    def __init__(self, services: RunServices) -> None:
        self._services = services
        self.acquire_failed = False

    def _acquire(self, name: str) -> Any:
        try:
            return getattr(self._services, name)()
        except Exception:
            self.acquire_failed = True
            raise

    def sandbox(self) -> Any:
        return self._acquire("sandbox")

    def forge(self) -> Any:
        return self._acquire("forge")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._services, name)


class WaitForApproval(Exception):
    pass


class AbandonedCall(Exception):
    """A model call in flight was given up because the run must stop."""

    def __init__(self, stop: StopRun) -> None:
        super().__init__(stop.reason)
        self.stop = stop


@dataclass
class Reservation:
    """The worst case of one model call, held on the run row (and the day) while it is in flight."""

    max_tokens: int
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal("0")
    daily: bool = False  # the day was charged the estimate

    def release(self) -> dict[str, Any]:
        """Counter moves that clear the run's reservation (applied with the step that settles it)."""
        if not (self.cost_usd or self.input_tokens or self.output_tokens):
            return {}
        return {"reserved_cost_usd": -self.cost_usd, "reserved_input_tokens": -self.input_tokens, "reserved_output_tokens": -self.output_tokens}


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
        # Not `_stop`: threading.Thread._stop is a method the interpreter calls on every thread after
        # a fork; shadowing it with an Event made each fork of a worker log a TypeError.
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.AGENTOPS_HEARTBEAT_S):
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
        self.stopped.set()


# The name the tests and tools know; the transition itself lives with the others.
claim_run = transitions.claim


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
        self.seen_call_ids: set[str] = set()
        self.unusable_turns = 0
        self.effects = 0  # side-effecting calls that succeeded
        self.succeeded_calls = 0
        self.infra_failures = 0
        self._refusal: str | None = None
        self._infra_stop: StopRun | None = None
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
        self._loop_thread = threading.get_ident()
        self._abandon = threading.Event()  # set when a model call in flight is given up
        self._tool_definitions: list[dict[str, Any]] | None = None
        self.planner = self._make_planner()

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
        self.run_result.setdefault("final_text", self.last_turn_text)
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
        outcome = stop.outcome or _OUTCOME_OF_GUARD.get(stop.guard, "")
        try:
            if not stop.recorded:
                self.record(StepKind.GUARDRAIL, {"guard": stop.guard, "reason": stop.reason, "stops_run": True, **stop.payload})
        except LeaseLost:
            return "lease-lost"  # another worker owns the run now: write nothing more
        self.finish(stop.status, stop.reason, outcome=outcome)
        if outcome == RunOutcome.INFRASTRUCTURE:
            from agentops.notify import notify

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
                sleep=self._retry_sleep,
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
                # Only blocks the API accepts back (steps recorded before the checks may hold others).
                content = [b for b in p.get("content") or [] if isinstance(b, dict) and b.get("type") in ECHOABLE_BLOCKS]
                messages.append({"role": "assistant", "content": content or [{"type": "text", "text": p.get("text", "") or "(empty)"}]})
                note = p.get("controller_note")
                if note:
                    messages.append({"role": "user", "content": note})
                    self.unusable_turns += 1
                else:
                    self.unusable_turns = 0
                self.last_turn_text = p.get("text", "")
                self.last_turn_calls = [PendingCall(c["id"], c["name"], c.get("arguments")) for c in p.get("tool_calls", [])]
                for call in self.last_turn_calls:
                    calls_by_id[call.id] = call
                    self.seen_call_ids.add(call.id)
                self.last_turn_final = not self.last_turn_calls and not note
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
                self._tally(bool(p.get("is_error")), p.get("refused"), bool(p.get("effect")))
                if call is not None and p.get("counts_for_loops", True):
                    key = action_key(call.name, call.arguments)
                    if p.get("approval") == "rejected":
                        self.loops.rejected(call.name, key)
                    self.loops.add(Action(key, observation_hash(text), bool(p.get("is_error")), shape_key(call.name, call.arguments)))
            elif step.kind == StepKind.COMPACTION:
                flush_results()
                kept = int(p.get("kept_messages", 0))
                summary = whole.get((step.pk, "summary")) or p.get("summary", "")
                self.summary = summary
                messages = [{"role": "user", "content": input_text + "\n\n" + summary}] + (messages[-kept:] if kept else [])
        flush_results()
        self.messages = messages
        self.input_text = input_text

    def _tally(self, is_error: bool, refused: str | None, effect: bool) -> None:
        if is_error or refused:
            return
        self.succeeded_calls += 1
        if effect:
            self.effects += 1

    @staticmethod
    def _is_effect(tool_name: str, is_error: bool, refused: str | None, data: dict[str, Any] | None) -> bool:
        """A successful action whose effect outlives the run's disposable sandbox (a tool that
        only changed the workspace reports its diff, and a diff nobody publishes achieves nothing)."""
        if is_error or refused:
            return False
        tool = get_tool(tool_name)
        return tool is not None and tool.side_effecting and not (data and "workspace_diff" in data)

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
                self.finish_done()
                return
            self.check_guards(before="model")
            self.maybe_compact()
            self.model_turn()

    def model_turn(self) -> None:
        from agentops.llm.base import PlannerError
        from agentops.llm.checks import check_turn, text_only

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
                messages=self.messages,
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
            if exc.kind == "budget_stop" and self._stop_reason is not None:
                raise self._stop_reason from None
            outcome = RunOutcome.INFRASTRUCTURE if exc.kind in _INFRA_PLANNER_KINDS else RunOutcome.ERROR
            raise StopRun(RunStatus.FAILED, f"model call failed: {exc.kind}: {exc}", outcome=outcome, recorded=True) from None

        check = check_turn(turn.content, turn.stop_reason, seen_ids=self.seen_call_ids)
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
        calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in check.calls] if usable else []
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
            if self.unusable_turns + 1 >= MAX_UNUSABLE_TURNS:
                outcome = RunOutcome.MALFORMED_OUTPUT if problems else RunOutcome.TRUNCATED
                stop = StopRun(RunStatus.FAILED, f"{MAX_UNUSABLE_TURNS} model turns in a row could not be used ({kind})", guard="model_output", outcome=outcome)
        elif turn.stop_reason == "refusal":
            calls = payload["tool_calls"] = []
            stop = StopRun(RunStatus.FAILED, "the model refused to continue (stop_reason refusal)", guard="model_output", outcome=RunOutcome.MODEL_REFUSED)
        counters = {**tokens, "cost_usd": cost, "model_calls": 1, "iterations": 1, **reservation.release()}
        if self.daily_delta(reservation, cost):
            # The day and the run are settled together, or neither is (then takeover reconciles).
            with transaction.atomic():
                self.settle_daily(reservation, cost)
                self.record_many(items, counters=counters)
        else:  # the common scripted case: one statement, no transaction block
            self.record_many(items, counters=counters)
        self.messages.append({"role": "assistant", "content": payload["content"]})
        if not usable:
            self.messages.append({"role": "user", "content": payload["controller_note"]})
            self.unusable_turns += 1
        else:
            self.unusable_turns = 0
        self.last_turn_text = turn.text
        self.last_turn_calls = [PendingCall(c["id"], c["name"], c["arguments"]) for c in calls]
        self.seen_call_ids.update(c["id"] for c in calls)
        self.last_turn_final = usable and not calls
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
        requests_q: queue.Queue[tuple[Any, queue.Queue[bool]] | None] = queue.Queue()
        box: dict[str, Any] = {}
        abandon = self._abandon = threading.Event()

        def on_retry(info: Any) -> bool:
            if abandon.is_set():
                return False
            reply: queue.Queue[bool] = queue.Queue(maxsize=1)
            requests_q.put((info, reply))
            while not abandon.is_set():
                try:
                    return reply.get(timeout=STOP_POLL_S)
                except queue.Empty:
                    continue
            return False

        def work() -> None:
            try:
                box["turn"] = self.planner.next_turn(**kw, on_retry=on_retry)
            except BaseException as exc:  # handed to the loop's thread as it is
                box["error"] = exc
            finally:
                requests_q.put(None)

        helper = threading.Thread(target=work, daemon=True, name=f"model-call-{self.run.pk}")
        helper.start()
        while True:
            try:
                item = requests_q.get(timeout=STOP_POLL_S)
            except queue.Empty:
                if self.should_stop(force=True):
                    abandon.set()
                    raise AbandonedCall(self._stop_reason or StopRun(RunStatus.KILLED, "stopped", guard="stop"))
                continue
            if item is None:
                break
            info, reply = item
            reply.put(self.on_retry(info))
        if "error" in box:
            raise box["error"]
        return box["turn"]

    def _retry_sleep(self, seconds: float) -> None:
        """The planner's backoff (an endpoint's retry-after included) is the controller's time: the
        kill switch, a person's Stop and the wall-clock cap end it at once."""
        from agentops.llm.base import PlannerError

        if threading.get_ident() != self._loop_thread:
            # In the helper thread of call_planner: the loop's thread watches the stop conditions
            # and sets the event when the call is given up.
            if self._abandon.wait(max(0.0, seconds)):
                raise PlannerError("stopped while waiting to retry", kind="budget_stop")
            return
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if self.should_stop(force=True):
                raise PlannerError(f"stopped while waiting to retry: {self._stop_reason.reason if self._stop_reason else ''}", kind="budget_stop")
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
            self._stop_reason = stop
            return False
        return True

    # --- model spend: reserved before the call, settled with its step, reconciled on takeover ---

    def reserve(self, max_tokens: int, tools: list[dict[str, Any]]) -> Reservation:
        """Reserve the call's worst case on the run and the day, in one transaction, before it is
        sent; lower max_tokens so that the call cannot pass the run's cost cap."""
        cap = self.policy.daily_max_cost_usd
        reservation = Reservation(max_tokens=max_tokens)
        if self.run.planner_kind != "scripted":
            import json

            from agentops.llm.base import count_tokens_estimate
            from agentops.llm.prices import UnknownModelPrice, cost_of

            model = self.agent.model
            input_tokens = count_tokens_estimate(self.messages, self.agent.objective) + len(json.dumps(tools)) // 4
            try:
                input_cost = cost_of(model, input_tokens, 0)
                per_million_out = cost_of(model, 0, 1_000_000)
            except UnknownModelPrice:
                raise StopRun(
                    RunStatus.FAILED, f"unknown_price: no price known for model {model}: refusing to spend", guard="price", outcome=RunOutcome.ERROR
                ) from None
            left = self.budget.max_cost_usd - self.run.cost_usd - input_cost
            affordable = int(left * 1_000_000 / per_million_out) if per_million_out > 0 else max_tokens
            if affordable < 1:
                raise StopRun(
                    RunStatus.BUDGET_EXCEEDED,
                    f"cost_usd cap reached: the next model call could pass {self.budget.max_cost_usd}",
                    guard="budget",
                    payload={"measure": "cost_usd", "value": str(self.run.cost_usd), "cap": str(self.budget.max_cost_usd)},
                )
            reservation.max_tokens = min(max_tokens, affordable)
            reservation.input_tokens = input_tokens
            reservation.output_tokens = reservation.max_tokens
            reservation.cost_usd = cost_of(model, input_tokens, reservation.max_tokens)
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

    @staticmethod
    def daily_delta(reservation: Reservation, actual: Decimal) -> Decimal:
        return actual - reservation.cost_usd if reservation.daily else actual

    def settle_daily(self, reservation: Reservation, actual: Decimal) -> None:
        delta = self.daily_delta(reservation, actual)
        if delta:
            daily_add(agent_id=self.agent.pk, key="cost_usd", amount=delta)

    # --- guards ------------------------------------------------------------------------------

    def check_guards(self, *, before: str, call: PendingCall | None = None) -> None:
        """before: "model" or "tool". The order is the product's contract: kill switch, pause,
        per-run caps, loop detector (daily action caps and the rate limit follow, for a call
        found valid)."""
        if self.heartbeat.lost.is_set():
            raise StopRun(RunStatus.FAILED, "lease lost: the heartbeat could not renew it", guard="lease")
        # The state as the write just before this check saw it (nothing happened in between but
        # Python), or, when there was no such write, as the database says now.
        fresh, self._fresh_state = self._fresh_state, None
        stop = self._stop_from(fresh) if fresh is not None else self.stop_state()
        if stop is not None:
            raise stop
        new_call = call is not None and call.id not in self.recorded_tool_calls
        self.check_caps(moment=before if (before == "model" or new_call) else "after")
        reason = self.loops.check(action_key(call.name, call.arguments) if new_call and call else None)
        if reason:
            self.record(StepKind.GUARDRAIL, {"guard": "loop_detector", "reason": reason})
            raise StopRun(RunStatus.FAILED, f"loop detected: {reason}", guard="loop_detector", recorded=True)

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
            return StopRun(RunStatus.FAILED, "run row vanished", guard="stop_check", outcome=RunOutcome.ERROR)
        cancel_requested, paused, killed = row
        return self._stop_from({"cancel_requested": cancel_requested, "paused": paused, "killed": killed})

    @staticmethod
    def _stop_from(state: dict[str, bool]) -> StopRun | None:
        cancel_requested, paused, killed = state["cancel_requested"], state["paused"], state["killed"]
        if killed:
            return StopRun(RunStatus.KILLED, "kill switch engaged", guard="kill_switch")
        if paused:
            return StopRun(RunStatus.KILLED, "agent paused", guard="paused")
        if cancel_requested:
            return StopRun(RunStatus.KILLED, "stopped by a person", guard="stopped_by_person")
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
                raise StopRun(RunStatus.BUDGET_EXCEEDED, f"{name} cap reached: {value} of {cap}", guard="budget", recorded=True)

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
                raise StopRun(RunStatus.BUDGET_EXCEEDED, f"daily cap for {key} reached ({cap})", guard="daily_cap", recorded=True)

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
                raise self._stop_reason or StopRun(RunStatus.KILLED, "stopped while rate limited", guard="rate_limit")
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
                self._stop_reason = StopRun(RunStatus.FAILED, "lease lost: the heartbeat could not renew it", guard="lease")
            else:
                self._stop_reason = self.stop_state()
                if self._stop_reason is None and self.wall_clock_s() >= self.budget.max_wall_clock_s:
                    cap = self.budget.max_wall_clock_s
                    self._stop_reason = StopRun(
                        RunStatus.BUDGET_EXCEEDED,
                        f"wall_clock_s cap reached: {cap}",
                        guard="budget",
                        payload={"measure": "wall_clock_s", "value": str(int(self.wall_clock_s())), "cap": str(cap), "during_tool": True},
                    )
        except Exception:
            # Cannot tell whether we may go on: fail closed.
            log.exception("stop check of run %s failed", self.run.pk)
            self._stop_reason = StopRun(RunStatus.FAILED, "could not check stop conditions", guard="stop_check")
        return self._stop_reason is not None

    # --- tools -------------------------------------------------------------------------------

    def tool_definition(self, name: str) -> dict[str, Any] | None:
        tool = get_tool(name)
        if tool is None or self.agent.trust_phase < tool.min_trust_phase:
            return None
        return tool.definition()

    def observe(
        self,
        call: PendingCall,
        text: str,
        *,
        is_error: bool,
        counts_for_loops: bool = True,
        data: dict[str, Any] | None = None,
        refused: str | None = None,
        before: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Record a call's observation. ``refused``: why the controller refused the call (it then
        counts as a tool call and a refused one); ``before``: steps written in the same commit."""
        model_text = text
        if len(model_text) > MODEL_OBSERVATION_LIMIT:
            model_text = model_text[:MODEL_OBSERVATION_LIMIT] + f"\n[output truncated: {len(text)} characters in all]"
        payload: dict[str, Any] = {"tool_call_id": call.id, "tool": call.name, "output": model_text, "is_error": is_error}
        if self.services.sandbox_backend:
            payload["sandbox"] = self.services.sandbox_backend
        if not counts_for_loops:
            payload["counts_for_loops"] = False
        if refused:
            payload["refused"] = refused
        if extra:
            payload.update(extra)
        effect = self._is_effect(call.name, is_error, refused, data)
        if effect:
            payload["effect"] = True
        if data:
            payload["data"] = {k: v for k, v in data.items() if k not in ("workspace_diff", "run_result")}
        items = list(before or [])
        counters: dict[str, Any] = {}
        if self._pending_tool_call is not None and self._pending_tool_call["tool_call_id"] == call.id:
            pending, self._pending_tool_call = self._pending_tool_call, None
            items.append({"kind": StepKind.TOOL_CALL, "payload": pending})
            counters["tool_calls"] = 1
        elif refused and call.id not in self.recorded_tool_calls:
            counters["tool_calls"] = 1  # a refused call is a call: it counts toward the cap
        if refused:
            counters["refused_calls"] = 1
        items.append({"kind": StepKind.OBSERVATION, "payload": payload})
        self.record_many(items, counters=counters or None)
        self.observed.add(call.id)
        self._append_result(call.id, model_text, is_error)
        self._tally(is_error, refused, effect)
        if counts_for_loops:
            self.loops.add(
                Action(action_key(call.name, call.arguments), observation_hash(model_text), is_error or bool(refused), shape_key(call.name, call.arguments))
            )

    def refuse(self, call: PendingCall, guard: str, reason: str) -> None:
        guardrail = {"kind": StepKind.GUARDRAIL, "payload": {"guard": guard, "tool": call.name, "tool_call_id": call.id, "reason": reason}}
        self.observe(call, f"Refused by the controller: {reason}", is_error=True, refused=guard, before=[guardrail])

    def handle_tool_call(self, call: PendingCall) -> None:
        self.check_guards(before="tool", call=call)
        tool = get_tool(call.name)
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
            return self.observe(call, "Invalid arguments: expected a JSON object", is_error=True, refused="invalid_arguments")
        arg_errors = tool.argument_errors(call.arguments)
        if arg_errors:
            return self.observe(call, "Invalid arguments, the tool did not run:\n" + "\n".join(arg_errors), is_error=True, refused="invalid_arguments")

        resumed = call.id in self.recorded_tool_calls
        if not resumed:
            # Only a valid call spends the day's action allowance or waits for the rate limit.
            self.check_daily_actions(tool)
            self.wait_for_rate_limit()
        key = f"run-{self.run.pk}:{call.id}"
        watched = _WatchedServices(self.services)
        ctx = ToolContext(
            run=self.run,
            agent=self.agent,
            scope=grant.scope,
            tool_call_id=call.id,
            idempotency_key=key,
            lease_owner=self.owner,
            should_stop=self.should_stop,
            emit=self.emitter(call),
            services=watched,  # type: ignore[arg-type]
        )
        if not resumed:
            self.recorded_tool_calls.add(call.id)
            self.tool_times.append(time.time())
            self._tool_started = time.monotonic()
            self._pending_tool_call = {
                "tool": call.name,
                "tool_call_id": call.id,
                "arguments": call.arguments,
                "idempotency_key": key,
                "risk_class": tool.risk_class,
            }
            # A side effect, or anything a person may have to approve, is on record (committed)
            # before it happens. A read-only call is recorded with its observation in one commit:
            # if the worker dies meanwhile, repeating a read harms nothing.
            if tool.side_effecting or self.approval_needed_statically(tool, grant):
                self.flush_tool_call()
        decision = self.approval_gate(call, tool, grant, ctx, resumed=resumed)
        if decision is not None:
            text, kind = decision
            if kind == "rejected":
                self.loops.rejected(call.name, action_key(call.name, call.arguments))
            return self.observe(call, text, is_error=True, refused=f"approval_{kind}", extra={"approval": kind})
        self._refusal = None
        self._infra_stop = None
        result = self.execute_with_ledger(call, tool, ctx, watched)
        if self._stop_reason is not None:
            self.observe(call, f"Cancelled: {self._stop_reason.reason}", is_error=True, counts_for_loops=False)
            raise self._stop_reason
        if result.data.get("run_result"):
            self.run_result.update(result.data["run_result"])
            Run.objects.filter(pk=self.run.pk).update(result=self.run_result)
        infra = self._infra_stop is not None or bool(result.data.get("infrastructure"))
        self.observe(call, result.output, is_error=result.is_error, data=result.data, refused=self._refusal, counts_for_loops=not infra)
        if self._infra_stop is not None:
            raise self._infra_stop

    def flush_tool_call(self) -> None:
        """Write the pending tool_call step now (before a side effect, or before streamed output)."""
        if self._pending_tool_call is not None:
            payload, self._pending_tool_call = self._pending_tool_call, None
            self.record(StepKind.TOOL_CALL, payload, counters={"tool_calls": 1})

    @staticmethod
    def approval_needed_statically(tool: Tool, grant: ToolGrant) -> bool:
        return grant.approval == ApprovalOverride.ALWAYS or tool.risk_class == "irreversible"

    def approval_gate(self, call: PendingCall, tool: Tool, grant: ToolGrant, ctx: ToolContext, *, resumed: bool) -> tuple[str, str] | None:
        """None to proceed; (observation text, kind) when a person said no (or was asked before and
        said no to this very call); raises to wait."""
        from agentops.approvals.models import Approval, ApprovalStatus

        # Only a call recorded before this worker started can have an approval already.
        existing = Approval.objects.filter(run=self.run, tool_call_id=call.id).first() if resumed else None
        if existing is not None:
            if existing.status == ApprovalStatus.APPROVED:
                return None
            if existing.status == ApprovalStatus.PENDING:
                self._wait()
            return f"{existing.status.capitalize()} by {existing.decided_by_label or 'nobody'}: {existing.comment or 'no comment'}", str(existing.status)
        why = self.approval_needed(call, tool, grant, ctx)
        if why is None:
            return None
        if self.loops.was_rejected(action_key(call.name, call.arguments)):
            # A person already said no to exactly this: asking again is not a new question.
            self.flush_tool_call()
            self.record(
                StepKind.GUARDRAIL,
                {"guard": "repeated_approval", "tool": call.name, "tool_call_id": call.id, "reason": "a person already rejected this exact call"},
            )
            return "Refused by the controller: a person already rejected this exact call; it was not asked again.", "repeated"
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
            if not transitions.await_approval(self.run.pk, self.owner):
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
        if not transitions.await_approval(self.run.pk, self.owner):
            raise LeaseLost(f"run {self.run.pk}")
        raise WaitForApproval()

    def emitter(self, call: PendingCall) -> Any:
        """Stream a tool's output into the trace, at most a few steps per second.

        Chunks end at a line break (a line still being written waits for the next chunk), and a
        chunk is redacted whole before it is shortened: a key is never cut in two, so no half of
        one is stored where the redactor could not recognise it."""
        buffer: list[str] = []
        last = [time.monotonic()]

        def emit(text: str, flush: bool = False) -> None:
            buffer.append(text)
            if not (flush or time.monotonic() - last[0] >= 0.5 or sum(map(len, buffer)) > PROGRESS_CHUNK):
                return
            pending = "".join(buffer)
            buffer.clear()
            cut = len(pending) if flush else pending.rfind("\n") + 1
            if cut <= 0 and len(pending) <= 4 * PROGRESS_CHUNK:
                buffer.append(pending)  # one long line still being written: wait for its end
                return
            chunk, rest = (pending[:cut], pending[cut:]) if cut > 0 else (pending, "")
            if rest:
                buffer.append(rest)
            last[0] = time.monotonic()
            if chunk:
                self.flush_tool_call()  # the call comes before its output in the trace
                self.record(
                    StepKind.PROGRESS,
                    {"tool_call_id": call.id, "tool": call.name, "output": redact_text(chunk)[-PROGRESS_CHUNK:], "sandbox": self.services.sandbox_backend},
                )

        return emit

    def execute_with_ledger(self, call: PendingCall, tool: Tool, ctx: ToolContext, watched: _WatchedServices | None = None) -> ToolResult:
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
        while True:
            if watched is not None:
                watched.acquire_failed = False
            infra: str | None = None
            try:
                try:
                    result = tool.executor(call.arguments, ctx)
                except Exception as exc:
                    # A path the sandbox refused (a symlink out of the workspace or the grant) is a
                    # scope refusal however the tool reported it.
                    if not isinstance(exc, ScopeViolation) and _path_rejection(exc):
                        raise ScopeViolation(str(exc)) from exc
                    raise
            except ScopeViolation as exc:
                self.flush_tool_call()  # the call comes before the refusal in the trace
                self.record(StepKind.GUARDRAIL, {"guard": "scope", "tool": call.name, "tool_call_id": call.id, "reason": str(exc)})
                self._refusal = "scope"
                result = ToolResult(output=f"Refused: {exc}", is_error=True)
            except ToolError as exc:
                infra = infrastructure_cause(exc)
                result = ToolResult(output=f"Error: {exc}", is_error=True)
            except LeaseLost:
                raise
            except Exception as exc:  # a tool's crash is an observation, not the controller's crash
                log.exception("tool %s crashed in run %s", call.name, self.run.pk)
                infra = infrastructure_cause(exc) or self._sandbox_failure(exc)
                result = ToolResult(output=f"Tool failed: {type(exc).__name__}: {exc}", is_error=True)
            if infra is None:
                self.infra_failures = 0
                break
            # Not the model's doing: named, retried with backoff, and then the run stops.
            retry_safe = (watched is not None and watched.acquire_failed) or not tool.side_effecting
            if not self.infrastructure_failure(call, infra, result.output, retry_safe=retry_safe):
                break
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
        if infra is not None:
            result.data = {**result.data, "infrastructure": infra}
        return result

    @staticmethod
    def _sandbox_failure(exc: BaseException) -> str | None:
        """A SandboxError raised from a lower failure (the engine, a socket, a process that could not
        start); a SandboxError of its own making (a bad path, a file too large) is the model's."""
        from agentops.sandbox.base import SandboxError

        if isinstance(exc, SandboxError) and isinstance(exc.__cause__, (OSError, ConnectionError)):
            return "sandbox"
        return None

    def infrastructure_failure(self, call: PendingCall, service: str, error: str, *, retry_safe: bool) -> bool:
        """Record an infrastructure failure; True to retry the call now. When the failures go on
        past the retries, sets _infra_stop: the run stops after this call's observation."""
        self.infra_failures += 1
        retries = int(getattr(settings, "AGENTOPS_INFRA_RETRIES", 3))
        self.flush_tool_call()
        self.record(
            StepKind.ERROR,
            {
                "kind": "infrastructure",
                "service": service,
                "tool": call.name,
                "tool_call_id": call.id,
                "error": error[:2000],
                "attempt": self.infra_failures,
                "retries": retries,
            },
        )
        if self.infra_failures > retries:
            self._infra_stop = StopRun(
                RunStatus.FAILED,
                f"infrastructure: the {service} could not be reached ({self.infra_failures} attempts): {error[:300]}",
                guard="infrastructure",
                outcome=RunOutcome.INFRASTRUCTURE,
            )
            return False
        wait = float(getattr(settings, "AGENTOPS_INFRA_BACKOFF_S", 1.0)) * (2 ** (self.infra_failures - 1))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.should_stop(force=True):
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return retry_safe

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
