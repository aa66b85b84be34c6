from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "agentops.runs"
    label = "runs"
    verbose_name = "Runs"
