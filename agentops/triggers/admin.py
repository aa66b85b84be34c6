from django.contrib import admin

from agentops.triggers.models import ErrorEvent, ErrorGroup, ErrorProject, TriggerRefusal


@admin.register(ErrorProject)
class ErrorProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(ErrorGroup)
class ErrorGroupAdmin(admin.ModelAdmin):
    list_display = ["title", "project", "level", "count", "last_seen"]
    list_filter = ["project", "level"]


@admin.register(ErrorEvent)
class ErrorEventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "group", "level", "received_at"]
    list_filter = ["project", "level"]


@admin.register(TriggerRefusal)
class TriggerRefusalAdmin(admin.ModelAdmin):
    list_display = ["trigger", "group", "reason", "count", "last_at"]
