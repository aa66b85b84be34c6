from __future__ import annotations

from decimal import Decimal

from django.db import models

from agentops.agents.models import Agent, Trigger
from agentops.fields import RedactedCharField, RedactedJSONField, RedactedTextField


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    KILLED = "killed"
    REJECTED = "rejected"


class RunOutcome(models.TextChoices):
    PR_OPENED = "pr_opened"
    PR_MERGED = "pr_merged"
    REPORT_SUBMITTED = "report_submitted"
    ACTED = "acted"  # side-effecting actions succeeded, no pull request or report
    NO_CHANGE = "no_change"
    REFUSED = "refused"
    GATE_FAILED = "gate_failed"
    BUDGET = "budget"
    LOOP = "loop"
    KILLED_BY_SWITCH = "killed_by_switch"
    STOPPED_BY_PERSON = "stopped_by_person"
    REJECTED = "rejected"
    MALFORMED_OUTPUT = "malformed_output"
    TRUNCATED = "truncated"
    MODEL_REFUSED = "model_refused"
    INFRASTRUCTURE = "infrastructure"
    ERROR = "error"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING_APPROVAL)
FINAL_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.BUDGET_EXCEEDED,
    RunStatus.KILLED,
    RunStatus.REJECTED,
)


class Run(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs")
    trigger = models.ForeignKey(Trigger, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    trigger_kind = models.CharField(max_length=10, default="manual")
    input = RedactedTextField(blank=True, help_text="What the run was asked to do (the first user message).")
    context = RedactedJSONField(default=dict, blank=True, help_text="Structured trigger data, e.g. the error event.")
    # Identifies the problem a run works on (an error group): at most one active run per fingerprint.
    fingerprint = models.CharField(max_length=200, null=True, blank=True)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    status_reason = RedactedTextField(blank=True)
    # Set by a person's Stop: the worker halts before its next action.
    cancel_requested = models.BooleanField(default=False)
    planner_kind = models.CharField(max_length=20, default="scripted")
    model = RedactedCharField(max_length=100, blank=True)
    # Counters, updated by the controller in the same transaction as the step that moved them.
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    model_calls = models.PositiveIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    iterations = models.PositiveIntegerField(default=0)
    next_seq = models.PositiveIntegerField(default=1)
    alarms_raised = models.JSONField(default=list, blank=True)
    # Lease: the worker that owns the run renews lease_expires_at; past it, the reaper may take over.
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Wall-clock time spent actively working, excluding time waiting for a person.
    active_seconds = models.FloatField(default=0)
    final_error = RedactedTextField(blank=True)
    # What the run achieved (RunOutcome), beside its status; the detail says it in words.
    outcome = models.CharField(max_length=30, blank=True)
    outcome_detail = RedactedTextField(blank=True)
    # Calls the controller refused or found invalid (they count as tool calls too).
    refused_calls = models.PositiveIntegerField(default=0)
    # The model call in flight, reserved before it was sent and settled with the step that records
    # it: a worker that dies meanwhile leaves these set, and whoever takes the run over charges them.
    reserved_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    reserved_input_tokens = models.PositiveBigIntegerField(default=0)
    reserved_output_tokens = models.PositiveBigIntegerField(default=0)
    result = RedactedJSONField(default=dict, blank=True, help_text="What the run produced: report, patch, pull request.")
    # Not stored: set by run_create's hand-off once the transaction committed (True: the broker took
    # the job; False: the run waits for the reconciler). Unset until then.
    dispatched: bool

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"]),
            models.Index(fields=["agent", "created_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["fingerprint"],
                condition=models.Q(status__in=["queued", "running", "waiting_approval"]) & models.Q(fingerprint__isnull=False),
                name="one_active_run_per_fingerprint",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.agent_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


class StepKind(models.TextChoices):
    INPUT = "input"
    MODEL_CALL = "model_call"
    TOOL_CALL = "tool_call"
    OBSERVATION = "observation"
    GUARDRAIL = "guardrail"
    ALARM = "alarm"
    APPROVAL_REQUEST = "approval_request"
    APPROVAL_DECISION = "approval_decision"
    GATE = "gate"
    OUTPUT = "output"
    PROGRESS = "progress"
    RETRY = "retry"
    COMPACTION = "compaction"
    ERROR = "error"
    STATUS = "status"


class Step(models.Model):
    # No index of its own: the unique (run, seq) index serves every lookup by run.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps", db_index=False)
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=StepKind.choices)
    # Payload is truncated for display; the whole text lives in an Artifact.
    payload = RedactedJSONField(default=dict)
    model_id = RedactedCharField(max_length=100, blank=True)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="step_seq_unique_per_run")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.kind}"


class Artifact(models.Model):
    """Whole content too large for a step row (full observations, diffs, reports)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=200)
    content = RedactedTextField()
    size = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} of run {self.run_id}"


class ExecutionStatus(models.TextChoices):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ToolExecution(models.Model):
    """The idempotency ledger: one row per (run, tool call), written before the tool acts."""

    key = RedactedCharField(max_length=200, unique=True)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="executions")
    tool = models.CharField(max_length=100)
    arguments = RedactedJSONField(default=dict)
    status = models.CharField(max_length=10, choices=ExecutionStatus.choices, default=ExecutionStatus.STARTED)
    result = RedactedJSONField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.key
