from django.contrib import admin

from agentops.runs.models import Artifact, Run, Step, ToolExecution


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "agent", "status", "trigger_kind", "cost_usd", "tool_calls", "iterations", "created_at"]
    list_filter = ["status", "trigger_kind", "agent"]
    search_fields = ["input", "fingerprint"]
    raw_id_fields = ["trigger"]


@admin.register(Step)
class StepAdmin(admin.ModelAdmin):
    list_display = ["run", "seq", "kind", "model_id", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "created_at"]
    list_filter = ["kind"]
    raw_id_fields = ["run"]


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ["run", "name", "size", "created_at"]
    raw_id_fields = ["run", "step"]


@admin.register(ToolExecution)
class ToolExecutionAdmin(admin.ModelAdmin):
    list_display = ["key", "tool", "status", "started_at", "finished_at"]
    list_filter = ["status", "tool"]
    raw_id_fields = ["run"]
