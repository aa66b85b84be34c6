"""Decide from Slack: a decision is posted with buttons for its kind (an approval: Approve / Reject; a
budget extension: Extend by X / Stop; a loop escalation: Continue / Stop; a question: one button per
option, else a link; a configuration change: a link only, a second admin decides it in the web), and
its message always ends up saying what was decided and by whom, wherever it was decided (Slack, web,
API, CLI, expiry, kill switch). The clicks come back to `slack_interactions`.

- Posting and updating happen after commit (called by the decisions' one notification path) and
  never raise: a Slack outage cannot fail, undo or hold up a decision, which stays decidable on the web.
- A button is bound to the exact call it shows (a hash of the run, the tool call, the tool, its
  arguments and what is asked): if the decision changed since the message was posted, the click is
  refused. An answer button carries the index of its option: the answer is the stored option.

`describe_decision` is the one place that says what is asked; the rest only lays it out. This module
decides nothing, so that the write path of decisions can call it without importing itself back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from slack_sdk import WebClient

from agentops.approvals.models import Approval, ApprovalStatus, DecisionKind, SlackIdentity, SlackMessage
from agentops.approvals.serializers import asked, cap_amount, on_expiry_text, options_of, who_may_decide
from agentops.audit.services import audit_record
from agentops.redaction import redact_text

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
# Slack expects an answer to a click within 3 s; one bounded attempt, no retries, keeps every call
# to Slack (from a request, a worker or the reaper) short even when Slack does not answer.
TIMEOUT_S = 5
APPROVE_ACTION = "agentops_approve"
REJECT_ACTION = "agentops_reject"
ANSWER_ACTION = "agentops_answer"
COMMENT_BLOCK = "agentops_comment"
COMMENT_ACTION = "comment"
MAX_COMMENT = 3000  # a Slack plain_text_input holds at most 3000 characters

ID_PATTERN = re.compile(r"[A-Z0-9]{2,32}")  # a Slack team or user id
MAX_OPTION_BUTTONS = 20  # Slack's actions block holds at most 25 elements


# --- what is asked ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionSummary:
    """What a person is asked to decide and where it stands, redacted, as every channel shows it."""

    kind: str
    ref: int
    title: str
    facts: list[tuple[str, str]]
    reason: str
    action: str
    detail: str
    link: str
    expires_at: datetime
    status: str
    decided_by: str
    comment: str
    answer: str = ""
    options: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return self.status == ApprovalStatus.PENDING


def describe_decision(approval: Approval) -> DecisionSummary:
    request = approval.request if isinstance(approval.request, dict) else {}
    facts: list[tuple[str, str]] = (
        [("Run", f"#{approval.run_id}")] if approval.run_id is not None else [("Agent", approval.agent.name if approval.agent else "?")]
    )
    action, detail = approval.kind, ""
    if approval.kind == DecisionKind.APPROVAL:
        facts += [("Risk", approval.risk_class), ("Why a person", approval.why_needed or "policy")]
        action, detail = approval.tool, json.dumps(approval.arguments, indent=2, sort_keys=True, default=str)
    elif approval.kind == DecisionKind.BUDGET_EXTENSION:
        cap = request.get("cap", "?")
        facts += [("Cap", f"{cap}: {cap_amount(cap, request.get('limit', '?'))}"), ("Used", cap_amount(cap, request.get("used", "?")))]
        action, detail = (
            f"extend the {cap} cap by {cap_amount(cap, request.get('extend_by', '?'))}",
            json.dumps(approval.evidence.get("spend", {}) if isinstance(approval.evidence, dict) else {}, indent=2, sort_keys=True, default=str),
        )
    elif approval.kind == DecisionKind.QUESTION:
        options = options_of(approval)
        facts += [("Options", ", ".join(options) if options else "free text (answer in agentops)")]
        action, detail = "answer", str(request.get("question", ""))
    elif approval.kind == DecisionKind.LOOP_ESCALATION:
        facts += [("Pattern", str(request.get("pattern", "?")))]
        action, detail = "continue or stop", str(request.get("detail", ""))
    elif approval.kind == DecisionKind.CONFIG_CHANGE:
        facts += [("Asked by", approval.requested_by_label or "?")]
        action, detail = "apply this change", json.dumps(request.get("change", {}), indent=2, sort_keys=True, default=str)
    facts += [("Who decides", who_may_decide(approval)), ("If nobody decides", on_expiry_text(approval))]
    return DecisionSummary(
        kind=str(approval.kind),
        ref=approval.pk,
        title=redact_text(asked(approval)),
        facts=[(name, redact_text(value)) for name, value in facts],
        reason=redact_text(approval.reason or ""),
        action=redact_text(action),
        detail=redact_text(detail),
        link=redact_text(f"{settings.SITE_URL}/approvals/#approval-{approval.pk}"),
        expires_at=approval.expires_at,
        status=str(approval.status),
        decided_by=approval.decided_by_label,
        comment=redact_text(approval.comment or ""),
        answer=redact_text(approval.answer or ""),
        options=[redact_text(o) for o in options_of(approval)] if approval.kind == DecisionKind.QUESTION else [],
    )


def call_binding(approval: Approval) -> str:
    """The exact call a button decides: an edited or replaced call no longer matches."""
    call = {
        "approval": approval.pk,
        "kind": approval.kind,
        "run": approval.run_id,
        "tool_call_id": approval.tool_call_id,
        "tool": approval.tool,
        "arguments": approval.arguments,
        "request": approval.request,
    }
    return hashlib.sha256(json.dumps(call, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def status_line(summary: DecisionSummary) -> str:
    if summary.status == ApprovalStatus.APPROVED and summary.kind == DecisionKind.QUESTION:
        line = f"Answered by {summary.decided_by}: {summary.answer}"
    elif summary.status == ApprovalStatus.APPROVED and summary.kind == DecisionKind.BUDGET_EXTENSION:
        line = f"Extended by {summary.answer} by {summary.decided_by}"
    elif summary.status == ApprovalStatus.APPROVED and summary.kind == DecisionKind.LOOP_ESCALATION:
        line = f"Continued by {summary.decided_by}"
    elif summary.status == ApprovalStatus.REJECTED and summary.kind in (DecisionKind.BUDGET_EXTENSION, DecisionKind.LOOP_ESCALATION):
        line = f"Stopped by {summary.decided_by}"
    elif summary.status == ApprovalStatus.APPROVED:
        line = f"Approved by {summary.decided_by}"
    elif summary.status == ApprovalStatus.REJECTED:
        line = f"Rejected by {summary.decided_by}"
    elif summary.status == ApprovalStatus.EXPIRED:
        return "Expired without a decision"
    else:
        return "Waiting for a person"
    return f"{line}: {summary.comment}" if summary.comment else line


def _esc(text: str) -> str:
    # Slack's mrkdwn gives &, < and > a meaning (links, mentions): shown text must not use them.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    # After escaping (which lengthens text): Slack refuses a section over 3000 characters.
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message_blocks(summary: DecisionSummary, *, binding: str) -> tuple[str, list[dict[str, Any]]]:
    """The message's fallback text and its Block Kit blocks: the buttons only while it is pending."""
    fallback = _clip(f"{summary.title}: {status_line(summary)}", 3000)
    facts = "\n".join(f"*{_esc(name)}:* {_esc(value)}" for name, value in summary.facts)
    expires = int(summary.expires_at.timestamp())
    facts += f"\n*Expires:* <!date^{expires}^{{date_short_pretty}} {{time}}|{summary.expires_at.isoformat(timespec='seconds')}>"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(summary.title, 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(facts, 3000)}},
    ]
    if summary.reason:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "*The model's reason:*\n>" + _clip(_esc(summary.reason), 1000).replace("\n", "\n>")}}
        )
    label = "Call" if summary.kind == DecisionKind.APPROVAL else "Asked"
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{label}:* `{_esc(summary.action)}`\n```{_clip(_esc(summary.detail), 2500)}```"}})
    if summary.pending:
        blocks += _buttons(summary, value=f"{summary.ref}:{binding}")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(f"*{_esc(status_line(summary))}* · <{_esc(summary.link)}|Open in agentops>", 3000)}]}
    )
    return fallback, blocks


