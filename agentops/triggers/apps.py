from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "agentops.triggers"
    label = "triggers"
    verbose_name = "Triggers"
