from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

if TYPE_CHECKING:
    from agentops.approvals.models import Approval


class TrustPhase(models.IntegerChoices):
    PROPOSE = 1, "1 · propose"
    DRAFT_PR = 2, "2 · draft pull request"
    READY_PR = 3, "3 · ready pull request, a person merges"
    AUTO_MERGE = 4, "4 · auto-merge low-risk"


class RiskClass(models.TextChoices):
    READ = "read"
    WRITE = "write"
    IRREVERSIBLE = "irreversible"


class Agent(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    objective = models.TextField(help_text="The system prompt: what this agent is for and how it should work.")
    model = models.CharField(max_length=100)
    trust_phase = models.PositiveSmallIntegerField(choices=TrustPhase.choices, default=TrustPhase.PROPOSE)
    # Agent-specific settings the tools read: repository, test command, planner kind, script, image.
    config = models.JSONField(default=dict, blank=True)
    paused = models.BooleanField(default=False)
    paused_reason = models.TextField(blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Not stored: set by a write path that held part of a change for a second admin (the pending
    # config_change decision, else None), so that its caller can say so.
    pending_change: Approval | None

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(trust_phase__gte=1, trust_phase__lte=4), name="agent_trust_phase_1_to_4"),
        ]

    def __str__(self) -> str:
        return self.name


# The per-run caps of a Policy, by the name decisions use (budget_extension request["cap"]).
EXTENDABLE_CAPS = ("cost", "tokens", "tool_calls", "iterations", "wall_clock")


class LoopEscalation(models.TextChoices):
    STOP = "stop", "stop on the first detection"
    NUDGE = "nudge", "nudge the model, then stop"
    NUDGE_ASK = "nudge_ask", "nudge the model, then ask a person continue/stop"


class OnExpiry(models.TextChoices):
    HALT = "halt", "halt the run (fail closed)"
    CONTINUE = "continue", "tell the model it was not approved in time and go on"


class Policy(models.Model):
    """An agent's limits. Caps stop a run; alarms (below the caps) only record and notify."""

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, related_name="policy")
    # Per-run caps.
    max_tokens = models.PositiveBigIntegerField(default=500_000)
    max_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("5"))
    max_tool_calls = models.PositiveIntegerField(default=100)
    max_iterations = models.PositiveIntegerField(default=50)
    max_wall_clock_s = models.PositiveIntegerField(default=1800)
    # Alarm thresholds (null: none). Must sit below the matching cap.
    alarm_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    alarm_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    alarm_tool_calls = models.PositiveIntegerField(null=True, blank=True)
    alarm_iterations = models.PositiveIntegerField(null=True, blank=True)
    alarm_wall_clock_s = models.PositiveIntegerField(null=True, blank=True)
    # True once a person set the cost cap/alarm: the history-based defaults (10x/50x median) then stop applying.
    budget_set_by_person = models.BooleanField(default=False)
    # Daily aggregate caps across all runs of the agent (UTC day). Null: no cap.
    daily_max_runs = models.PositiveIntegerField(null=True, blank=True)
    daily_max_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    # {"irreversible": 5, "write": 200, "tool:open_pull_request": 3}: counts per action class or tool per day.
    daily_action_caps = models.JSONField(default=dict, blank=True)
    # Tool calls per minute per run (null: unlimited).
    rate_limit_per_minute = models.PositiveIntegerField(null=True, blank=True)
    approval_timeout_s = models.PositiveIntegerField(default=3600, validators=[MinValueValidator(10)])
    # Phase 4: what counts as low-risk for auto-merge.
    low_risk_max_changed_lines = models.PositiveIntegerField(default=40)
    low_risk_paths = models.JSONField(default=list, blank=True, help_text="glob patterns a low-risk change may touch")
    protected_paths = models.JSONField(default=list, blank=True, help_text="glob patterns a change may not touch without approval")
    max_diff_lines = models.PositiveIntegerField(default=500)
    # Sandbox resources.
    sandbox_memory_mb = models.PositiveIntegerField(default=1024, validators=[MinValueValidator(64)])
    sandbox_pids = models.PositiveIntegerField(default=256, validators=[MinValueValidator(16)])
    sandbox_cpus = models.DecimalField(max_digits=4, decimal_places=2, default=Decimal("1"))
    # The most the workspace may hold (and half of it each for /tmp and home): a run can never fill the host.
    sandbox_disk_mb = models.PositiveIntegerField(default=1024, validators=[MinValueValidator(64), MaxValueValidator(1_048_576)])
    command_timeout_s = models.PositiveIntegerField(default=300, validators=[MinValueValidator(1), MaxValueValidator(86400)])
    # Human decisions (issue 13). Per-run caps a person may extend instead of ending the run
    # (names from EXTENDABLE_CAPS; daily caps are never extendable).
    extendable_caps = models.JSONField(default=list, blank=True, help_text="per-run caps a person may extend: cost, tokens, tool_calls, iterations, wall_clock")
    max_extensions_per_run = models.PositiveIntegerField(default=3, validators=[MaxValueValidator(100)])
    loop_escalation = models.CharField(max_length=10, choices=LoopEscalation.choices, default=LoopEscalation.NUDGE)
    # Separation of duties: who started a run, or changed the agent's grants/policy recently, may not decide its decisions.
    self_approval_allowed = models.BooleanField(default=False)
    grant_change_cooldown_h = models.PositiveIntegerField(default=24, validators=[MaxValueValidator(24 * 365)])
    # Not stored: as Agent.pending_change (policy_update held a change for a second admin).
    pending_change: Approval | None

    class Meta:
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return f"policy of {self.agent}"


