"""Daily aggregate caps, atomic across concurrent runs.

Every consumption is a single conditional UPDATE (`value + n <= cap`): the database decides, so
twenty runs racing for the last unit get exactly one success between them.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from agentops.guardrails.models import DailyUsage


def today() -> date:
    return timezone.now().date()


def _ensure_row(agent_id: int, key: str, day: date) -> None:
    if DailyUsage.objects.filter(agent_id=agent_id, day=day, key=key).exists():
        return
    try:
        with transaction.atomic():
            DailyUsage.objects.create(agent_id=agent_id, day=day, key=key, value=Decimal("0"))
    except IntegrityError:
        pass  # another run created it first


def daily_consume(*, agent_id: int, key: str, amount: Decimal | int, cap: Decimal | int | None) -> bool:
    """Add amount to today's counter if that keeps it within cap. False (nothing added) if not."""
    day = today()
    amount = Decimal(amount)
    _ensure_row(agent_id, key, day)
    rows = DailyUsage.objects.filter(agent_id=agent_id, day=day, key=key)
    if cap is not None:
        rows = rows.filter(value__lte=Decimal(cap) - amount)
    return rows.update(value=F("value") + amount) == 1


def daily_add(*, agent_id: int, key: str, amount: Decimal | int) -> None:
    """Record usage that already happened (e.g. the true cost of a model call), cap or not."""
    daily_consume(agent_id=agent_id, key=key, amount=amount, cap=None)


def daily_value(*, agent_id: int, key: str, day: date | None = None) -> Decimal:
    row = DailyUsage.objects.filter(agent_id=agent_id, day=day or today(), key=key).values_list("value", flat=True).first()
    return row if row is not None else Decimal("0")


class DailyActionCaps:
    """An agent's daily caps per action class (``read``/``write``/``irreversible``) and per tool."""

    def __init__(self, agent_id: int, caps: dict[str, int] | None) -> None:
        self.agent_id = agent_id
        self.caps = caps or {}

    def consume(self, risk_class: str, tool_name: str) -> tuple[str, int] | None:
        """Spend one of today's allowance for each cap that applies; the (key, cap) reached, if any."""
        for key in (f"action:{risk_class}", f"tool:{tool_name}"):
            short = key.split(":", 1)[1] if key.startswith("action:") else key
            cap = self.caps.get(short, self.caps.get(key))
            if cap is None:
                continue
            if not daily_consume(agent_id=self.agent_id, key=key, amount=1, cap=cap):
                return key, cap
        return None
