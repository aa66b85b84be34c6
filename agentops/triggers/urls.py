from django.urls import path

from agentops.triggers import views

app_name = "triggers"

urlpatterns = [
    path("api/<str:project_id>/envelope/", views.sentry_envelope, name="sentry_envelope"),
    path("api/<str:project_id>/store/", views.sentry_store, name="sentry_store"),
    path("hooks/errors/<slug:project_slug>/", views.error_webhook, name="error_webhook"),
]
