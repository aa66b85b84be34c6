from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "agentops.runs"
    label = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from agentops.runs.tasks import start_reaper

        # Every django-q2 worker process reconciles at start and then every AGENTOPS_REAPER_S.
        post_spawn.connect(start_reaper, dispatch_uid="agentops-reaper")
