"""The controller's side of human decisions: asking a person, waiting, and reading the decision on resume.

A run asks a person in four ways, each a decision (``approvals.Approval`` with its ``kind``): a tool
call waiting for approval (``dispatch.approval_gate``), a budget extension when it reaches a per-run
cap its policy lets a person extend, a question (the ``ask_person`` tool), and a loop escalation.
Each is requested (``approvals.services.decision_request``) in the same transaction that moves the
run to waiting (``transitions.await_approval``): the worker is freed, and a person's decision
(``approval_decide``, the one write path) queues the run again. The worker that resumes it rebuilds
the conversation from the steps and reads the run's decisions here (``on_resume``) and in the
dispatcher (the call a decision was about).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from django.db import transaction

from agentops.approvals.models import Approval, ApprovalStatus, DecisionKind
from agentops.approvals.services import decision_request
from agentops.guardrails.base import StopRun
from agentops.guardrails.budgets import CAP_OF_MEASURE, default_extension, extension_question
from agentops.guardrails.loops import Detection, escalation, nudge_text
from agentops.runs import transitions
from agentops.runs.conversation import PendingCall
from agentops.runs.models import RunOutcome, RunStatus, Step, StepKind
from agentops.runs.steps import LeaseLost

if TYPE_CHECKING:
    from agentops.runs.controller import RunLoop


class WaitForApproval(Exception):
    """The run now waits for a person (its status was moved to waiting_approval); the worker is freed."""


class LoopNudge(Exception):
    """A loop was detected before a tool call, and the policy nudges: the call does not run, and its
    observation is the controller's message (the dispatcher records it with ``step``)."""

    def __init__(self, text: str, step: dict[str, Any]) -> None:
        super().__init__(text)
        self.text = text
        self.step = step


