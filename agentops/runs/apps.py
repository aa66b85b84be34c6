from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "agentops.runs"
    label = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        from django_q.signals import post_spawn  # app registry: django_q.signals imports django_q's models

        from agentops.runs.tasks import start_reaper  # app registry: the tasks import models
        from agentops.tools.catalog import load_tools  # app registry: the tool modules import models

        # Runs call tools: every tool a grant may name is registered before the first run or request.
        load_tools()
        # Every django-q2 worker process reconciles at start and then every AGENTOPS_REAPER_S.
        post_spawn.connect(start_reaper, dispatch_uid="agentops-reaper")