def _button(action_id: str, text: str, value: str, style: str = "", confirm: str = "") -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": _clip(text, 75)}, "value": value}
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = {
            "title": {"type": "plain_text", "text": _clip(f"{text}?", 100)},
            "text": {"type": "plain_text", "text": _clip(confirm, 300)},
            "confirm": {"type": "plain_text", "text": _clip(text, 30)},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }
    return button


def _buttons(summary: DecisionSummary, *, value: str) -> list[dict[str, Any]]:
    """The buttons of a pending decision, by kind. Without buttons (a configuration change, a
    free-text question) the link at the bottom is the way to decide."""
    comment = {
        "type": "input",
        "block_id": COMMENT_BLOCK,
        "optional": True,
        "label": {"type": "plain_text", "text": "Comment (required to reject)" if summary.kind == DecisionKind.APPROVAL else "Comment (optional)"},
        "element": {"type": "plain_text_input", "action_id": COMMENT_ACTION, "multiline": True, "max_length": MAX_COMMENT},
    }
    elements: list[dict[str, Any]] = []
    if summary.kind == DecisionKind.APPROVAL:
        elements = [
            _button(APPROVE_ACTION, "Approve", value, "primary", f"{summary.action} runs as shown, once."),
            _button(REJECT_ACTION, "Reject", value, "danger"),
        ]
    elif summary.kind == DecisionKind.BUDGET_EXTENSION:
        elements = [
            _button(APPROVE_ACTION, summary.action[:1].upper() + summary.action[1:], value, "primary", f"The run goes on with this: {summary.action}."),
            _button(REJECT_ACTION, "Stop", value, "danger"),
        ]
    elif summary.kind == DecisionKind.LOOP_ESCALATION:
        elements = [_button(APPROVE_ACTION, "Continue", value, "primary"), _button(REJECT_ACTION, "Stop", value, "danger")]
    elif summary.kind == DecisionKind.QUESTION and summary.options:
        elements = [_button(ANSWER_ACTION, option, f"{value}:{i}") for i, option in enumerate(summary.options[:MAX_OPTION_BUTTONS])]
        return [{"type": "actions", "block_id": f"agentops_decide_{summary.ref}", "elements": elements}]
    if not elements:
        return []
    return [comment, {"type": "actions", "block_id": f"agentops_decide_{summary.ref}", "elements": elements}]


