"""Admins may change error projects, and so see their DSNs (a credential) on the errors page."""

from django.db import migrations

PERMISSION = ("triggers", "change_errorproject")


def _ensure_permissions(apps):
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None


def grant(apps, schema_editor):
    _ensure_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permission = Permission.objects.get(content_type__app_label=PERMISSION[0], codename=PERMISSION[1])
    for group in Group.objects.filter(name="admin"):
        group.permissions.add(permission)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permission = Permission.objects.filter(content_type__app_label=PERMISSION[0], codename=PERMISSION[1]).first()
    if permission is not None:
        for group in Group.objects.filter(name="admin"):
            group.permissions.remove(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0002_roles"),
        ("triggers", "0001_initial"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
