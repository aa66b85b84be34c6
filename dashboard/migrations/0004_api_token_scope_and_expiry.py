"""API tokens get a scope and an expiry. Tokens made before had neither and acted with their
user's full role: they become read-only and expire 90 days from this migration (fail closed;
their owners create new tokens with the scope they need)."""

from datetime import timedelta

from django.db import migrations, models
from django.utils import timezone


def expire_old_tokens(apps, schema_editor):
    ApiToken = apps.get_model("dashboard", "ApiToken")
    ApiToken.objects.filter(expires_at__isnull=True).update(expires_at=timezone.now() + timedelta(days=90), scope="read")


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0003_admin_error_projects")]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="scope",
            field=models.CharField(
                choices=[("read", "read: GET only"), ("operate", "operate: start and stop runs, approve and reject"), ("admin", "admin: also configuration and the kill switch")],
                default="read",
                max_length=10,
            ),
        ),
        migrations.AddField(model_name="apitoken", name="expires_at", field=models.DateTimeField(null=True)),
        migrations.RunPython(expire_old_tokens, migrations.RunPython.noop),
        migrations.AlterField(model_name="apitoken", name="expires_at", field=models.DateTimeField()),
    ]
