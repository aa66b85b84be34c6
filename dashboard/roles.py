"""The three roles as Django groups. The roles migration creates them on a fresh database;
ensure_roles() restores them (tests that flush tables, a seed command)."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

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
    "triggers.change_errorproject",
]
ROLES: dict[str, list[str]] = {"viewer": [], "approver": APPROVER, "admin": ADMIN}


def ensure_roles() -> dict[str, Group]:
    groups = {}
    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for dotted in perms:
            app_label, codename = dotted.split(".")
            wanted.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(wanted)
        groups[name] = group
    return groups
