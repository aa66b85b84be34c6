from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "agentops.audit"
    label = "audit"
    verbose_name = "Audit"

    def ready(self) -> None:
        # Logs are a write path like any other: no record reaches a handler with a secret in it,
        # including handlers that django-q2 and other libraries attach on their own.
        from django.db.models.signals import post_save

        from agentops.redaction import install_log_redaction

        install_log_redaction()
        # A new or rotated webhook secret is redacted at once in this process (others re-read
        # the database's secrets within half a minute).
        post_save.connect(_forget_secrets, sender="triggers.ErrorProject", dispatch_uid="agentops-forget-secrets")


def _forget_secrets(**kwargs: object) -> None:
    from agentops.redaction import forget_cached_secrets

    forget_cached_secrets()
