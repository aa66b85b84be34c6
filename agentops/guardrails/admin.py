from django.contrib import admin

from agentops.guardrails.models import ControlState, DailyUsage, Drill


@admin.register(ControlState)
class ControlStateAdmin(admin.ModelAdmin):
    list_display = ["engaged", "engaged_by_label", "engaged_at", "reason", "released_by_label", "released_at"]
    # Engaging and releasing go through kill_switch_engage/release, so they are audited and act at once.
    readonly_fields = [f.name for f in ControlState._meta.fields]


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    list_display = ["agent", "day", "key", "value"]
    list_filter = ["day", "key"]


@admin.register(Drill)
class DrillAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "started_at", "synthetic_runs", "time_to_halt_ms", "actions_after_engage"]
