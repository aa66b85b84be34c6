from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class TokenScope(models.TextChoices):
    """What a token may do, whatever more its user may do: the lesser of the two applies."""

    READ = "read", "read: GET only"
    OPERATE = "operate", "operate: start and stop runs, approve and reject"
    ADMIN = "admin", "admin: also configuration and the kill switch"


# Each scope includes the ones before it.
# Keyed by the stored value (a plain str); TokenScope members are those same strings.
SCOPE_RANK: dict[str, int] = {TokenScope.READ: 0, TokenScope.OPERATE: 1, TokenScope.ADMIN: 2}


class ApiToken(models.Model):
    """A bearer token for the JSON API. Only its SHA-256 is stored (the token is 256 random bits,
    so a fast hash is enough). It acts as its user, narrowed to its scope, until it expires."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    # The first characters, shown in the list so a person can tell tokens apart.
    prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=10, choices=TokenScope.choices, default=TokenScope.READ)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and not self.is_expired

    def allows(self, scope: str) -> bool:
        return SCOPE_RANK.get(self.scope, -1) >= SCOPE_RANK[scope]