class ApprovalOverride(models.TextChoices):
    DEFAULT = "default", "by risk class and trust phase"
    ALWAYS = "always", "always ask a person"
    NEVER = "never", "never ask (not allowed for irreversible tools)"


class ToolGrant(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="grants")
    tool = models.CharField(max_length=100)
    scope = models.JSONField(default=dict, blank=True)
    approval = models.CharField(max_length=10, choices=ApprovalOverride.choices, default=ApprovalOverride.DEFAULT)
    # MCP tools only: the digest (sha256) of the tool as granted; a tool that no longer matches it
    # (new description, schema or annotations) is refused until an admin grants it again.
    pinned_digest = models.CharField(max_length=64, blank=True, default="")
    # MCP tools only: the admin's risk class, instead of the one the tool's annotations imply.
    risk_override = models.CharField(max_length=12, choices=RiskClass.choices, blank=True, default="")
    # Which Django group may decide this tool's approvals ("": anyone with approvals.decide_approval).
    approver_group = models.CharField(max_length=150, blank=True, default="")
    # What an approval of this tool that nobody decided in time does.
    on_timeout = models.CharField(max_length=10, choices=OnExpiry.choices, default=OnExpiry.HALT)

    class Meta:
        ordering = ["tool"]
        constraints = [models.UniqueConstraint(fields=["agent", "tool"], name="one_grant_per_tool")]

    def __str__(self) -> str:
        return f"{self.agent} may use {self.tool}"


class TriggerKind(models.TextChoices):
    ERROR = "error"
    SCHEDULE = "schedule"
    MANUAL = "manual"


class Trigger(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="triggers")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=TriggerKind.choices)
    # error: {"project": "checkout", "min_level": "error", "tags": {"service": "checkout"}, "min_count": 1, "window_s": 300}
    # schedule: {"cron": "0 3 * * *", "input": "..."}
    rules = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["agent", "name"]
        constraints = [models.UniqueConstraint(fields=["agent", "name"], name="trigger_name_unique_per_agent")]

    def __str__(self) -> str:
        return f"{self.agent}: {self.name} ({self.kind})"
