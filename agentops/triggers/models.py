from __future__ import annotations

import secrets

from django.db import models

from agentops.fields import RedactedCharField, RedactedJSONField, RedactedTextField


def new_public_key() -> str:
    return secrets.token_hex(16)


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class ErrorProject(models.Model):
    """A source of error events: the DSN's project (its id is the DSN path) and the webhook's slug."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    # The DSN's public key (`http://<public_key>@host/<id>`), checked on every Sentry request.
    public_key = models.CharField(max_length=64, unique=True, default=new_public_key)
    # HMAC-SHA256 key of the generic webhook (`X-Agentops-Signature: sha256=<hex>`).
    webhook_secret = models.CharField(max_length=128, default=new_webhook_secret)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def dsn(self, base_url: str) -> str:
        scheme, _, rest = base_url.rstrip("/").partition("://")
        return f"{scheme}://{self.public_key}@{rest}/{self.pk}"


class ErrorGroup(models.Model):
    """Events with one fingerprint: one problem, at most one active run."""

    project = models.ForeignKey(ErrorProject, on_delete=models.CASCADE, related_name="groups")
    fingerprint = models.CharField(max_length=64)
    title = RedactedCharField(max_length=500)
    culprit = RedactedCharField(max_length=500, blank=True)
    level = models.CharField(max_length=20, default="error")
    exception_type = RedactedCharField(max_length=200, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    count = models.PositiveBigIntegerField(default=0)
    # Tags of the latest event (the rules match against each event's own tags).
    tags = RedactedJSONField(default=dict, blank=True)
    last_run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # `count` when last_run started: the events since then were counted, not turned into runs.
    count_at_last_run = models.PositiveBigIntegerField(default=0)
    # Set when an event after the merge of the last run's fix started a new run.
    regressed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [models.UniqueConstraint(fields=["project", "fingerprint"], name="error_group_fingerprint_unique")]

    def __str__(self) -> str:
        return self.title

    @property
    def run_fingerprint(self) -> str:
        return f"error:{self.pk}"


class ErrorEvent(models.Model):
    project = models.ForeignKey(ErrorProject, on_delete=models.CASCADE, related_name="events")
    group = models.ForeignKey(ErrorGroup, on_delete=models.CASCADE, related_name="events")
    event_id = models.CharField(max_length=64, unique=True)
    received_at = models.DateTimeField(db_index=True)
    timestamp = models.DateTimeField(null=True, blank=True)
    level = models.CharField(max_length=20, default="error")
    message = RedactedTextField(blank=True)
    exception_type = RedactedCharField(max_length=200, blank=True)
    exception_value = RedactedTextField(blank=True)
    # [{"type", "value", "frames": [{"filename", "function", "lineno", "module", "in_app", "context_line", ...}]}]
    stacktrace = RedactedJSONField(default=list, blank=True)
    tags = RedactedJSONField(default=dict, blank=True)
    environment = RedactedCharField(max_length=100, blank=True)
    release = RedactedCharField(max_length=200, blank=True)
    platform = models.CharField(max_length=50, blank=True)
    source = models.CharField(max_length=20, default="sentry")  # sentry | webhook
    # The event as received (redacted, large parts dropped beyond RAW_CAP_BYTES).
    raw = RedactedJSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["group", "received_at"])]

    def __str__(self) -> str:
        return self.event_id


class ErrorCount(models.Model):
    """Events per group per hour: the frequency the dashboard draws and the tools report."""

    group = models.ForeignKey(ErrorGroup, on_delete=models.CASCADE, related_name="hourly")
    hour = models.DateTimeField()
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["group", "hour"]
        constraints = [models.UniqueConstraint(fields=["group", "hour"], name="error_count_unique_hour")]


class TriggerRefusal(models.Model):
    """Why an error trigger did not start a run, counted per (trigger, group, reason)."""

    trigger = models.ForeignKey("agents.Trigger", on_delete=models.CASCADE, related_name="refusals")
    group = models.ForeignKey(ErrorGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="refusals")
    reason = RedactedCharField(max_length=300)
    count = models.PositiveBigIntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        ordering = ["-last_at"]
        constraints = [
            models.UniqueConstraint(fields=["trigger", "group", "reason"], name="trigger_refusal_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.trigger}: {self.reason} x{self.count}"
