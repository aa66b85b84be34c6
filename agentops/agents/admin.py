from django.contrib import admin

from agentops.agents.models import Agent, Policy, ToolGrant, Trigger


class PolicyInline(admin.StackedInline):
    model = Policy
    can_delete = False


class ToolGrantInline(admin.TabularInline):
    model = ToolGrant
    extra = 0


class TriggerInline(admin.TabularInline):
    model = Trigger
    extra = 0


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "model", "trust_phase", "paused"]
    list_filter = ["trust_phase", "paused"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [PolicyInline, ToolGrantInline, TriggerInline]


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ["agent", "max_tokens", "max_cost_usd", "max_tool_calls", "max_iterations", "max_wall_clock_s"]


@admin.register(ToolGrant)
class ToolGrantAdmin(admin.ModelAdmin):
    list_display = ["agent", "tool", "approval"]
    list_filter = ["tool"]


@admin.register(Trigger)
class TriggerAdmin(admin.ModelAdmin):
    list_display = ["agent", "name", "kind", "enabled", "last_fired_at"]
    list_filter = ["kind", "enabled"]
