"""Error ingest endpoints: Sentry-compatible (envelope and legacy store) and a signed JSON webhook.

Machines call these, not browsers: CSRF does not apply, authentication is the DSN key or the HMAC
signature, and every refusal is a 4xx JSON body saying why.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, DataError, connection
from django.db.models.signals import post_delete, post_save
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
    sentry_key_of,
    sqlite_lock,
    store_events,
)
from agentops.triggers.models import ErrorProject
from agentops.triggers.rules import evaluate_error_triggers

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Agentops-Signature"


def _error(exc: IngestError) -> JsonResponse:
    return JsonResponse({"error": exc.message}, status=exc.status)


# A DSN's project is its numeric id (ASCII digits that fit a bigint) or its slug; anything else
# (`²`, NUL, 5,000 digits) is refused before it reaches int() or the database.
_PROJECT_PK = re.compile(r"[0-9]{1,18}", re.ASCII)
_PROJECT_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}", re.ASCII)


# Projects by DSN id, kept PROJECT_CACHE_S: every event names its project, projects change rarely.
# A change in this process clears the cache at once; a key rotated by another process is honoured
# within PROJECT_CACHE_S.
PROJECT_CACHE_S = 10.0
_projects: dict[str, tuple[float, ErrorProject | None]] = {}


def _clear_projects(**_: Any) -> None:
    _projects.clear()


post_save.connect(_clear_projects, sender=ErrorProject, dispatch_uid="ingest-project-cache-save")
post_delete.connect(_clear_projects, sender=ErrorProject, dispatch_uid="ingest-project-cache-delete")


def _cached_project(project_id: str) -> ErrorProject | None:
    now = time.monotonic()
    hit = _projects.get(project_id)
    if hit is not None and now < hit[0]:
        return hit[1]
    project = None
    if _PROJECT_PK.fullmatch(project_id):
        project = ErrorProject.objects.filter(pk=int(project_id)).first()
    if project is None:
        project = ErrorProject.objects.filter(slug=project_id).first()
    if project is not None:
        if len(_projects) > 1000:
            _projects.clear()
        _projects[project_id] = (now + PROJECT_CACHE_S, project)
    return project


def _sentry_project(request: HttpRequest, project_id: str) -> ErrorProject:
    all_digits = project_id.isascii() and project_id.isdigit()
    if not (_PROJECT_PK.fullmatch(project_id) or (_PROJECT_SLUG.fullmatch(project_id) and not all_digits)):
        raise IngestError(400, "invalid project id in the DSN path (digits or a slug)")
    key = sentry_key_of(request)
    if not key:
        raise IngestError(401, "missing sentry_key (X-Sentry-Auth header or ?sentry_key=)")
    project = _cached_project(project_id)
    # Same answer for an unknown project and a wrong key: no probing for project ids.
    if project is None or not hmac.compare_digest(key.encode(), project.public_key.encode()):
        raise IngestError(403, "invalid sentry_key for this project")
    return project


# How events are written: store_events, or the ASGI fast path's batch writer (one commit for the
# events of many concurrent requests), which sets it for the request it serves.
STORE: contextvars.ContextVar[Callable[..., list[Any]]] = contextvars.ContextVar("ingest_store", default=store_events)


def _ingest(request: HttpRequest, project: ErrorProject, events: list[NormalizedEvent], source: str) -> list[str]:
    stored = STORE.get()(project=project, events=events, source=source)
    for item in stored:
        if item.duplicate or item.event_pk is None:
            continue
        try:
            evaluate_error_triggers(stored=item, project=project)
        except Exception:
            # The event is stored; a trigger failure must not make the client resend it.
            log.exception("evaluating error triggers for group %s failed", item.group_id)
    return [e.event_id for e in events]


class RetryableResponse(JsonResponse):
    """A failure after which nothing was committed: the request may be served again as it is
    (the ASGI fast path, agentops/triggers/asgi.py, reads `retryable`)."""

    retryable = True


def handle(fn: Callable[[], JsonResponse]) -> JsonResponse:
    """Run an ingest handler: a refusal is its 4xx, a database outage a 503, never a 500."""
    try:
        if connection.vendor == "sqlite":
            # SQLite has one writer, and a shared-cache database fails instead of waiting: requests of
            # this process take turns (PostgreSQL runs them concurrently, arbitrated by its indexes).
            with sqlite_lock:
                return fn()
        return fn()
    except IngestError as exc:
        return _error(exc)
    except DataError as exc:
        # Defence in depth: a value the parsing layer let through but the database refuses. The
        # statement failed inside its transaction, so nothing was written.
        log.warning("ingest refused a value the database cannot store: %s", exc)
        return JsonResponse({"error": "the event holds a value that cannot be stored"}, status=400)
    except DatabaseError:
        log.exception("ingest could not reach the database")
        # Nothing was committed (the store is one statement or one transaction, and a failure after
        # it is logged, not raised): the request may be served again as it is.
        response = RetryableResponse({"error": "the error store is unavailable; retry later"}, status=503)
        response["Retry-After"] = "5"
        return response


def envelope_response(request: HttpRequest, project_id: str) -> JsonResponse:
    project = _sentry_project(request, project_id)
    body = decompress(read_body(request), request.META.get("HTTP_CONTENT_ENCODING", ""))
    events = [normalize_event(e) for e in parse_envelope(body)]
    ids = _ingest(request, project, events, "sentry")
    return JsonResponse({"id": ids[0] if ids else None})


def store_response(request: HttpRequest, project_id: str) -> JsonResponse:
    project = _sentry_project(request, project_id)
    body = decompress(read_body(request), request.META.get("HTTP_CONTENT_ENCODING", ""))
    event = normalize_event(parse_json(body, "event"))
    ids = _ingest(request, project, [event], "sentry")
    return JsonResponse({"id": ids[0]})


def webhook_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_response(request: HttpRequest, project_slug: str) -> JsonResponse:
    """Generic JSON webhook: one event object, or {"events": [...]}, signed over the raw body."""
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


# The Django views. Under daphne, agentops.triggers.asgi serves the same three functions ahead of
# Django's request stack (see there why); both paths go through handle.


@csrf_exempt
@require_POST
def sentry_envelope(request: HttpRequest, project_id: str) -> JsonResponse:
    return handle(lambda: envelope_response(request, project_id))


@csrf_exempt
@require_POST
def sentry_store(request: HttpRequest, project_id: str) -> JsonResponse:
    return handle(lambda: store_response(request, project_id))


@csrf_exempt
@require_POST
def error_webhook(request: HttpRequest, project_slug: str) -> JsonResponse:
    return handle(lambda: webhook_response(request, project_slug))
