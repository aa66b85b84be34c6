"""Critical rules: which error groups start a run of which agent.

An error Trigger's rules (all optional except project):
    {"project": "checkout", "min_level": "error", "tags": {"service": "checkout"},
     "min_count": 1, "window_s": 300, "environments": ["production"]}
A tag rule's value may be a string or a list of accepted strings. min_count events of the group
within window_s seconds make it critical.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from agentops.agents.models import Trigger, TriggerKind
from agentops.runs.models import ACTIVE_STATUSES, Run
from agentops.runs.services import RunRefused, run_create
from agentops.triggers.ingest import LEVELS, events_in_window
from agentops.triggers.models import ErrorEvent, ErrorGroup, ErrorProject, TriggerRefusal

log = logging.getLogger(__name__)

ALREADY_ACTIVE = "a run for this problem is already active"


@dataclass
class Decision:
    trigger: Trigger
    started: Run | None
    refused: str | None
    matched: bool


def rule_mismatch(rules: dict[str, Any], *, project: ErrorProject, event: ErrorEvent, group: ErrorGroup) -> str | None:
    """Why this event does not match the rules (None when it does). Frequency is checked separately."""
    wanted = rules.get("project")
    if wanted and wanted not in (project.slug, project.name):
        return "other project"
    min_level = str(rules.get("min_level", "error")).lower()
    if LEVELS.get(event.level, 0) < LEVELS.get(min_level, LEVELS["error"]):
        return f"level {event.level} below {min_level}"
    environments = rules.get("environments")
    if environments and event.environment not in environments:
        return f"environment {event.environment!r} not in {environments}"
    for key, accepted in (rules.get("tags") or {}).items():
        accepted_values = [str(v) for v in accepted] if isinstance(accepted, list) else [str(accepted)]
        if event.tags.get(key) not in accepted_values:
            return f"tag {key}={event.tags.get(key)!r} not in {accepted_values}"
    return None


def record_refusal(*, trigger: Trigger, group: ErrorGroup | None, reason: str) -> None:
    now = timezone.now()
    reason = reason[:300]
    rows = TriggerRefusal.objects.filter(trigger=trigger, group=group, reason=reason)
    if rows.update(count=F("count") + 1, last_at=now):
        return
    try:
        with transaction.atomic():
            TriggerRefusal.objects.create(trigger=trigger, group=group, reason=reason, count=1, first_at=now, last_at=now)
    except IntegrityError:
        rows.update(count=F("count") + 1, last_at=now)


def run_input_for(group: ErrorGroup, event: ErrorEvent) -> str:
    return (
        f"A critical error was reported in project {group.project.slug}: {group.title}\n"
        f"Culprit: {group.culprit or 'unknown'}. Seen {group.count} time(s) since {group.first_seen:%Y-%m-%d %H:%M} UTC.\n"
        f"Error group id: {group.pk}; latest event: {event.event_id}.\n"
        "Investigate the stack trace and the code, find the root cause, fix it in the sandbox, "
        "run the tests, and deliver the fix as your trust phase allows."
    )


def run_context_for(group: ErrorGroup, event: ErrorEvent) -> dict[str, Any]:
    frames = event.stacktrace[-1]["frames"] if event.stacktrace else []
    return {
        "error_group_id": group.pk,
        "error_project": group.project.slug,
        "event_id": event.event_id,
        "title": group.title,
        "culprit": group.culprit,
        "level": event.level,
        "count": group.count,
        "exception_type": event.exception_type,
        "exception_value": event.exception_value[:1000],
        "tags": event.tags,
        "environment": event.environment,
        "release": event.release,
        "top_frames": [
            {k: f.get(k) for k in ("filename", "function", "lineno", "context_line")}
            for f in [f for f in frames if f.get("in_app")][-5:]
        ],
    }


def evaluate_error_triggers(*, group: ErrorGroup, event: ErrorEvent) -> list[Decision]:
    """Start a run for every error trigger this event makes critical; record every refusal.

    Call after the event is committed. At most one active run per group: the fingerprint
    `error:<group id>` is unique among active runs (a partial unique index), and a cheap
    pre-check keeps a flood of events from writing a refusal audit row each.
    """
    project = group.project
    decisions: list[Decision] = []
    triggers = Trigger.objects.filter(kind=TriggerKind.ERROR, enabled=True).select_related("agent", "agent__policy")
    for trigger in triggers:
        rules = trigger.rules or {}
        if rule_mismatch(rules, project=project, event=event, group=group) is not None:
            continue
        min_count = int(rules.get("min_count", 1) or 1)
        if min_count > 1:
            seen = events_in_window(group, window_s=int(rules.get("window_s", 300) or 300))
            if seen < min_count:
                continue
        fingerprint = group.run_fingerprint
        if Run.objects.filter(fingerprint=fingerprint, status__in=ACTIVE_STATUSES).exists():
            record_refusal(trigger=trigger, group=group, reason=ALREADY_ACTIVE)
            decisions.append(Decision(trigger=trigger, started=None, refused=ALREADY_ACTIVE, matched=True))
            continue
        try:
            run = run_create(
                agent=trigger.agent,
                input=run_input_for(group, event),
                trigger=trigger,
                trigger_kind="error",
                context=run_context_for(group, event),
                fingerprint=fingerprint,
                actor="system",
            )
        except RunRefused as exc:
            record_refusal(trigger=trigger, group=group, reason=str(exc))
            decisions.append(Decision(trigger=trigger, started=None, refused=str(exc), matched=True))
            continue
        ErrorGroup.objects.filter(pk=group.pk).update(last_run=run)
        Trigger.objects.filter(pk=trigger.pk).update(last_fired_at=timezone.now())
        log.info("error group %s started run %s of %s", group.pk, run.pk, trigger.agent.slug)
        decisions.append(Decision(trigger=trigger, started=run, refused=None, matched=True))
    return decisions