class Decisions:
    """Asks a person for one run and reads the answers (one per RunLoop)."""

    def __init__(self, loop: RunLoop) -> None:
        self.loop = loop

    # --- asking --------------------------------------------------------------------------------

    def request(self, *, before: list[dict[str, Any]] | None = None, **fields: Any) -> NoReturn:
        """Ask a person and wait: the decision (with ``before``, steps of the controller's own) and the
        move to waiting commit together, so a worker that dies in between leaves neither."""
        loop = self.loop
        with transaction.atomic():
            if before:
                loop.record_many(before)
            # The evidence (spend against this run's caps, the latest steps, the diff) is the write path's.
            decision_request(run=loop.run, agent=loop.agent, timeout_s=loop.policy.approval_timeout_s, **fields)
            if not transitions.await_approval(loop.run.pk, loop.owner):
                raise LeaseLost(f"run {loop.run.pk}")
        raise WaitForApproval()

    def wait(self) -> NoReturn:
        """Wait again for a decision already asked (a worker resumed the run before it was decided)."""
        if not transitions.await_approval(self.loop.run.pk, self.loop.owner):
            raise LeaseLost(f"run {self.loop.run.pk}")
        raise WaitForApproval()

    # --- on resume -----------------------------------------------------------------------------

    def on_resume(self) -> None:
        """The decisions that are not about one tool call, decided while the run waited: a budget
        extension refused (or not given in time) ends the run; a loop escalation goes on or stops.
        A decision still pending means the run must go on waiting."""
        loop = self.loop
        decisions = list(Approval.objects.filter(run_id=loop.run.pk, kind__in=(DecisionKind.BUDGET_EXTENSION, DecisionKind.LOOP_ESCALATION)).order_by("pk"))
        if not decisions:
            return
        if any(d.status == ApprovalStatus.PENDING for d in decisions):
            self.wait()
        for decision in decisions:
            if decision.kind == DecisionKind.BUDGET_EXTENSION and decision.status != ApprovalStatus.APPROVED:
                request = decision.request or {}
                cap = str(request.get("cap", "budget"))
                how = "not extended in time" if decision.status == ApprovalStatus.EXPIRED else f"extension refused by {decision.decided_by_label or 'a person'}"
                reason = f"{cap} cap reached: {request.get('used', '?')} of {request.get('limit', '?')} ({how})"
                raise StopRun(RunStatus.BUDGET_EXCEEDED, reason, guard="budget_extension", outcome=RunOutcome.BUDGET, payload={"approval_id": decision.pk})
        loops = [d for d in decisions if d.kind == DecisionKind.LOOP_ESCALATION]
        if loops:
            self._loop_decisions(loops)

    def _loop_decisions(self, decisions: list[Approval]) -> None:
        loop = self.loop
        done = set(
            Step.objects.filter(run_id=loop.run.pk, kind=StepKind.GUARDRAIL, payload__guard="loop_detector", payload__escalation="continue").values_list(
                "payload__approval_id", flat=True
            )
        )
        for decision in decisions:
            if decision.pk in done:
                continue
            detection = Detection.from_payload((decision.request or {}).get("detection") or {})
            answer = (decision.answer or "").strip().lower()
            expired = decision.status == ApprovalStatus.EXPIRED
            go_on = (decision.status == ApprovalStatus.APPROVED and answer != "stop") or (expired and decision.on_expiry == "continue")
            if not go_on:
                who = "no one decided in time" if expired else f"{decision.decided_by_label or 'a person'} chose to stop"
                raise StopRun(RunStatus.FAILED, f"loop detected: {detection.reason}; {who}", guard="loop_detector", outcome=RunOutcome.LOOP)
            # Recorded before the loop goes on, so a worker that takes over replays the reset too.
            loop.record(
                StepKind.GUARDRAIL,
                {
                    "guard": "loop_detector",
                    "escalation": "continue",
                    "approval_id": decision.pk,
                    "detection": detection.as_payload(),
                    "reason": f"{decision.decided_by_label or 'a person'} chose to continue: the counters of this pattern start again",
                    "stops_run": False,
                },
            )
            loop.loops.resolved(detection, reset=True)

    # --- budget extension ----------------------------------------------------------------------

    def extend_or_stop(self, stop: StopRun) -> StopRun:
        """A per-run cap was reached. When the policy lets a person extend it (and the run may ask
        again), ask and wait (raises WaitForApproval); otherwise the stop, as it was."""
        loop = self.loop
        policy = loop.policy
        cap = CAP_OF_MEASURE.get(str(stop.payload.get("measure", "")))
        if stop.guard != "budget" or cap is None or cap not in (policy.extendable_caps or []):
            return stop
        asked = list(Approval.objects.filter(run_id=loop.run.pk, kind=DecisionKind.BUDGET_EXTENSION).order_by("pk"))
        if len(asked) >= policy.max_extensions_per_run:
            stop.reason += f" (a person was asked {len(asked)} times to extend this run's caps, the most its policy allows)"
            return stop
        run = loop.run
        limit = loop.budget.limit(cap)
        used = {"cost": run.cost_usd, "tokens": run.total_tokens, "tool_calls": run.tool_calls, "iterations": run.iterations}.get(cap, int(loop.wall_clock_s()))
        extend_by = default_extension(cap, limit)
        question = extension_question(cap, limit=limit, used=used, extend_by=extend_by)
        before = []
        if not stop.recorded:
            before.append({"kind": StepKind.GUARDRAIL, "payload": {"guard": stop.guard, "reason": stop.reason, "stops_run": False, **stop.payload}})
        self.request(
            before=before,
            kind=DecisionKind.BUDGET_EXTENSION,
            tool_call_id=f"budget:{cap}:{len(asked) + 1}",
            tool="",
            arguments={},
            risk_class="read",
            reason=question,
            why_needed=f"the policy lets a person extend the {cap} cap of a run",
            request={"cap": cap, "limit": str(limit), "used": str(used), "extend_by": str(extend_by)},
            on_expiry="halt",
        )

    # --- loop escalation -----------------------------------------------------------------------

    def loop_detected(self, detection: Detection, call: PendingCall | None) -> None:
        """The loop detector found a loop before the next model call (``call`` None) or tool call.
        Per the policy's ladder: nudge the model (returns; before a tool call raises LoopNudge so the
        call's observation carries the message), ask a person (waits), or stop."""
        loop = self.loop
        step = escalation(loop.policy.loop_escalation, loop.loops.handled)
        payload: dict[str, Any] = {"guard": "loop_detector", "reason": detection.reason, "detection": detection.as_payload()}
        if step == "nudge":
            text = nudge_text(detection.reason)
            payload.update(escalation="nudge", note=text, stops_run=False)
            loop.loops.resolved(detection, reset=False)
            if call is not None:
                raise LoopNudge(text, {"kind": StepKind.GUARDRAIL, "payload": {**payload, "tool": call.name, "tool_call_id": call.id}})
            loop.record(StepKind.GUARDRAIL, payload)
            loop.conversation.add_note(text)
            return
        if step == "ask":
            payload.update(escalation="ask", stops_run=False)
            loop.loops.resolved(detection, reset=False)
            nudged = (
                Step.objects.filter(run_id=loop.run.pk, kind=StepKind.GUARDRAIL, payload__guard="loop_detector", payload__escalation="nudge")
                .order_by("-seq")
                .values_list("seq", flat=True)
                .first()
            )
            asked = Approval.objects.filter(run_id=loop.run.pk, kind=DecisionKind.LOOP_ESCALATION).count()
            self.request(
                before=[{"kind": StepKind.GUARDRAIL, "payload": payload}],
                kind=DecisionKind.LOOP_ESCALATION,
                tool_call_id=f"loop:{asked + 1}",
                tool="",
                arguments={},
                risk_class="read",
                reason=f"The agent was told it repeats itself ({detection.reason}) and did it again. Continue or stop?",
                why_needed="the policy asks a person before a loop stops the run",
                request={"pattern": detection.pattern, "detail": detection.reason, "nudged_at_seq": nudged or 0, "detection": detection.as_payload()},
                on_expiry="halt",
            )
        loop.record(StepKind.GUARDRAIL, {**payload, "stops_run": True})
        raise StopRun(RunStatus.FAILED, f"loop detected: {detection.reason}", guard="loop_detector", recorded=True)

    # --- questions (ask_person) ----------------------------------------------------------------

    def earlier_answer(self, arguments: Any) -> str | None:
        """The answer a person already gave this run to exactly this question, if any."""
        for asked, answer in Approval.objects.filter(run_id=self.loop.run.pk, kind=DecisionKind.QUESTION, status=ApprovalStatus.APPROVED).values_list(
            "arguments", "answer"
        ):
            if asked == arguments:
                return str(answer)
        return None
