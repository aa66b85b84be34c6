from __future__ import annotations

from django.conf import settings
from django.db import models

from agentops.agents.models import Agent, OnExpiry, RiskClass
from agentops.fields import RedactedCharField, RedactedJSONField, RedactedTextField
from agentops.runs.models import Run, Step


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class DecisionKind(models.TextChoices):
    APPROVAL = "approval", "approval of a tool call"
    BUDGET_EXTENSION = "budget_extension", "budget extension"
    QUESTION = "question", "question from the agent"
    LOOP_ESCALATION = "loop_escalation", "loop escalation"
    CONFIG_CHANGE = "config_change", "configuration change (second admin)"


# Kinds that belong to a run (a run waits for them); config_change belongs to an agent only.
RUN_KINDS = frozenset({DecisionKind.APPROVAL, DecisionKind.BUDGET_EXTENSION, DecisionKind.QUESTION, DecisionKind.LOOP_ESCALATION})


class Approval(models.Model):
    """A pending human decision (called a "decision" in UI/API/docs): a tool call waiting for approval,
    a budget extension, a question of the agent, a loop escalation or a two-admin configuration change."""

    kind = models.CharField(max_length=20, choices=DecisionKind.choices, default=DecisionKind.APPROVAL)
    # Null for config_change only (it has no run).
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="approvals")
    # Set for every kind: the run's agent, or the agent whose configuration changes.
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="decisions")
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    tool_call_id = RedactedCharField(max_length=100)
    tool = models.CharField(max_length=100)
    arguments = RedactedJSONField(default=dict)
    risk_class = models.CharField(max_length=20, choices=RiskClass.choices)
    reason = RedactedTextField(blank=True, help_text="Why the model asked for this action, in its own words.")
    why_needed = RedactedCharField(max_length=200, blank=True, help_text="Why the controller requires a person.")
    status = models.CharField(max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    requested_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    decided_by_label = models.CharField(max_length=150, blank=True)
    comment = RedactedTextField(blank=True)
    # What exactly is asked, per kind (see docs: budget cap/limit/used/extend_by; question/options; loop
    # pattern; config_change agent_id/change/summary; {} for approvals).
    request = RedactedJSONField(default=dict, blank=True)
    # What a person needs to decide: {"spend": {...}, "trace": [...], "diff": "..."}.
    evidence = RedactedJSONField(default=dict, blank=True)
    # kind=approval: the arguments the approver approved instead of the model's (`arguments` keeps the model's).
    edited_arguments = RedactedJSONField(null=True, blank=True)
    # question: the answer; loop_escalation: continue/stop; budget_extension: the amount granted (decimal string).
    answer = RedactedTextField(blank=True)
    # A Django auth Group whose members may decide ("": anyone with approvals.decide_approval).
    approver_group = models.CharField(max_length=150, blank=True, default="")
    on_expiry = models.CharField(max_length=10, choices=OnExpiry.choices, default=OnExpiry.HALT)
    # config_change: the first admin (who may not be the second). Null when the agent asks.
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by_label = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        permissions = [("decide_approval", "Can approve or reject an agent's action")]
        constraints = [
            # A tool call asks a person once.
            models.UniqueConstraint(fields=["run", "tool_call_id"], name="one_approval_per_tool_call"),
            # Decided exactly once: a pending approval has no decision; a decided one has its time.
            models.CheckConstraint(
                condition=(models.Q(status="pending", decided_at__isnull=True)) | (~models.Q(status="pending") & models.Q(decided_at__isnull=False)),
                name="approval_decision_consistent",
            ),
            # Only a configuration change lives without a run.
            models.CheckConstraint(condition=models.Q(run__isnull=False) | models.Q(kind="config_change"), name="decision_run_unless_config_change"),
        ]

    def __str__(self) -> str:
        if self.kind == DecisionKind.APPROVAL:
            return f"approval {self.pk}: {self.tool} ({self.status})"
        return f"decision {self.pk}: {self.kind} ({self.status})"


class SlackIdentity(models.Model):
    """Which agentops user a Slack user is. A click in Slack decides as that user, with that user's
    permissions, so the link is made by an admin (CLI or admin site), never by the Slack user."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_identity")
    # Slack user ids are unique per workspace only (Slack Connect channels mix workspaces).
    team_id = models.CharField(max_length=32)
    slack_user_id = models.CharField(max_length=32)
    linked_at = models.DateTimeField(auto_now_add=True)
    linked_by_label = models.CharField(max_length=150, blank=True)

    class Meta:
        verbose_name_plural = "Slack identities"
        constraints = [models.UniqueConstraint(fields=["team_id", "slack_user_id"], name="one_user_per_slack_identity")]

    def __str__(self) -> str:
        return f"{self.team_id}/{self.slack_user_id} -> {self.user_id}"


class SlackMessage(models.Model):
    """The Slack message that asked for an approval: kept so that the message can say what was decided,
    wherever the decision was made (Slack, web, API, CLI, expiry, kill switch)."""

    approval = models.OneToOneField(Approval, on_delete=models.CASCADE, related_name="slack_message")
    channel = models.CharField(max_length=32)
    ts = models.CharField(max_length=32)
    # The approval status the message shows now: a decision made while Slack was down is shown by the next sync.
    shown_status = models.CharField(max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    posted_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"slack message {self.channel}/{self.ts} for approval {self.approval_id}"


class SlackInteraction(models.Model):
    """Signatures of the Slack interaction requests already handled. A signed request stays valid for
    five minutes; a captured one replayed within them finds its signature here and is refused."""

    signature = models.CharField(max_length=80, unique=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"slack interaction at {self.received_at:%Y-%m-%d %H:%M:%S}"
