"""The three roles: viewer (reads everything), approver (also decides approvals), admin (also
operates the kill switch, runs drills and configures agents)."""

from django.db import migrations

APPROVER = ["approvals.decide_approval"]
ADMIN = APPROVER + [
    "guardrails.operate_killswitch",
    "guardrails.run_drill",
    "agents.change_agent",
    "agents.change_policy",
    "agents.add_toolgrant",
    "agents.change_toolgrant",
    "agents.delete_toolgrant",
    "agents.change_trigger",
    "agents.add_trigger",
]
ROLES = {"viewer": [], "approver": APPROVER, "admin": ADMIN}


def _ensure_permissions(apps):
    # Permissions are normally created after all migrations (post_migrate); create them now so the
    # groups can reference them on a fresh database.
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None


def create_roles(apps, schema_editor):
    _ensure_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for dotted in perms:
            app_label, codename = dotted.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def delete_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("agents", "0001_initial"),
        ("approvals", "0001_initial"),
        ("guardrails", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_roles, delete_roles)]
