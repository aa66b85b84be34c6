from django.urls import path

from dashboard import api, views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("kill-switch/", views.killswitch_panel, name="killswitch"),
    path("kill-switch/engage/", views.killswitch_engage, name="killswitch_engage"),
    path("kill-switch/release/", views.killswitch_release, name="killswitch_release"),
    path("drills/", views.drills, name="drills"),
    path("drills/start/", views.drill_start, name="drill_start"),
    path("agents/", views.agent_list, name="agents"),
    path("agents/<slug:slug>/", views.agent_detail, name="agent_detail"),
    path("agents/<slug:slug>/edit/", views.agent_edit, name="agent_edit"),
    path("agents/<slug:slug>/pause/", views.agent_pause, name="agent_pause"),
    path("agents/<slug:slug>/resume/", views.agent_resume, name="agent_resume"),
    path("agents/<slug:slug>/grants/new/", views.grant_save, name="grant_add"),
    path("agents/<slug:slug>/grants/<int:grant_id>/", views.grant_save, name="grant_save"),
    path("agents/<slug:slug>/grants/<int:grant_id>/delete/", views.grant_delete, name="grant_delete"),
    path("agents/<slug:slug>/triggers/new/", views.trigger_save, name="trigger_add"),
    path("agents/<slug:slug>/triggers/<int:trigger_id>/", views.trigger_save, name="trigger_save"),
    path("runs/", views.run_list, name="runs"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/steps/", views.run_steps, name="run_steps"),
    path("runs/<int:run_id>/steps/<int:seq>/<str:field>/", views.step_text, name="step_text"),
    path("runs/<int:run_id>/stop/", views.run_stop, name="run_stop"),
    path("runs/<int:run_id>/merge/", views.run_merge, name="run_merge"),
    path("approvals/", views.approval_list, name="approvals"),
    path("approvals/<int:approval_id>/decide/", views.approval_decide, name="approval_decide"),
    path("audit/", views.audit_log, name="audit"),
    path("spend/", views.spend, name="spend"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
    # JSON API (token auth). /api/<digits>/... belongs to error ingest; ours is /api/v1/.
    path("api/v1/openapi.json", api.openapi, name="api_openapi"),
    path("api/v1/runs/", api.runs, name="api_runs"),
    path("api/v1/runs/<int:run_id>/", api.run, name="api_run"),
    path("api/v1/runs/<int:run_id>/steps/", api.run_steps, name="api_run_steps"),
    path("api/v1/runs/<int:run_id>/cancel/", api.run_cancel, name="api_run_cancel"),
    path("api/v1/approvals/", api.approvals, name="api_approvals"),
    path("api/v1/approvals/<int:approval_id>/decide/", api.approval_decide, name="api_approval_decide"),
    path("api/v1/kill-switch/", api.kill_switch, name="api_kill_switch"),
]
