from django.contrib import admin

from agentops.mcp.models import McpServer, McpToolSnapshot


class McpToolSnapshotInline(admin.TabularInline):
    model = McpToolSnapshot
    extra = 0
    # What discovery saw is a record, not configuration: changed only by discovering again.
    fields = ["qualified_name", "digest", "changed_at", "last_seen_at"]
    readonly_fields = ["qualified_name", "digest", "changed_at", "last_seen_at"]
    can_delete = False


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin):
    list_display = ["agent", "name", "transport", "location", "enabled", "discovered_at"]
    list_filter = ["transport", "location", "enabled"]
    readonly_fields = ["discovered_at", "discovery_error"]
    inlines = [McpToolSnapshotInline]

    def has_add_permission(self, request: object) -> bool:
        # Configuration goes through the one validator (the spec, the dashboard, the CLI).
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
