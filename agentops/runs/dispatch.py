"""One tool call, from the model's request to the observation it gets back.

In order: the run's guards (through the controller, the same check as before a model call), the
call's own checks (``runs/calls.py``: a known tool, a grant, a valid scope, the trust phase, valid
arguments), the daily action caps and the rate limit, the approval gate (a person may approve the
call as it is, or with arguments they edited, which get the same checks again before it runs), the
ledger (a side-effecting call is recorded before it acts, so a retry never acts twice), the
execution with its infrastructure retries, and the observation. ``ask_person`` is carried out here:
its question is a decision the run waits for, and the answer is its observation. Every refusal is
an observation the model reads, never a crash.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
import urllib3.exceptions
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agentops.agents.models import ApprovalOverride, ToolGrant
from agentops.approvals.models import Approval, ApprovalStatus, DecisionKind
from agentops.guardrails.base import StopRun
from agentops.guardrails.loops import action_key
from agentops.redaction import redact, redact_text
from agentops.runs.calls import Refusal, call_refusal, validate_call
from agentops.runs.conversation import PendingCall
from agentops.runs.decisions import LoopNudge
from agentops.runs.models import ExecutionStatus, Run, RunOutcome, RunStatus, StepKind, ToolExecution
from agentops.runs.steps import LeaseLost
from agentops.runs.workspace import RunServices
from agentops.sandbox.base import PathRejected, SandboxError
from agentops.tools.ask import ASK_PERSON, approver_group_of, question_request
from agentops.tools.registry import ScopeViolation, Tool, ToolContext, ToolError, ToolResult

if TYPE_CHECKING:
    from agentops.runs.controller import RunLoop

log = logging.getLogger(__name__)

# The most of a tool's streamed output one progress step keeps.
PROGRESS_CHUNK = 8000
# What the model sees of one observation; the whole output is kept in the trace.
MODEL_OBSERVATION_LIMIT = 20_000
# A read-only call still running after this long gets its tool_call step written at once.
SLOW_TOOL_S = 0.05


# Exceptions that say the network failed, wherever they were raised from.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.MaxRetryError,
)


def infrastructure_cause(exc: BaseException) -> str | None:
    """What could not be reached, when an exception (or one it was raised from or during) says the
    sandbox engine, the forge or the network failed rather than the model's request. None otherwise.
    Tools often re-raise as ToolError ``from None``: the original stays in ``__context__``."""
    kinds = _NETWORK_ERRORS
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 12:
        seen.add(id(current))
        if isinstance(current, kinds):
            return "network"
        module = type(current).__module__ or ""
        if module.startswith("docker.") and not (getattr(current, "status_code", None) or 500) < 500:
            return "sandbox engine"
        if module.startswith("github") and (getattr(current, "status", 0) or 0) >= 500:
            return "forge"
        current = current.__cause__ or current.__context__
    return None


def path_rejection(exc: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 12:
        if isinstance(current, PathRejected):
            return True
        seen += 1
        current = current.__cause__ or current.__context__
    return False


def sandbox_failure(exc: BaseException) -> str | None:
    """A SandboxError raised from a lower failure (the engine, a socket, a process that could not
    start); a SandboxError of its own making (a bad path, a file too large) is the model's."""
    if isinstance(exc, SandboxError) and isinstance(exc.__cause__, (OSError, ConnectionError)):
        return "sandbox"
    return None


def is_effect(tool: Tool | None, is_error: bool, refused: str | None, data: dict[str, Any] | None) -> bool:
    """A successful action whose effect outlives the run's disposable sandbox (a tool that
    only changed the workspace reports its diff, and a diff nobody publishes achieves nothing)."""
    if is_error or refused:
        return False
    return tool is not None and tool.side_effecting and not (data and "workspace_diff" in data)


def approval_needed_statically(tool: Tool, grant: ToolGrant) -> bool:
    return grant.approval == ApprovalOverride.ALWAYS or tool.risk_class == "irreversible"


def edited_prefix(call: PendingCall) -> str:
    """How an observation of an edited call begins: the model learns what actually ran."""
    return f"A person edited this call before approving it; the call that ran: {call.name}({json.dumps(call.arguments, sort_keys=True, default=str)})"


@dataclass
class Gate:
    """What the approval gate decided: go on (with the edited call, if a person edited it), or refuse
    with an observation (and then, if ``halt``, stop the run)."""

    refusal: tuple[str, str] | None = None  # (observation text, kind)
    edited: Approval | None = None
    halt: StopRun | None = None


