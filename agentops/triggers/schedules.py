"""Schedule triggers: `rules: {"cron": "0 3 * * *", "input": "..."}`, fired once per cron slot.

`fire_due_schedules` is meant to run every minute (a django-q2 schedule). Each slot is claimed with
a conditional UPDATE of `last_fired_at`, so two schedulers running at once, or one running twice,
start exactly one run per slot. A slot missed by more than `grace_s` (the scheduler was down) is
skipped, not caught up: a nightly job should not fire three times at start-up.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from croniter import croniter
from django.db.models import Q
from django.utils import timezone

from agentops.agents.models import Trigger, TriggerKind
from agentops.runs.models import Run
from agentops.runs.services import RunRefused, run_create
from agentops.triggers.rules import record_refusal

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 600


class ScheduleError(ValueError):
    pass


def cron_slot(expression: str, now: datetime) -> datetime:
    """The latest cron time at or before now (UTC)."""
    if not croniter.is_valid(expression):
        raise ScheduleError(f"invalid cron expression {expression!r}")
    # croniter's get_prev is strictly before its base: step one second past now.
    return croniter(expression, now + timedelta(seconds=1)).get_prev(datetime)


def fire_due_schedules(now: datetime | None = None, *, grace_s: int = DEFAULT_GRACE_S) -> list[Run]:
    """Start a run for every enabled schedule trigger whose current slot has not fired yet."""
    now = now or timezone.now()
    started: list[Run] = []
    for trigger in Trigger.objects.filter(kind=TriggerKind.SCHEDULE, enabled=True).select_related("agent"):
        rules = trigger.rules or {}
        try:
            slot = cron_slot(str(rules.get("cron", "")), now)
        except ScheduleError as exc:
            log.warning("schedule trigger %s: %s", trigger.pk, exc)
            continue
        claimed = Trigger.objects.filter(pk=trigger.pk).filter(Q(last_fired_at__isnull=True) | Q(last_fired_at__lt=slot)).update(last_fired_at=slot)
        if not claimed:
            continue
        if (now - slot).total_seconds() > grace_s:
            log.info("schedule trigger %s: slot %s missed by more than %ss, skipped", trigger.pk, slot, grace_s)
            continue
        text = str(rules.get("input") or f"Scheduled run ({rules.get('cron')}).")
        try:
            run = run_create(
                agent=trigger.agent,
                input=text,
                trigger=trigger,
                trigger_kind="schedule",
                context={"schedule": rules.get("cron"), "slot": slot.isoformat()},
                # One active run per schedule: a slow nightly run is not joined by the next one.
                fingerprint=f"schedule:{trigger.pk}",
                actor="system",
            )
        except RunRefused as exc:
            record_refusal(trigger=trigger, group=None, reason=str(exc))
            continue
        started.append(run)
    return started
