from django.contrib import admin

from agentops.approvals.models import Approval, SlackIdentity


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "run", "agent", "tool", "risk_class", "status", "requested_at", "expires_at", "decided_by_label"]
    list_filter = ["kind", "status", "risk_class", "tool"]
    raw_id_fields = ["run", "step", "agent", "requested_by"]
    # Deciding goes through approval_decide (one decision, audited, the one rule of who may), never
    # through the admin form; neither does what was asked change after it was asked.
    readonly_fields = [
        "status",
        "decided_at",
        "decided_by",
        "decided_by_label",
        "comment",
        "edited_arguments",
        "answer",
        "request",
        "approver_group",
        "on_expiry",
        "requested_by",
        "requested_by_label",
    ]


@admin.register(SlackIdentity)
class SlackIdentityAdmin(admin.ModelAdmin):
    """Which Slack user clicks as which agentops user (the CLI `agentops slack link` does the same, audited)."""

    list_display = ["user", "team_id", "slack_user_id", "linked_at", "linked_by_label"]
    search_fields = ["user__username", "slack_user_id"]
    raw_id_fields = ["user"]
    readonly_fields = ["linked_at", "linked_by_label"]
