from django.apps import AppConfig


class ForgesConfig(AppConfig):
    name = "agentops.forges"
    label = "forges"
    verbose_name = "Forges"