# --- talking to Slack -------------------------------------------------------------------------


def api_url() -> str:
    return settings.AGENTOPS_SLACK_API_URL or DEFAULT_API_URL


def slack_enabled() -> bool:
    return bool(settings.AGENTOPS_SLACK_BOT_TOKEN and settings.AGENTOPS_SLACK_CHANNEL)


def _client() -> WebClient:
    return WebClient(token=settings.AGENTOPS_SLACK_BOT_TOKEN, base_url=api_url(), timeout=TIMEOUT_S, retry_handlers=[])


def slack_post_approval(*, approval_id: int) -> None:
    """Ask in Slack. Never raises: a failure is logged and the approval stays decidable on the web."""
    if not slack_enabled():
        return
    try:
        approval = Approval.objects.select_related("run", "agent").get(pk=approval_id)
        if approval.status != ApprovalStatus.PENDING or SlackMessage.objects.filter(approval=approval).exists():
            return
        text, blocks = message_blocks(describe_decision(approval), binding=call_binding(approval))
        response = _client().chat_postMessage(channel=settings.AGENTOPS_SLACK_CHANNEL or "", text=text, blocks=blocks)
        SlackMessage.objects.create(approval=approval, channel=str(response["channel"]), ts=str(response["ts"]))
    except Exception:
        log.warning("slack: could not post approval %s; it stays decidable on the web", approval_id, exc_info=True)
        return
    # Decided while it was being posted: the message must not offer buttons for a decided call.
    slack_sync_approval(approval_id=approval_id)


