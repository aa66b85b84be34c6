from django.contrib import admin

from agentops.approvals.models import Approval


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "tool", "risk_class", "status", "requested_at", "expires_at", "decided_by_label"]
    list_filter = ["status", "risk_class", "tool"]
    raw_id_fields = ["run", "step"]
    # Deciding goes through approval_decide (one decision, audited), never through the admin form.
    readonly_fields = ["status", "decided_at", "decided_by", "decided_by_label", "comment"]
