from django.urls import path

from agentops.approvals import views

app_name = "approvals"

urlpatterns = [
    path("integrations/slack/interactions", views.slack_interactions, name="slack_interactions"),
]
