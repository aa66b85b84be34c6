"""Schedule triggers fire once per cron slot, however often the scheduler runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agentops.agents.models import Trigger, TriggerKind
from agentops.guardrails.killswitch import kill_switch_engage
from agentops.runs.models import Run, RunStatus
from agentops.triggers.models import TriggerRefusal
from agentops.triggers.schedules import cron_slot, fire_due_schedules
from tests.triggers.factories import make_agent

pytestmark = pytest.mark.django_db

NIGHT = datetime(2025, 3, 4, 3, 0, 30, tzinfo=UTC)


@pytest.fixture
def nightly():
    agent = make_agent("dependency-agent")
    return Trigger.objects.create(agent=agent, name="nightly", kind=TriggerKind.SCHEDULE, rules={"cron": "0 3 * * *", "input": "Update dependencies."})


def test_cron_slot_is_the_latest_time_at_or_before_now():
    assert cron_slot("0 3 * * *", NIGHT) == datetime(2025, 3, 4, 3, 0, tzinfo=UTC)
    assert cron_slot("0 3 * * *", datetime(2025, 3, 4, 3, 0, tzinfo=UTC)) == datetime(2025, 3, 4, 3, 0, tzinfo=UTC)
    assert cron_slot("0 3 * * *", datetime(2025, 3, 4, 2, 59, tzinfo=UTC)) == datetime(2025, 3, 3, 3, 0, tzinfo=UTC)


def test_a_due_schedule_starts_one_run_per_slot(nightly):
    runs = fire_due_schedules(NIGHT)
    assert [r.input for r in runs] == ["Update dependencies."]
    assert runs[0].trigger_kind == "schedule" and runs[0].trigger == nightly
    Run.objects.update(status=RunStatus.SUCCEEDED)
    assert fire_due_schedules(NIGHT + timedelta(seconds=30)) == []
    assert fire_due_schedules(NIGHT + timedelta(minutes=5)) == []
    nightly.refresh_from_db()
    assert nightly.last_fired_at == datetime(2025, 3, 4, 3, 0, tzinfo=UTC)
    assert len(fire_due_schedules(NIGHT + timedelta(days=1))) == 1
    assert Run.objects.count() == 2


def test_a_slot_missed_long_ago_is_skipped_not_caught_up(nightly):
    assert fire_due_schedules(NIGHT + timedelta(hours=5)) == []
    nightly.refresh_from_db()
    assert nightly.last_fired_at == datetime(2025, 3, 4, 3, 0, tzinfo=UTC)
    assert Run.objects.count() == 0


def test_a_disabled_or_invalid_schedule_does_nothing(nightly):
    nightly.enabled = False
    nightly.save()
    Trigger.objects.create(agent=nightly.agent, name="broken", kind=TriggerKind.SCHEDULE, rules={"cron": "every night"})
    assert fire_due_schedules(NIGHT) == []


def test_a_refused_schedule_is_recorded_and_the_slot_consumed(nightly):
    kill_switch_engage(actor="tester", reason="maintenance")
    assert fire_due_schedules(NIGHT) == []
    assert TriggerRefusal.objects.get(trigger=nightly).reason == "kill switch engaged"
    assert fire_due_schedules(NIGHT + timedelta(seconds=10)) == []
    assert TriggerRefusal.objects.get(trigger=nightly).count == 1


def test_a_run_still_active_from_the_last_slot_blocks_the_next(nightly):
    assert len(fire_due_schedules(NIGHT)) == 1
    assert fire_due_schedules(NIGHT + timedelta(days=1)) == []
    assert TriggerRefusal.objects.get(trigger=nightly).reason == "a run for this problem is already active"
