"""Slack's clicks on the buttons of a decision's message, applied through the same `approval_decide` as
the web.

- A click is trusted only if Slack signed it (the app's signing secret, slack-sdk's verifier) less
  than five minutes ago and its signature was never seen before (a captured request cannot be
  replayed inside those five minutes).
- The clicker is the agentops user an admin linked to that Slack user, judged by the web's one rule
  (`may_decide`: permission, approver group, separation of duties); an unlinked or unauthorised
  clicker is told so, privately, and nothing changes.
- A button is bound to the exact call it shows (`slack.call_binding`); a stale or changed message is
  refused, and a second click is told who already decided.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from agentops.approvals import slack
from agentops.approvals.models import Approval, ApprovalStatus, DecisionKind, SlackIdentity, SlackInteraction
from agentops.approvals.serializers import noun, options_of
from agentops.approvals.services import AlreadyDecided, CommentRequired, InvalidDecision, NotAllowed, approval_decide, can_decide
from agentops.approvals.slack import (
    ANSWER_ACTION,
    APPROVE_ACTION,
    COMMENT_ACTION,
    COMMENT_BLOCK,
    ID_PATTERN,
    MAX_COMMENT,
    REJECT_ACTION,
    call_binding,
    slack_sync_approval,
)
from agentops.redaction import redact_text

log = logging.getLogger(__name__)

MAX_AGE_S = 5 * 60  # slack-sdk's verifier refuses timestamps further than this from now, both ways
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_BUTTON_VALUE = re.compile(r"([0-9]{1,18}):([0-9a-f]{64})")
_ANSWER_VALUE = re.compile(r"([0-9]{1,18}):([0-9a-f]{64}):([0-9]{1,3})")


def _response_url_allowed(url: str) -> bool:
    """Only Slack's own hooks (or the configured API's origin, e.g. a Slack stand-in): a signed payload
    is Slack's, but a response_url is still never a way to make this server call anywhere else."""
    try:
        parts, api = urlsplit(url), urlsplit(slack.api_url())
    except ValueError:
        return False
    if parts.scheme == "https" and parts.hostname == "hooks.slack.com":
        return True
    return bool(parts.scheme in ("http", "https") and parts.netloc and (parts.scheme, parts.netloc) == (api.scheme, api.netloc))


def _tell(response_url: str, text: str) -> None:
    """A private answer to the person who clicked (Slack's ephemeral message). Never raises."""
    if not response_url or not _response_url_allowed(response_url):
        log.info("slack: no usable response_url to tell the clicker: %s", text)
        return
    try:
        WebhookClient(response_url, timeout=slack.TIMEOUT_S, retry_handlers=[]).send(text=redact_text(text), response_type="ephemeral", replace_original=False)
    except Exception:
        log.warning("slack: could not answer the clicker", exc_info=True)


# --- a click ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackAnswer:
    """The HTTP answer to Slack: 200 once the click is handled (refusals included: they are told to
    the clicker privately), 4xx when the request itself is not acceptable."""

    status: int
    text: str = ""


@dataclass(frozen=True)
class _Click:
    approval_id: int
    binding: str
    approve: bool
    team_id: str
    user_id: str
    comment: str
    response_url: str
    # An answer button: the index of the option it answers with.
    option: int | None = None


class _Malformed(Exception):
    pass


def slack_interaction(*, body: bytes, timestamp: str | None, signature: str | None) -> SlackAnswer:
    """Handle one request to the interaction endpoint: authenticate it, then apply the click."""
    secret = settings.AGENTOPS_SLACK_SIGNING_SECRET
    if not secret:
        return SlackAnswer(404, "Slack interactions are not configured")
    try:
        body.decode("utf-8")  # Slack sends UTF-8; the verifier would fail on anything else
    except UnicodeDecodeError:
        return SlackAnswer(400, "the body is not UTF-8")
    if not timestamp or not signature or not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
        return SlackAnswer(401, "missing or malformed Slack signature headers")
    if not SignatureVerifier(secret).is_valid(body=body, timestamp=timestamp, signature=signature):
        return SlackAnswer(401, "invalid signature, or a timestamp more than 5 minutes from now")
    if not _first_sighting(signature):
        return SlackAnswer(401, "this request was already received")
    try:
        click = _parse(body)
    except _Malformed as exc:
        return SlackAnswer(400, str(exc))
    _apply(click)
    return SlackAnswer(200)


def _first_sighting(signature: str) -> bool:
    now = timezone.now()
    # Older signatures can no longer pass the timestamp check: they need not be remembered.
    SlackInteraction.objects.filter(received_at__lt=now - timedelta(seconds=2 * MAX_AGE_S)).delete()
    try:
        with transaction.atomic():
            SlackInteraction.objects.create(signature=signature)
    except IntegrityError:
        return False
    return True


