"""Critical rules: which error groups start a run of which agent, and when a group may start another.

An error Trigger's rules (all optional except project):
    {"project": "checkout", "min_level": "error", "tags": {"service": "checkout"},
     "min_count": 1, "window_s": 300, "environments": ["production"], "cooldown_s": 86400}
A tag rule's value may be a string or a list of accepted strings. min_count events of the group
within window_s seconds make it critical.

One run per group per fix attempt. While a run is active (and alive) more events are counted; after
it ended they are still counted, not turned into runs, until
  (a) the run's pull request was merged and an event arrives after the merge (a regression),
  (b) the cooldown (the trigger's `cooldown_s`, default 24 h) has passed since the run ended, or
  (c) a person starts a retry from the error page (`error_group_retry`).
A run that never got to work (stuck in the queue, its worker gone, or failed before its first model
call) is not an attempt: it never blocks its group.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from agentops.agents.models import Agent, Policy, Trigger, TriggerKind
from agentops.approvals.models import Approval, ApprovalStatus
from agentops.audit.services import audit_record
from agentops.runs.models import ACTIVE_STATUSES, Run, RunStatus
from agentops.runs.services import RunRefused, run_create, run_finish
from agentops.triggers.ingest import LEVELS, GroupSnapshot, events_in_window, group_snapshot
from agentops.triggers.models import ErrorEvent, ErrorGroup, ErrorProject, TriggerRefusal

log = logging.getLogger(__name__)

ALREADY_ACTIVE = "a run for this problem is already active"
DEFAULT_COOLDOWN_S = 24 * 3600
# A run that ended before doing any work (infrastructure): the next event may retry after this.
UNATTEMPTED_RETRY_S = 300


@dataclass
class Decision:
    trigger: Trigger
    started: Run | None
    refused: str | None
    matched: bool


def rule_mismatch(rules: dict[str, Any], *, project: ErrorProject, event: Any, group: ErrorGroup | None = None) -> str | None:
    """Why this event does not match the rules (None when it does). Frequency is checked separately.
    `event` is an ErrorEvent or a NormalizedEvent (level, environment, tags)."""
    wanted = rules.get("project")
    if wanted and wanted not in (project.slug, project.name):
        return "other project"
    min_level = str(rules.get("min_level", "error")).lower()
    if LEVELS.get(event.level, 0) < LEVELS.get(min_level, LEVELS["error"]):
        return f"level {event.level} below {min_level}"
    environments = rules.get("environments")
    if environments:
        accepted_envs = [str(e) for e in environments] if isinstance(environments, list) else [str(environments)]
        if event.environment not in accepted_envs:
            return f"environment {event.environment!r} not in {accepted_envs}"
    tag_rules = rules.get("tags") or {}
    if not isinstance(tag_rules, dict):
        return "tags rule is not an object"
    tags = event.tags if isinstance(event.tags, dict) else {}
    for key, accepted in tag_rules.items():
        accepted_values = [str(v) for v in accepted] if isinstance(accepted, list) else [str(accepted)]
        if tags.get(key) not in accepted_values:
            return f"tag {key}={tags.get(key)!r} not in {accepted_values}"
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
        "top_frames": [{k: f.get(k) for k in ("filename", "function", "lineno", "context_line")} for f in [f for f in frames if f.get("in_app")][-5:]],
    }


def _int_rule(rules: dict[str, Any], key: str, default: int, *, minimum: int = 0) -> int:
    """A numeric rule, read defensively: rules come from configuration, and a bad value must not
    stop ingest (the validator of `apply` and the forms refuses them before they are saved)."""
    value = rules.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return default
    return max(minimum, int(min(value, 10**9)))


def cooldown_of(rules: dict[str, Any] | None) -> int:
    return _int_rule(rules or {}, "cooldown_s", DEFAULT_COOLDOWN_S)


def stuck_queued_s() -> int:
    return int(getattr(settings, "AGENTOPS_ERROR_RUN_STUCK_QUEUED_S", 600))


def lease_grace_s() -> int:
    # Past its lease plus a few reaper periods, no worker will take a running run back.
    return int(getattr(settings, "AGENTOPS_ERROR_RUN_LEASE_GRACE_S", max(180, 3 * settings.AGENTOPS_LEASE_TTL_S)))


# --------------------------------------------------------------------------------------------------
# a group's state: what the next event does, and what the error page says


@dataclass
class GroupState:
    kind: str  # none | active | stuck | fix_merged | regressed | cooldown | cooldown_over | unattempted | retry_wait
    label: str
    starts_run: bool
    run_id: int | None = None
    until: datetime | None = None
    pr_number: int | None = None
    counted: int = 0  # events since the last run started, not turned into runs


def _run_is_stuck(snap: GroupSnapshot, now: datetime) -> str | None:
    """Why an active run is not alive (None when it is): liveness, not only status."""
    if snap.run_status == RunStatus.QUEUED:
        if snap.run_created_at and (now - snap.run_created_at).total_seconds() > stuck_queued_s():
            return f"queued for {int((now - snap.run_created_at).total_seconds())} s without a worker"
        return None
    if snap.run_status == RunStatus.RUNNING:
        lease = snap.run_lease_expires_at
        if lease is None or (now - lease).total_seconds() > lease_grace_s():
            return "running without a live worker (lease expired)"
        return None
    if snap.run_status == RunStatus.WAITING_APPROVAL:
        if snap.last_run_id is None:
            return "waiting for an approval that no longer exists or expired long ago"
        # Pending approvals expire (the reaper decides them); one long past its expiry means nothing will.
        deadline = now - timedelta(seconds=lease_grace_s())
        if not Approval.objects.filter(run_id=snap.last_run_id, status=ApprovalStatus.PENDING, expires_at__gt=deadline).exists():
            return "waiting for an approval that no longer exists or expired long ago"
        return None
    return None


def _unattempted(snap: GroupSnapshot) -> bool:
    """The run ended without working on the problem: infrastructure, not a fix attempt."""
    reason = (snap.run_status_reason or "").lower()
    if snap.run_status == RunStatus.FAILED and (snap.run_model_calls == 0 or reason.startswith(("infrastructure", "stuck"))):
        return True
    return False


def group_state(snap: GroupSnapshot, *, now: datetime | None = None, event_at: datetime | None = None, cooldown_s: int | None = None) -> GroupState:
    """What an event of this group received at `event_at` does. Pure except for a stuck check on
    runs waiting for approval."""
    now = now or timezone.now()
    event_at = event_at or now
    counted = max(0, snap.count - snap.count_at_last_run)
    if snap.last_run_id is None or snap.run_status is None:
        return GroupState("none", "no run yet", True, counted=counted)
    run = snap.last_run_id
    if snap.run_status in ACTIVE_STATUSES:
        why = _run_is_stuck(snap, now)
        if why:
            return GroupState("stuck", f"run #{run} is stuck ({why}); the next event starts another", True, run_id=run, counted=counted)
        prefix = "regressed after fix; " if snap.regressed_at else ""
        return GroupState("active", f"{prefix}run #{run} active", False, run_id=run, counted=counted)
    if snap.fix_merged_at is not None:
        if event_at > snap.fix_merged_at:
            return GroupState(
                "regressed",
                f"regressed after fix (PR #{snap.fix_pr_number} merged {snap.fix_merged_at:%Y-%m-%d %H:%M} UTC)",
                True,
                run_id=run,
                pr_number=snap.fix_pr_number,
                counted=counted,
            )
        return GroupState(
            "fix_merged", f"fix merged in PR #{snap.fix_pr_number}; will retry on regression", False, run_id=run, pr_number=snap.fix_pr_number, counted=counted
        )
    ended = snap.run_finished_at or snap.run_created_at or now
    if _unattempted(snap):
        until = ended + timedelta(seconds=UNATTEMPTED_RETRY_S)
        if now >= until:
            return GroupState("unattempted", f"run #{run} failed before working on the problem; the next event retries", True, run_id=run, counted=counted)
        return GroupState(
            "retry_wait",
            f"waiting: run #{run} failed before working on the problem; retry after {until:%Y-%m-%d %H:%M:%S} UTC",
            False,
            run_id=run,
            until=until,
            counted=counted,
        )
    until = ended + timedelta(seconds=DEFAULT_COOLDOWN_S if cooldown_s is None else cooldown_s)
    if now >= until:
        return GroupState(
            "cooldown_over",
            f"run #{run} ended {snap.run_status}; cooldown over, the next event starts a new attempt",
            True,
            run_id=run,
            until=until,
            counted=counted,
        )
    return GroupState(
        "cooldown", f"waiting: cooldown until {until:%Y-%m-%d %H:%M} UTC (run #{run} ended {snap.run_status})", False, run_id=run, until=until, counted=counted
    )


# --------------------------------------------------------------------------------------------------
# error triggers, cached: ingest reads them for every event, people change them rarely

_TRIGGER_TTL_S = 2.0
_trigger_cache: tuple[float, list[Trigger]] | None = None
_trigger_lock = threading.Lock()


def _invalidate_triggers(**_: Any) -> None:
    global _trigger_cache
    _trigger_cache = None


for _model in (Trigger, Agent, Policy):
    post_save.connect(_invalidate_triggers, sender=_model, dispatch_uid=f"error-trigger-cache-{_model.__name__}-save")
    post_delete.connect(_invalidate_triggers, sender=_model, dispatch_uid=f"error-trigger-cache-{_model.__name__}-delete")


def error_triggers() -> list[Trigger]:
    """The enabled error triggers, at most _TRIGGER_TTL_S old (a run is only started after re-reading
    its trigger, so a trigger disabled a moment ago never starts one)."""
    global _trigger_cache
    cached = _trigger_cache
    if cached is not None and time.monotonic() < cached[0]:
        return cached[1]
    with _trigger_lock:
        triggers = list(Trigger.objects.filter(kind=TriggerKind.ERROR, enabled=True).select_related("agent", "agent__policy").order_by("pk"))
        _trigger_cache = (time.monotonic() + _TRIGGER_TTL_S, triggers)
    return triggers


# --------------------------------------------------------------------------------------------------
# the decision


def _matching(triggers: list[Trigger], *, project: ErrorProject, event: Any, group_id: int) -> list[Trigger]:
    matched = []
    for trigger in triggers:
        rules = trigger.rules if isinstance(trigger.rules, dict) else {}
        if rule_mismatch(rules, project=project, event=event) is not None:
            continue
        matched.append(trigger)
    return matched


def _frequent_enough(trigger: Trigger, group_id: int) -> bool:
    rules = trigger.rules if isinstance(trigger.rules, dict) else {}
    min_count = _int_rule(rules, "min_count", 1, minimum=1)
    if min_count <= 1:
        return True
    window = _int_rule(rules, "window_s", 300, minimum=1)
    return events_in_window(ErrorGroup(pk=group_id), window_s=window) >= min_count


def _supersede_stuck(state: GroupState, *, group_id: int) -> None:
    """End a stuck run (a conditional UPDATE: a worker that holds it live is never overruled)."""
    if state.kind == "stuck" and state.run_id:
        ok = run_finish(
            run_id=state.run_id,
            status=RunStatus.FAILED,
            reason=f"stuck: {state.label}; superseded for error group {group_id}",
            from_statuses=ACTIVE_STATUSES,
            only_unheld=True,
        )
        if ok:
            log.warning("error group %s: run %s was stuck and is superseded", group_id, state.run_id)


def _start(trigger: Trigger, *, group: ErrorGroup, event: ErrorEvent, actor: Any = "system", regression: bool = False) -> Run:
    run = run_create(
        agent=trigger.agent,
        input=run_input_for(group, event),
        trigger=trigger,
        trigger_kind="error",
        context=run_context_for(group, event),
        fingerprint=group.run_fingerprint,
        actor=actor,
    )
    updates: dict[str, Any] = {"last_run": run, "count_at_last_run": F("count")}
    updates["regressed_at"] = timezone.now() if regression else None
    ErrorGroup.objects.filter(pk=group.pk).update(**updates)
    Trigger.objects.filter(pk=trigger.pk).update(last_fired_at=timezone.now())
    log.info("error group %s started run %s of %s", group.pk, run.pk, trigger.agent.slug)
    return run


def evaluate_error_triggers(
    *, group: ErrorGroup | None = None, event: ErrorEvent | None = None, stored: Any = None, project: ErrorProject | None = None
) -> list[Decision]:
    """Start at most one run for this event's group, or count the event. Call after it is committed.

    The common case (a group with an active or recently ended run) costs no query: the ingest
    statement returned the group's state. The partial unique index on the run fingerprint
    `error:<group id>` settles races between concurrent events.
    """
    if stored is not None:
        snap = stored.snapshot
        normalized = stored.normalized
        received_at = stored.received_at
        group_id = stored.group_id
        event_pk = stored.event_pk
    else:
        assert group is not None and event is not None
        snap = group_snapshot(group.pk)
        normalized = event
        received_at = event.received_at
        group_id = group.pk
        event_pk = event.pk
        project = project or group.project
    if snap is None or group_id is None:
        return []
    if project is None:
        project = ErrorProject.objects.get(pk=ErrorGroup.objects.values_list("project_id", flat=True).get(pk=group_id))
    triggers = _matching(error_triggers(), project=project, event=normalized, group_id=group_id)
    if not triggers:
        return []
    cooldown = None
    if snap.run_trigger_id is not None:
        owner = next((t for t in error_triggers() if t.pk == snap.run_trigger_id), None)
        cooldown = cooldown_of(owner.rules if owner else None)
    state = group_state(snap, event_at=received_at, cooldown_s=cooldown)
    if not state.starts_run:
        # Counted (the group's count moved in the ingest statement); nothing else to write.
        return [Decision(trigger=triggers[0], started=None, refused=state.label, matched=True)]
    return _start_for_group(triggers, group_id=group_id, state=state, event_pk=event_pk)


def _start_for_group(triggers: list[Trigger], *, group_id: int, state: GroupState, event_pk: int, actor: Any = "system") -> list[Decision]:
    _supersede_stuck(state, group_id=group_id)
    group = ErrorGroup.objects.select_related("project").get(pk=group_id)
    event = ErrorEvent.objects.get(pk=event_pk)
    decisions: list[Decision] = []
    for cached in triggers:
        # Re-read: a trigger disabled or changed since the cache was filled must not start a run.
        trigger = Trigger.objects.filter(pk=cached.pk, kind=TriggerKind.ERROR, enabled=True).select_related("agent", "agent__policy").first()
        if trigger is None or rule_mismatch(trigger.rules if isinstance(trigger.rules, dict) else {}, project=group.project, event=event) is not None:
            continue
        if not _frequent_enough(trigger, group_id):
            continue
        try:
            run = _start(trigger, group=group, event=event, actor=actor, regression=state.kind == "regressed")
        except RunRefused as exc:
            if str(exc) == ALREADY_ACTIVE:
                # Another event of this group won the race: this one is counted.
                decisions.append(Decision(trigger=trigger, started=None, refused=str(exc), matched=True))
                return decisions
            record_refusal(trigger=trigger, group=group, reason=str(exc))
            decisions.append(Decision(trigger=trigger, started=None, refused=str(exc), matched=True))
            continue
        decisions.append(Decision(trigger=trigger, started=run, refused=None, matched=True))
        return decisions  # one run per group
    return decisions


class RetryRefused(Exception):
    pass


def error_group_retry(*, group: ErrorGroup, actor: Any) -> Run:
    """A person's retry (the error page's button): a new fix attempt now, whatever the cooldown or a
    merged fix says. Refused while a live run works on the group. The one write path, audited."""
    snap = group_snapshot(group.pk)
    state = group_state(snap)
    if state.kind == "active":
        raise RetryRefused(f"run #{state.run_id} is still working on this problem")
    event = group.events.order_by("-received_at", "-id").first()
    if event is None:
        raise RetryRefused("this problem has no stored event to start from")
    triggers = [t for t in error_triggers() if t.pk == snap.run_trigger_id]
    triggers += _matching([t for t in error_triggers() if t.pk != snap.run_trigger_id], project=group.project, event=event, group_id=group.pk)
    if not triggers:
        raise RetryRefused("no enabled error trigger matches this problem")
    _supersede_stuck(state, group_id=group.pk)
    audit_record(actor=actor, action="error_group.retry", target=group, before={"state": state.kind, "last_run": snap.last_run_id})
    last_error = "no trigger could start a run"
    for cached in triggers:
        trigger = Trigger.objects.filter(pk=cached.pk, kind=TriggerKind.ERROR, enabled=True).select_related("agent", "agent__policy").first()
        if trigger is None:
            continue
        try:
            return _start(trigger, group=group, event=event, actor=actor)
        except RunRefused as exc:
            last_error = str(exc)
    raise RetryRefused(last_error)
