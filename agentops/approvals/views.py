"""Slack's interaction endpoint: clicks on the Approve / Reject buttons of an approval message."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from agentops.approvals.slack_interactions import slack_interaction


# Slack cannot send a CSRF token: the request's signature (checked first, over the raw body)
# authenticates it instead.
@csrf_exempt
@require_POST
def slack_interactions(request: HttpRequest) -> HttpResponse:
    answer = slack_interaction(
        body=request.body,
        timestamp=request.headers.get("X-Slack-Request-Timestamp"),
        signature=request.headers.get("X-Slack-Signature"),
    )
    return HttpResponse(answer.text, status=answer.status, content_type="text/plain; charset=utf-8")
