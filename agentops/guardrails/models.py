from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from agentops.agents.models import Agent


class ControlState(models.Model):
    """The global kill switch: a single row (id=1)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    engaged = models.BooleanField(default=False)
    engaged_at = models.DateTimeField(null=True, blank=True)
    engaged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    engaged_by_label = models.CharField(max_length=150, blank=True)
    reason = models.TextField(blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    released_by_label = models.CharField(max_length=150, blank=True)
    release_reason = models.TextField(blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="control_state_singleton")]
        permissions = [
            ("operate_killswitch", "Can engage and release the kill switch"),
            ("run_drill", "Can run kill-switch drills"),
        ]

    def __str__(self) -> str:
        return "kill switch engaged" if self.engaged else "kill switch released"


class DailyUsage(models.Model):
    """Aggregate counters per agent per UTC day; incremented with a conditional UPDATE so that
    concurrent runs can never jointly pass a cap (the database arbitrates, not the workers)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="daily_usage")
    day = models.DateField()
    key = models.CharField(max_length=120, help_text="runs, cost_usd, action:<risk class>, tool:<name>")
    value = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "day", "key"], name="daily_usage_unique")]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.day} {self.key}={self.value}"


class DrillStatus(models.TextChoices):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"


class Drill(models.Model):
    """A rehearsal of the kill switch on synthetic runs, with what it measured."""

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=DrillStatus.choices, default=DrillStatus.RUNNING)
    synthetic_runs = models.PositiveIntegerField(default=0)
    time_to_halt_ms = models.PositiveIntegerField(null=True, blank=True)
    actions_after_engage = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"drill {self.pk} ({self.status})"
