from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from dashboard import auth  # noqa: F401  registers the lock-out audit receiver; in ready() because it reaches the audit models (app registry)