def slack_sync_approval(*, approval_id: int) -> None:
    """Make the approval's Slack message (if any) show its current state. Never raises."""
    if not settings.AGENTOPS_SLACK_BOT_TOKEN:
        return
    try:
        message = SlackMessage.objects.select_related("approval__run", "approval__agent").filter(approval_id=approval_id).first()
        if message is None or message.shown_status == message.approval.status:
            return
        approval = message.approval
        text, blocks = message_blocks(describe_decision(approval), binding=call_binding(approval))
        _client().chat_update(channel=message.channel, ts=message.ts, text=text, blocks=blocks)
        SlackMessage.objects.filter(pk=message.pk).update(shown_status=approval.status, updated_at=timezone.now())
    except Exception:
        log.warning("slack: could not update the message of approval %s", approval_id, exc_info=True)


def slack_sync_run(*, run_id: int) -> None:
    """Sync the messages of a run's approvals decided in bulk (a run ended, the kill switch). Never raises."""
    if not settings.AGENTOPS_SLACK_BOT_TOKEN:
        return
    try:
        stale = list(SlackMessage.objects.filter(approval__run_id=run_id).exclude(shown_status=F("approval__status")).values_list("approval_id", flat=True))
    except Exception:
        log.warning("slack: could not find the messages of run %s", run_id, exc_info=True)
        return
    for approval_id in stale:
        slack_sync_approval(approval_id=approval_id)


# --- linking people ---------------------------------------------------------------------------


class SlackLinkError(ValueError):
    pass


def slack_identity_link(*, user: AbstractBaseUser, team_id: str, slack_user_id: str, actor: AbstractBaseUser | str) -> SlackIdentity:
    """Link a Slack user to an agentops user (replacing the user's previous link), audited."""
    team_id, slack_user_id = team_id.strip().upper(), slack_user_id.strip().upper()
    if not ID_PATTERN.fullmatch(team_id) or not ID_PATTERN.fullmatch(slack_user_id):
        raise SlackLinkError("Slack team and user ids are letters and digits, like T0123ABCD and U0123ABCD")
    taken = SlackIdentity.objects.filter(team_id=team_id, slack_user_id=slack_user_id).exclude(user_id=user.pk).select_related("user").first()
    if taken is not None:
        raise SlackLinkError(f"{team_id}/{slack_user_id} is already linked to {taken.user.get_username()}; unlink it first")
    with transaction.atomic():
        before = SlackIdentity.objects.filter(user_id=user.pk).values("team_id", "slack_user_id").first()
        try:
            identity, _ = SlackIdentity.objects.update_or_create(
                user_id=user.pk,
                defaults={
                    "team_id": team_id,
                    "slack_user_id": slack_user_id,
                    "linked_by_label": str(actor if isinstance(actor, str) else actor.get_username()),
                },
            )
        except IntegrityError:
            raise SlackLinkError(f"{team_id}/{slack_user_id} was just linked to someone else") from None
        audit_record(actor=actor, action="slack.link", target=user, before=before, after={"team_id": team_id, "slack_user_id": slack_user_id})
    return identity


def slack_identity_unlink(*, user: AbstractBaseUser, actor: AbstractBaseUser | str) -> bool:
    with transaction.atomic():
        before = SlackIdentity.objects.filter(user_id=user.pk).values("team_id", "slack_user_id").first()
        if before is None:
            return False
        SlackIdentity.objects.filter(user_id=user.pk).delete()
        audit_record(actor=actor, action="slack.unlink", target=user, before=before)
    return True
