"""Error ingest endpoints: Sentry-compatible (envelope and legacy store) and a signed JSON webhook.

Machines call these, not browsers: CSRF does not apply, authentication is the DSN key or the HMAC
signature, and every refusal is a 4xx JSON body saying why.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from agentops.triggers.ingest import (
    IngestError,
    NormalizedEvent,
    decompress,
    normalize_event,
    parse_envelope,
    parse_json,
    read_body,
    sqlite_lock,
    sentry_key_of,
    store_events,
)
from agentops.triggers.models import ErrorProject
from agentops.triggers.rules import evaluate_error_triggers

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Agentops-Signature"


def _error(exc: IngestError) -> JsonResponse:
    return JsonResponse({"error": exc.message}, status=exc.status)


def _sentry_project(request: HttpRequest, project_id: str) -> ErrorProject:
    project = None
    if project_id.isdigit():
        project = ErrorProject.objects.filter(pk=int(project_id)).first()
    if project is None:
        project = ErrorProject.objects.filter(slug=project_id).first()
    key = sentry_key_of(request)
    if not key:
        raise IngestError(401, "missing sentry_key (X-Sentry-Auth header or ?sentry_key=)")
    # Same answer for an unknown project and a wrong key: no probing for project ids.
    if project is None or not hmac.compare_digest(key.encode(), project.public_key.encode()):
        raise IngestError(403, "invalid sentry_key for this project")
    return project


def _ingest(request: HttpRequest, project: ErrorProject, events: list[NormalizedEvent], source: str) -> list[str]:
    stored = store_events(project=project, events=events, source=source)
    for item in stored:
        if item.duplicate or item.event is None:
            continue
        try:
            evaluate_error_triggers(group=item.group, event=item.event)
        except Exception:
            # The event is stored; a trigger failure must not make the client resend it.
            log.exception("evaluating error triggers for group %s failed", item.group.pk)
    return [e.event_id for e in events]


def _handle(fn: Callable[[], JsonResponse]) -> JsonResponse:
    try:
        if connection.vendor == "sqlite":
            # SQLite has one writer, and a shared-cache database fails instead of waiting: requests of
            # this process take turns (PostgreSQL runs them concurrently, arbitrated by its indexes).
            with sqlite_lock:
                return fn()
        return fn()
    except IngestError as exc:
        return _error(exc)


@csrf_exempt
@require_POST
def sentry_envelope(request: HttpRequest, project_id: str) -> JsonResponse:
    def go() -> JsonResponse:
        project = _sentry_project(request, project_id)
        body = decompress(read_body(request), request.META.get("HTTP_CONTENT_ENCODING", ""))
        events = [normalize_event(e) for e in parse_envelope(body)]
        ids = _ingest(request, project, events, "sentry")
        return JsonResponse({"id": ids[0] if ids else None})

    return _handle(go)


@csrf_exempt
@require_POST
def sentry_store(request: HttpRequest, project_id: str) -> JsonResponse:
    def go() -> JsonResponse:
        project = _sentry_project(request, project_id)
        body = decompress(read_body(request), request.META.get("HTTP_CONTENT_ENCODING", ""))
        event = normalize_event(parse_json(body, "event"))
        ids = _ingest(request, project, [event], "sentry")
        return JsonResponse({"id": ids[0]})

    return _handle(go)


def webhook_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@csrf_exempt
@require_POST
def error_webhook(request: HttpRequest, project_slug: str) -> JsonResponse:
    """Generic JSON webhook: one event object, or {"events": [...]}, signed over the raw body."""

    def go() -> JsonResponse:
        project = ErrorProject.objects.filter(slug=project_slug).first()
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            raise IngestError(401, f"missing {SIGNATURE_HEADER} header (sha256=<hex HMAC of the body>)")
        raw = read_body(request)
        if project is None or not hmac.compare_digest(signature.strip().encode(), webhook_signature(project.webhook_secret, raw).encode()):
            raise IngestError(403, "invalid signature")
        body = decompress(raw, request.META.get("HTTP_CONTENT_ENCODING", ""))
        payload: Any = parse_json(body)
        items = payload.get("events") if isinstance(payload, dict) and "events" in payload else [payload]
        if not isinstance(items, list) or not items:
            raise IngestError(400, "events must be a non-empty list")
        if len(items) > 100:
            raise IngestError(413, "at most 100 events per request")
        events = [normalize_event(e) for e in items]
        ids = _ingest(request, project, events, "webhook")
        return JsonResponse({"ids": ids}, status=202)

    return _handle(go)
