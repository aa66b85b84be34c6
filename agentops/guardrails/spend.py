"""Model spend: a call's worst case is reserved before it is sent and settled with its step.

The reservation is what lets the cost cap hold for a call whose price is known only afterwards:
``max_tokens`` is lowered until the call cannot pass the run's cost cap, and the estimate is held
on the run row (and charged to the day) while the call is in flight. A worker that takes over a run
whose reservation was never settled charges it as spent (the call may have been answered and billed).

``price_call`` prices the worst case, ``hold`` reserves it on the day and the run row, ``settle_daily``
charges the day what the call really cost; the model-call step moves the run's counters
(``Reservation.release``, or ``Reservation.charged`` when nothing says what the call cost).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction

from agentops.guardrails.base import StopRun
from agentops.guardrails.daily import daily_add, daily_consume
from agentops.llm.base import count_tokens_estimate
from agentops.llm.prices import UnknownModelPrice, cost_of
from agentops.runs.models import Run, RunOutcome, RunStatus


@dataclass
class Reservation:
    """The worst case of one model call, held on the run row (and the day) while it is in flight."""

    max_tokens: int
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal("0")
    daily: bool = False  # the day was charged the estimate

    def release(self) -> dict[str, Any]:
        """Counter moves that clear the run's reservation (applied with the step that settles it)."""
        if not (self.cost_usd or self.input_tokens or self.output_tokens):
            return {}
        return {"reserved_cost_usd": -self.cost_usd, "reserved_input_tokens": -self.input_tokens, "reserved_output_tokens": -self.output_tokens}

    def charged(self) -> dict[str, Any]:
        """Counter moves that charge the reservation as spent: a call abandoned in flight, or one a
        dead worker never recorded, may have been answered and billed."""
        return {
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "model_calls": 1,
            "iterations": 1,
            **self.release(),
        }

    @classmethod
    def unsettled(cls, run: Run) -> Reservation | None:
        """The reservation a run row still holds (its worker died with the call in flight), if any."""
        if not (run.reserved_cost_usd or run.reserved_input_tokens or run.reserved_output_tokens):
            return None
        return cls(
            max_tokens=run.reserved_output_tokens,
            input_tokens=run.reserved_input_tokens,
            output_tokens=run.reserved_output_tokens,
            cost_usd=run.reserved_cost_usd,
            daily=True,  # the day was charged when it was reserved
        )


def price_call(
    *, model: str, messages: list[dict[str, Any]], system: str, tools: list[dict[str, Any]], max_tokens: int, cap_usd: Decimal, spent_usd: Decimal
) -> Reservation:
    """The worst case of the next call, with ``max_tokens`` lowered so that it cannot pass ``cap_usd``.
    Raises StopRun when the model has no known price (fail closed) or not one token is affordable."""
    input_tokens = count_tokens_estimate(messages, system) + len(json.dumps(tools)) // 4
    try:
        input_cost = cost_of(model, input_tokens, 0)
        per_million_out = cost_of(model, 0, 1_000_000)
    except UnknownModelPrice:
        raise StopRun(
            RunStatus.FAILED, f"unknown_price: no price known for model {model}: refusing to spend", guard="price", outcome=RunOutcome.ERROR
        ) from None
    left = cap_usd - spent_usd - input_cost
    affordable = int(left * 1_000_000 / per_million_out) if per_million_out > 0 else max_tokens
    if affordable < 1:
        raise StopRun(
            RunStatus.BUDGET_EXCEEDED,
            f"cost_usd cap reached: the next model call could pass {cap_usd}",
            guard="budget",
            payload={"measure": "cost_usd", "value": str(spent_usd), "cap": str(cap_usd)},
        )
    reserved = min(max_tokens, affordable)
    return Reservation(max_tokens=reserved, input_tokens=input_tokens, output_tokens=reserved, cost_usd=cost_of(model, input_tokens, reserved))


def daily_delta(reservation: Reservation, actual: Decimal) -> Decimal:
    """What the day still has to be charged (or refunded) once the call's true cost is known."""
    return actual - reservation.cost_usd if reservation.daily else actual


def hold(reservation: Reservation, *, run_id: int, lease_owner: str, agent_id: int, daily_cap: Decimal | None) -> bool:
    """Reserve the call's worst case on the day (within its cost cap) and on the run row, in one
    transaction, before the call is sent. Raises StopRun when the daily cost cap is reached. False
    when ``lease_owner`` no longer holds the run: then nothing is held."""
    if daily_cap is None and not reservation.cost_usd:
        return True
    with transaction.atomic():
        if not daily_consume(agent_id=agent_id, key="cost_usd", amount=reservation.cost_usd, cap=daily_cap):
            raise StopRun(RunStatus.BUDGET_EXCEEDED, f"daily cost cap ${daily_cap} reached", guard="daily_cost_cap")
        if reservation.cost_usd and not Run.objects.filter(pk=run_id, lease_owner=lease_owner).update(
            reserved_cost_usd=reservation.cost_usd,
            reserved_input_tokens=reservation.input_tokens,
            reserved_output_tokens=reservation.output_tokens,
        ):
            transaction.set_rollback(True)  # the day is not charged for a call this worker will not make
            return False
    reservation.daily = True
    return True


def settle_daily(reservation: Reservation, *, agent_id: int, actual: Decimal) -> None:
    """Charge (or refund) the day the difference between the call's true cost and what was held."""
    delta = daily_delta(reservation, actual)
    if delta:
        daily_add(agent_id=agent_id, key="cost_usd", amount=delta)
