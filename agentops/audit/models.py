from __future__ import annotations

from django.conf import settings
from django.db import models

from agentops.fields import RedactedCharField, RedactedJSONField, RedactedTextField


class AuditEvent(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # "alice", "system", "cli:root", "api:<token name>": kept even if the user is deleted.
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=50, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    target_label = RedactedCharField(max_length=200, blank=True)
    before = RedactedJSONField(null=True, blank=True)
    after = RedactedJSONField(null=True, blank=True)
    detail = RedactedTextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.target_type}:{self.target_id}"
