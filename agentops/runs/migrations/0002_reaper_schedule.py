"""The reaper runs every minute in the django-q2 cluster: orphaned runs, expired approvals, stale
sandboxes, due schedules. A migration (not a start-up hook) so every deployment has it exactly once."""

from django.db import migrations


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="agentops-reaper",
        defaults={"func": "agentops.runs.tasks.reap", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="agentops-reaper").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [migrations.RunPython(create, remove)]
