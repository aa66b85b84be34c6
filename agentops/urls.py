from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="registration/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Error ingest (Sentry-compatible /api/<project>/envelope/ and /store/, signed webhooks).
    path("", include("agentops.triggers.urls")),
    path("", include("agentops.approvals.urls")),  # Slack interactions (signed by Slack)
    path("", include("dashboard.urls")),
]
