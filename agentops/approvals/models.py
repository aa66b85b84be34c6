from __future__ import annotations

from django.conf import settings
from django.db import models

from agentops.agents.models import RiskClass
from agentops.fields import RedactedCharField, RedactedJSONField, RedactedTextField
from agentops.runs.models import Run, Step


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Approval(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
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
        ]

    def __str__(self) -> str:
        return f"approval {self.pk}: {self.tool} ({self.status})"
