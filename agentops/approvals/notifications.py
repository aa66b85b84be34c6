"""The one notification path of decisions, called explicitly by the write path once committed (never
from a signal): a new decision is emailed (a deep link) and posted to Slack with its buttons; a
decided one has its Slack message brought up to date, wherever it was decided.

Never raises: a notification that fails is logged; the decision stays decidable on the web."""

from __future__ import annotations

import logging

from agentops.approvals.models import Approval, ApprovalStatus
from agentops.approvals.serializers import asked
from agentops.approvals.slack import slack_enabled, slack_post_approval, slack_sync_approval, slack_sync_run
from agentops.notify import notify

log = logging.getLogger(__name__)


def decision_link(approval: Approval) -> str:
    return f"/approvals/#approval-{approval.pk}"


def decisions_notify(*, approval_id: int | None = None, run_id: int | None = None) -> None:
    """`approval_id`: one decision asked or decided. `run_id`: a run's decisions decided in bulk."""
    try:
        if approval_id is not None:
            _one(approval_id)
        if run_id is not None:
            slack_sync_run(run_id=run_id)
    except Exception:
        log.warning("could not notify of decision %s / run %s", approval_id, run_id, exc_info=True)


def _one(approval_id: int) -> None:
    approval = Approval.objects.select_related("agent", "run").filter(pk=approval_id).first()
    if approval is None:
        return
    if approval.status == ApprovalStatus.PENDING:
        notify(
            event=f"decision.{approval.kind}",
            subject=asked(approval),
            text=f"{'Run ' + str(approval.run_id) + ' waits for a person' if approval.run_id else 'Waiting for a second admin'}: {approval.why_needed or approval.kind}.",
            path=decision_link(approval),
            # The Slack app posts it with its buttons; the incoming webhook would say it twice.
            webhook=not slack_enabled(),
        )
        slack_post_approval(approval_id=approval.pk)
    else:
        slack_sync_approval(approval_id=approval.pk)
