from django.apps import AppConfig


class GuardrailsConfig(AppConfig):
    name = "agentops.guardrails"
    label = "guardrails"
    verbose_name = "Guardrails"
