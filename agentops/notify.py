"""Tell people something needs them: email (Django's mail backends) and a Slack incoming webhook.

Best effort by design: a notification that cannot be delivered is logged, never allowed to fail the
action that caused it (an approval must stay pending even if Slack is down).
"""

from __future__ import annotations

import json
import logging
import urllib.request

from django.conf import settings
from django.core.mail import send_mail

from agentops.redaction import redact_text

log = logging.getLogger(__name__)


def notify(*, event: str, subject: str, text: str, path: str, webhook: bool = True) -> None:
    """`webhook=False`: not to the Slack incoming webhook (a decision is posted by the Slack app instead,
    with its buttons, when one is configured)."""
    # The text often quotes a model's words or a tool's output: it leaves the building, so it is
    # redacted here, once, for every channel.
    subject = redact_text(subject).replace("\n", " ").replace("\r", " ")
    text = redact_text(text)
    link = redact_text(f"{settings.SITE_URL}{path}")
    body = f"{text}\n\n{link}"
    if settings.AGENTOPS_NOTIFY_EMAILS:
        try:
            send_mail(f"[agentops] {subject}", body, settings.DEFAULT_FROM_EMAIL, settings.AGENTOPS_NOTIFY_EMAILS)
        except Exception:
            log.warning("email notification %s failed", event, exc_info=True)
    if webhook and settings.AGENTOPS_SLACK_WEBHOOK_URL:
        payload = json.dumps({"text": f"*{subject}*\n{text}\n<{link}|Open in agentops>"}).encode()
        request = urllib.request.Request(settings.AGENTOPS_SLACK_WEBHOOK_URL, data=payload, headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except Exception:
            log.warning("slack notification %s failed", event, exc_info=True)
