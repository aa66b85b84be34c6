from django.apps import AppConfig
from django.db.models.signals import post_save

from agentops.redaction import forget_cached_secrets, install_log_redaction


class AuditConfig(AppConfig):
    name = "agentops.audit"
    label = "audit"
    verbose_name = "Audit"

    def ready(self) -> None:
        # Logs are a write path like any other: no record reaches a handler with a secret in it,
        # including handlers that django-q2 and other libraries attach on their own.
        install_log_redaction()
        # A new or rotated webhook secret is redacted at once in this process (others re-read
        # the database's secrets within half a minute).
        post_save.connect(_forget_secrets, sender="triggers.ErrorProject", dispatch_uid="agentops-forget-secrets")


def _forget_secrets(**kwargs: object) -> None:
    forget_cached_secrets()