def _parse(body: bytes) -> _Click:
    try:
        form = parse_qs(body.decode("utf-8"), max_num_fields=20)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError) as exc:
        raise _Malformed(f"the body must be a form with a JSON payload ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise _Malformed("only block_actions payloads are handled")
    actions = payload.get("actions")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        raise _Malformed("a block_actions payload must carry exactly one action")
    action = actions[0]
    if action.get("action_id") not in (APPROVE_ACTION, REJECT_ACTION, ANSWER_ACTION):
        raise _Malformed("unknown action")
    pattern = _ANSWER_VALUE if action["action_id"] == ANSWER_ACTION else _BUTTON_VALUE
    match = pattern.fullmatch(str(action.get("value") or ""))
    if match is None:
        raise _Malformed("the button's value is not a decision and its call")
    user, team = payload.get("user"), payload.get("team")
    user_id = user.get("id") if isinstance(user, dict) else None
    team_id = (user.get("team_id") if isinstance(user, dict) else None) or (team.get("id") if isinstance(team, dict) else None)
    if not isinstance(user_id, str) or not isinstance(team_id, str) or not ID_PATTERN.fullmatch(user_id) or not ID_PATTERN.fullmatch(team_id):
        raise _Malformed("the payload does not name a Slack user and workspace")
    comment = _state_value(payload, COMMENT_BLOCK, COMMENT_ACTION)
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT or "\x00" in comment):
        raise _Malformed("the comment must be text of at most 3000 characters")
    response_url = payload.get("response_url")
    if response_url is not None and not isinstance(response_url, str):
        raise _Malformed("response_url must be a string")
    return _Click(
        approval_id=int(match.group(1)),
        binding=match.group(2),
        approve=action["action_id"] in (APPROVE_ACTION, ANSWER_ACTION),
        team_id=team_id,
        user_id=user_id,
        comment=(comment or "").strip(),
        response_url=response_url or "",
        option=int(match.group(3)) if action["action_id"] == ANSWER_ACTION else None,
    )


def _state_value(payload: dict[str, Any], block_id: str, action_id: str) -> Any:
    node: Any = payload
    for key in ("state", "values", block_id, action_id):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node.get("value") if isinstance(node, dict) else None


def _apply(click: _Click) -> None:
    identity = SlackIdentity.objects.select_related("user").filter(team_id=click.team_id, slack_user_id=click.user_id).first()
    if identity is None:
        log.info("slack: refused a click by unlinked Slack user %s/%s", click.team_id, click.user_id)
        _tell(click.response_url, "Your Slack account is not linked to an agentops user, so you cannot decide here. Ask an agentops admin to link it.")
        return
    user: AbstractBaseUser = identity.user
    who = user.get_username()
    if not can_decide(user):
        log.info("slack: refused a click by %s, who may not decide approvals", who)
        _tell(click.response_url, f"You ({who} in agentops) are not allowed to decide approvals. Nothing was changed.")
        return
    approval = Approval.objects.select_related("run", "agent").filter(pk=click.approval_id).first()
    if approval is None:
        _tell(click.response_url, "This decision no longer exists. Nothing was changed.")
        return
    if click.binding != call_binding(approval):
        log.warning("slack: refused %s's click on decision %s: it changed since the message was posted", who, approval.pk)
        _tell(click.response_url, "This message no longer matches the call waiting for approval (it was changed). Nothing was changed; decide in agentops.")
        return
    if approval.status != ApprovalStatus.PENDING:
        _tell(click.response_url, _already(approval))
        slack_sync_approval(approval_id=approval.pk)
        return
    answer = _click_answer(approval, click)
    if answer is None:
        _tell(click.response_url, "This button does not decide this kind of decision here. Nothing was changed; decide in agentops.")
        return
    try:
        approval_decide(approval=approval, actor=user, approve=click.approve, comment=click.comment, via="slack", answer=answer or None)
    except CommentRequired:
        _tell(click.response_url, "Type the reason in the comment box, then click Reject. Nothing was changed.")
    except (NotAllowed, InvalidDecision) as exc:
        _tell(click.response_url, f"{_sentence(str(exc))}. Nothing was changed.")
    except AlreadyDecided as exc:
        # Lost a race (another click, the web, expiry): the message is brought up to date as well.
        _tell(click.response_url, f"{_sentence(str(exc))}.")
        slack_sync_approval(approval_id=approval.pk)
    else:
        log.info("slack: %s %s decision %s", who, "approved" if click.approve else "rejected", approval.pk)


def _click_answer(approval: Approval, click: _Click) -> str | None:
    """The answer a click gives ("" for none), or None when its button is not one this kind offers."""
    if approval.kind == DecisionKind.QUESTION:
        options = options_of(approval)
        if click.option is None or click.option >= len(options):
            return None
        return options[click.option]
    if click.option is not None or approval.kind == DecisionKind.CONFIG_CHANGE:
        # A configuration change is decided in agentops by a second admin, never by a click.
        return None
    return ""


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _already(approval: Approval) -> str:
    if approval.status == ApprovalStatus.EXPIRED:
        return f"This {noun(approval)} expired without a decision."
    return f"This {noun(approval)} was already {approval.status} by {approval.decided_by_label}."