class WatchedServices:
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


@dataclass
class Executed:
    """What executing a call came to: the result, and why the controller refused or must stop."""

    result: ToolResult
    refusal: str | None = None
    infra_stop: StopRun | None = None


@dataclass
class PendingToolStep:
    """A tool_call step not yet written: a read-only call's is written with its observation."""

    payload: dict[str, Any]
    started: float = field(default_factory=lambda: time.monotonic())  # looked up per call: tests replace the clock


class Dispatcher:
    """Carries out the tool calls of one run for its controller (one per RunLoop)."""

    def __init__(self, loop: RunLoop) -> None:
        self.loop = loop
        self.infra_failures = 0  # consecutive infrastructure failures, across calls
        self.pending: PendingToolStep | None = None

    # --- the trace -----------------------------------------------------------------------------

    def flush_tool_call(self) -> None:
        """Write the pending tool_call step now (before a side effect, or before streamed output)."""
        if self.pending is not None:
            payload, self.pending = self.pending.payload, None
            self.loop.record(StepKind.TOOL_CALL, payload, counters={"tool_calls": 1})

    def flush_if_slow(self, now: float) -> None:
        # A slow call is shown live while it runs, not only when it ends.
        if self.pending is not None and now - self.pending.started > SLOW_TOOL_S:
            self.flush_tool_call()

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
        loop = self.loop
        model_text = text
        if len(model_text) > MODEL_OBSERVATION_LIMIT:
            model_text = model_text[:MODEL_OBSERVATION_LIMIT] + f"\n[output truncated: {len(text)} characters in all]"
        payload: dict[str, Any] = {"tool_call_id": call.id, "tool": call.name, "output": model_text, "is_error": is_error}
        if loop.services.sandbox_backend:
            payload["sandbox"] = loop.services.sandbox_backend
        if not counts_for_loops:
            payload["counts_for_loops"] = False
        if refused:
            payload["refused"] = refused
        if extra:
            payload.update(extra)
        effect = is_effect(loop.tools.get(call.name), is_error, refused, data)
        if effect:
            payload["effect"] = True
        if data:
            payload["data"] = {k: v for k, v in data.items() if k not in ("workspace_diff", "run_result")}
        items = list(before or [])
        counters: dict[str, Any] = {}
        if self.pending is not None and self.pending.payload["tool_call_id"] == call.id:
            pending, self.pending = self.pending.payload, None
            items.append({"kind": StepKind.TOOL_CALL, "payload": pending})
            counters["tool_calls"] = 1
        elif refused and call.id not in loop.conversation.recorded_tool_calls:
            counters["tool_calls"] = 1  # a refused call is a call: it counts toward the cap
        if refused:
            counters["refused_calls"] = 1
        items.append({"kind": StepKind.OBSERVATION, "payload": payload})
        loop.record_many(items, counters=counters or None)
        loop.conversation.add_result(call.id, model_text, is_error)
        loop.observed(call, model_text, is_error=is_error, refused=refused, effect=effect, counts_for_loops=counts_for_loops)

    def refuse(self, call: PendingCall, guard: str, reason: str) -> None:
        guardrail = {"kind": StepKind.GUARDRAIL, "payload": {"guard": guard, "tool": call.name, "tool_call_id": call.id, "reason": reason}}
        self.observe(call, f"Refused by the controller: {reason}", is_error=True, refused=guard, before=[guardrail])

    # --- one call ------------------------------------------------------------------------------

    def refuse_call(self, call: PendingCall, refusal: Refusal) -> None:
        if refusal.guard == "invalid_arguments":
            return self.observe(call, refusal.observation, is_error=True, refused="invalid_arguments")
        return self.refuse(call, refusal.guard, refusal.reason)

    def handle(self, call: PendingCall) -> None:
        loop = self.loop
        try:
            loop.check_guards(before="tool", call=call)
        except LoopNudge as nudge:
            # The call does not run: its observation is the controller's message about the loop.
            return self.observe(call, nudge.text, is_error=True, refused="loop_detector", counts_for_loops=False, before=[nudge.step])
        tool = loop.tools.get(call.name)
        grant = loop.grants.get(call.name)
        refusal = call_refusal(name=call.name, tool=tool, grant=grant, agent=loop.agent, arguments=call.arguments)
        if refusal is not None:
            return self.refuse_call(call, refusal)
        assert tool is not None and grant is not None  # call_refusal refuses a call without them

        resumed = call.id in loop.conversation.recorded_tool_calls
        if not resumed:
            # Only a valid call spends the day's action allowance or waits for the rate limit.
            loop.check_daily_actions(tool)
            loop.wait_for_rate_limit()
        key = f"run-{loop.run.pk}:{call.id}"
        watched = WatchedServices(loop.services)
        ctx = ToolContext(
            run=loop.run,
            agent=loop.agent,
            scope=grant.scope,
            tool_call_id=call.id,
            idempotency_key=key,
            lease_owner=loop.owner,
            should_stop=loop.should_stop,
            emit=self.emitter(call),
            services=watched,  # type: ignore[arg-type]  # the tools use RunServices' interface, which this wraps
        )
        if not resumed:
            loop.conversation.recorded_tool_calls.add(call.id)
            loop.rate.note(time.time())
            self.pending = PendingToolStep(
                {"tool": call.name, "tool_call_id": call.id, "arguments": call.arguments, "idempotency_key": key, "risk_class": tool.risk_class}
            )
            # A side effect, or anything a person may have to approve, is on record (committed)
            # before it happens. A read-only call is recorded with its observation in one commit:
            # if the worker dies meanwhile, repeating a read harms nothing.
            if tool.side_effecting or approval_needed_statically(tool, grant):
                self.flush_tool_call()
        if tool.name == ASK_PERSON:
            return self.ask_person(call, tool, grant, resumed=resumed)
        gate = self.approval_gate(call, tool, grant, ctx, resumed=resumed)
        if gate.refusal is not None:
            text, kind = gate.refusal
            if kind == "rejected":
                loop.loops.rejected(call.name, action_key(call.name, call.arguments))
            self.observe(call, text, is_error=True, refused=f"approval_{kind}", extra={"approval": kind})
            if gate.halt is not None:
                raise gate.halt
            return
        prefix, extra = "", None
        if gate.edited is not None:
            edited = self.edited_call(call, tool, grant, gate.edited, key)
            if edited is None:
                return
            call, prefix = edited, edited_prefix(edited) + "\n\n"
            extra = {"edited_arguments": edited.arguments, "edited_by": gate.edited.decided_by_label}
        executed = self.execute_with_ledger(call, tool, ctx, watched)
        result = executed.result
        if loop.polled_stop is not None:
            self.observe(call, prefix + f"Cancelled: {loop.polled_stop.reason}", is_error=True, counts_for_loops=False, extra=extra)
            raise loop.polled_stop
        if result.data.get("run_result"):
            loop.run_result.update(result.data["run_result"])
            Run.objects.filter(pk=loop.run.pk).update(result=loop.run_result)
        infra = executed.infra_stop is not None or bool(result.data.get("infrastructure"))
        self.observe(
            call,
            prefix + result.output,
            is_error=result.is_error,
            data=result.data,
            refused=executed.refusal,
            counts_for_loops=not (infra or tool.waits),
            extra=extra,
        )
        if executed.infra_stop is not None:
            raise executed.infra_stop

    def edited_call(self, call: PendingCall, tool: Tool, grant: ToolGrant, approval: Approval, key: str) -> PendingCall | None:
        """The call a person approved with arguments of their own: checked again exactly as a
        model's call is (fail closed: refused if not valid now), and recorded with both versions."""
        loop = self.loop
        edited = PendingCall(call.id, call.name, approval.edited_arguments)
        errors = validate_call(run=loop.run, tool_name=call.name, arguments=edited.arguments, tools=loop.tools, grants=loop.grants)
        if errors:
            self.refuse(call, "edited_arguments", "the arguments a person edited are not valid, so the call did not run: " + "; ".join(errors))
            return None
        loop.record(
            StepKind.TOOL_CALL,
            {
                "tool": call.name,
                "tool_call_id": call.id,
                "arguments": edited.arguments,
                "original_arguments": call.arguments,
                "edited_by": approval.decided_by_label,
                "approval_id": approval.pk,
                "idempotency_key": key,
                "risk_class": tool.risk_class,
            },
        )
        return edited

    # --- ask_person ----------------------------------------------------------------------------

    def ask_person(self, call: PendingCall, tool: Tool, grant: ToolGrant, *, resumed: bool) -> None:
        """The agent asks a person: the question becomes a decision and the run waits; the answer
        (data, like any tool's output) is the call's observation."""
        loop = self.loop
        existing = Approval.objects.filter(run=loop.run, tool_call_id=call.id).first() if resumed else None
        if existing is None:
            earlier = loop.decisions.earlier_answer(call.arguments)
            if earlier is not None:
                # Not asked again: the person's answer stands (and the loop detector sees the repeat).
                return self.observe(call, f"A person already answered this exact question: {earlier}", is_error=False)
            self.flush_tool_call()
            question = question_request(call.arguments)
            loop.decisions.request(
                kind=DecisionKind.QUESTION,
                tool_call_id=call.id,
                tool=call.name,
                arguments=call.arguments,
                risk_class=tool.risk_class,
                reason=loop.conversation.last_turn_text,
                why_needed="the agent asks a person",
                request=question,
                approver_group=approver_group_of(grant.scope, grant.approver_group),
                on_expiry=grant.on_timeout,
            )
        if existing.status == ApprovalStatus.PENDING:
            loop.decisions.wait()
        if existing.status == ApprovalStatus.APPROVED:
            return self.observe(call, f"A person answered: {existing.answer}", is_error=False)
        if existing.status == ApprovalStatus.REJECTED:
            return self.observe(call, f"{existing.decided_by_label or 'A person'} declined to answer: {existing.comment or 'no comment'}", is_error=True)
        if existing.on_expiry == "continue":
            return self.observe(call, "No one answered in time.", is_error=True)
        self.observe(call, "No one answered in time; the run stops.", is_error=True, counts_for_loops=False)
        raise StopRun(RunStatus.FAILED, "no one answered the agent's question in time", guard="question_timeout", outcome=RunOutcome.REFUSED)

    # --- the approval gate ---------------------------------------------------------------------

    def approval_gate(self, call: PendingCall, tool: Tool, grant: ToolGrant, ctx: ToolContext, *, resumed: bool) -> Gate:
        """Go on (a person approved, maybe with edited arguments, or nobody needs to); refuse (a
        person said no, or was asked before and said no to this very call, or nobody decided in
        time); or raise to wait."""
        loop = self.loop
        # Only a call recorded before this worker started can have an approval already.
        existing = Approval.objects.filter(run=loop.run, tool_call_id=call.id).first() if resumed else None
        if existing is not None:
            if existing.status == ApprovalStatus.APPROVED:
                return Gate(edited=existing if isinstance(existing.edited_arguments, dict) else None)
            if existing.status == ApprovalStatus.PENDING:
                loop.decisions.wait()
            if existing.status == ApprovalStatus.EXPIRED and existing.on_expiry == "continue":
                return Gate(refusal=("Not approved in time; the call did not run.", "expired"))
            text = f"{existing.status.capitalize()} by {existing.decided_by_label or 'nobody'}: {existing.comment or 'no comment'}"
            halt = None
            if existing.status == ApprovalStatus.EXPIRED:
                # Nobody decided in time and the grant says halt: fail closed, the run stops here.
                halt = StopRun(
                    RunStatus.FAILED, f"no one approved {call.name} in time; the grant halts the run", guard="approval_timeout", outcome=RunOutcome.REFUSED
                )
            return Gate(refusal=(text, str(existing.status)), halt=halt)
        why = self.approval_needed(call, tool, grant, ctx)
        if why is None:
            return Gate()
        if loop.loops.was_rejected(action_key(call.name, call.arguments)):
            # A person already said no to exactly this: asking again is not a new question.
            self.flush_tool_call()
            loop.record(
                StepKind.GUARDRAIL,
                {"guard": "repeated_approval", "tool": call.name, "tool_call_id": call.id, "reason": "a person already rejected this exact call"},
            )
            return Gate(refusal=("Refused by the controller: a person already rejected this exact call; it was not asked again.", "repeated"))
        loop.decisions.request(
            kind=DecisionKind.APPROVAL,
            tool_call_id=call.id,
            tool=call.name,
            arguments=call.arguments,
            risk_class=tool.risk_class,
            reason=loop.conversation.last_turn_text,
            why_needed=why,
            approver_group=grant.approver_group,
            on_expiry=grant.on_timeout,
        )

    def approval_needed(self, call: PendingCall, tool: Tool, grant: ToolGrant, ctx: ToolContext) -> str | None:
        if grant.approval == ApprovalOverride.ALWAYS:
            return "the grant requires a person for every call"
        if tool.risk_class == "irreversible":
            if tool.auto_approve is not None and self.loop.agent.trust_phase >= 4:
                allowed, why = tool.auto_approve(call.arguments, ctx)
                self.loop.record(StepKind.GUARDRAIL, {"guard": "auto_approve", "tool": call.name, "allowed": allowed, "reason": why})
                if allowed:
                    return None
                return f"irreversible action, not low-risk: {why}"
            return "irreversible action"
        return None

    # --- execution -----------------------------------------------------------------------------

    def emitter(self, call: PendingCall) -> Callable[..., None]:
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
                self.loop.record(
                    StepKind.PROGRESS,
                    {"tool_call_id": call.id, "tool": call.name, "output": redact_text(chunk)[-PROGRESS_CHUNK:], "sandbox": self.loop.services.sandbox_backend},
                )

        return emit

    def execute_with_ledger(self, call: PendingCall, tool: Tool, ctx: ToolContext, watched: WatchedServices | None = None) -> Executed:
        loop = self.loop
        if tool.side_effecting:
            try:
                with transaction.atomic():
                    ToolExecution.objects.create(key=ctx.idempotency_key, run=loop.run, tool=tool.name, arguments=call.arguments)
            except IntegrityError:
                done = ToolExecution.objects.get(key=ctx.idempotency_key)
                if done.status == ExecutionStatus.STARTED:
                    # A worker died while this action ran: we cannot know whether it happened.
                    # Never act twice; tell the model and let it look before trying anything.
                    return Executed(
                        ToolResult(
                            output="This action was interrupted by a worker failure; its outcome is unknown and it was not repeated. Inspect the state before retrying.",
                            is_error=True,
                        )
                    )
                recorded = done.result or {}
                return Executed(ToolResult(output=recorded.get("output", ""), is_error=recorded.get("is_error", False), data=recorded.get("data", {})))
        executed = Executed(ToolResult(output=""))
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
                    if not isinstance(exc, ScopeViolation) and path_rejection(exc):
                        raise ScopeViolation(str(exc)) from exc
                    raise
            except ScopeViolation as exc:
                self.flush_tool_call()  # the call comes before the refusal in the trace
                loop.record(StepKind.GUARDRAIL, {"guard": "scope", "tool": call.name, "tool_call_id": call.id, "reason": str(exc)})
                executed.refusal = "scope"
                result = ToolResult(output=f"Refused: {exc}", is_error=True)
            except ToolError as exc:
                infra = infrastructure_cause(exc)
                result = ToolResult(output=f"Error: {exc}", is_error=True)
            except LeaseLost:
                raise
            except Exception as exc:  # a tool's crash is an observation, not the controller's crash
                log.exception("tool %s crashed in run %s", call.name, loop.run.pk)
                infra = infrastructure_cause(exc) or sandbox_failure(exc)
                result = ToolResult(output=f"Tool failed: {type(exc).__name__}: {exc}", is_error=True)
            if infra is None:
                self.infra_failures = 0
                break
            # Not the model's doing: named, retried with backoff, and then the run stops.
            retry_safe = (watched is not None and watched.acquire_failed) or not tool.side_effecting
            if not self.infrastructure_failure(call, infra, result.output, retry_safe=retry_safe, executed=executed):
                break
        try:
            ctx.emit("", True)  # type: ignore[call-arg]  # ToolContext types emit with one argument; ours takes a flush flag
        except TypeError:
            pass
        if tool.side_effecting:
            ToolExecution.objects.filter(key=ctx.idempotency_key).update(
                status=ExecutionStatus.FAILED if result.is_error else ExecutionStatus.SUCCEEDED,
                result=redact({"output": result.output, "is_error": result.is_error, "data": result.data}),
                finished_at=timezone.now(),
            )
        if infra is not None:
            result.data = {**result.data, "infrastructure": infra}
        executed.result = result
        return executed

    def infrastructure_failure(self, call: PendingCall, service: str, error: str, *, retry_safe: bool, executed: Executed) -> bool:
        """Record an infrastructure failure; True to retry the call now. When the failures go on
        past the retries, sets ``executed.infra_stop``: the run stops after this call's observation."""
        self.infra_failures += 1
        retries = int(getattr(settings, "AGENTOPS_INFRA_RETRIES", 3))
        self.flush_tool_call()
        self.loop.record(
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
            executed.infra_stop = StopRun(
                RunStatus.FAILED,
                f"infrastructure: the {service} could not be reached ({self.infra_failures} attempts): {error[:300]}",
                guard="infrastructure",
                outcome=RunOutcome.INFRASTRUCTURE,
            )
            return False
        wait = float(getattr(settings, "AGENTOPS_INFRA_BACKOFF_S", 1.0)) * (2 ** (self.infra_failures - 1))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.loop.should_stop(force=True):
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return retry_safe
