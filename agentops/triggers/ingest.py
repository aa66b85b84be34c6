"""Reading, normalising, grouping and storing error events (Sentry envelopes, store bodies, webhooks).

Everything here treats the body as hostile: sizes are bounded before and after decompression (a
gzip bomb stops at the limit), and an event is stored in one transaction or not at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from agentops.redaction import redact
from agentops.triggers.models import ErrorCount, ErrorEvent, ErrorGroup, ErrorProject

MAX_BODY_BYTES = 1024 * 1024  # compressed and decompressed alike
RAW_CAP_BYTES = 64 * 1024
MAX_FRAMES = 100
LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "fatal": 50, "critical": 50}


class IngestError(Exception):
    """A request we refuse: status is the HTTP status (4xx), message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------------------------------
# bodies


def decompress(body: bytes, encoding: str, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """Undo Content-Encoding with a hard output limit (a 1 KiB gzip bomb never becomes 1 GiB)."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        # "deflate" is zlib-wrapped by the RFC, raw deflate by some clients: accept both.
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        raise IngestError(415, f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or none)")
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise IngestError(400, f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise IngestError(413, f"decompressed body exceeds {limit} bytes")
    if not decompressor.eof:
        raise IngestError(400, f"truncated {encoding} body")
    return out


def read_body(request: Any, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw request body, refusing oversized and truncated ones before reading them whole."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    try:
        declared_len = int(declared) if declared else None
    except ValueError:
        raise IngestError(400, "invalid Content-Length") from None
    if declared_len is not None and declared_len > limit:
        raise IngestError(413, f"body exceeds {limit} bytes")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise IngestError(413, f"body exceeds {limit} bytes")
    if declared_len is not None and len(body) < declared_len:
        raise IngestError(400, f"truncated body: {len(body)} of {declared_len} bytes")
    return body


def parse_json(data: bytes, what: str = "body") -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IngestError(400, f"{what} is not valid JSON: {exc}") from None


def parse_envelope(data: bytes) -> list[dict[str, Any]]:
    """The error events of a Sentry envelope (other item types — sessions, client reports — are ignored).

    Format: a header line, then items, each a header line and a payload of `length` bytes (or up
    to the next newline when the header has no length).
    """
    lines = data.split(b"\n", 1)
    header = parse_json(lines[0], "envelope header")
    if not isinstance(header, dict):
        raise IngestError(400, "envelope header must be a JSON object")
    rest = lines[1] if len(lines) > 1 else b""
    events: list[dict[str, Any]] = []
    pos = 0
    while pos < len(rest):
        if rest[pos:pos + 1] == b"\n":
            pos += 1
            continue
        end = rest.find(b"\n", pos)
        if end == -1:
            raise IngestError(400, "truncated envelope: item header without payload")
        item_header = parse_json(rest[pos:end], "envelope item header")
        if not isinstance(item_header, dict):
            raise IngestError(400, "envelope item header must be a JSON object")
        pos = end + 1
        length = item_header.get("length")
        if length is not None:
            if not isinstance(length, int) or length < 0:
                raise IngestError(400, "envelope item length must be a non-negative integer")
            if pos + length > len(rest):
                raise IngestError(400, f"truncated envelope: item needs {length} bytes, {len(rest) - pos} left")
            payload = rest[pos:pos + length]
            pos += length
        else:
            end = rest.find(b"\n", pos)
            end = len(rest) if end == -1 else end
            payload = rest[pos:end]
            pos = end
        if item_header.get("type") == "event":
            event = parse_json(payload, "event item")
            if not isinstance(event, dict):
                raise IngestError(400, "event item must be a JSON object")
            if "event_id" not in event and header.get("event_id"):
                event["event_id"] = header["event_id"]
            events.append(event)
    return events


_AUTH_KEY = re.compile(r"sentry_key\s*=\s*([A-Za-z0-9]+)")


def sentry_key_of(request: Any) -> str | None:
    for value in (request.META.get("HTTP_X_SENTRY_AUTH", ""), request.META.get("HTTP_AUTHORIZATION", "")):
        match = _AUTH_KEY.search(value)
        if match:
            return match.group(1)
    return request.GET.get("sentry_key") or None


# --------------------------------------------------------------------------------------------------
# normalising


@dataclass
class NormalizedEvent:
    event_id: str
    level: str
    message: str
    exception_type: str
    exception_value: str
    stacktrace: list[dict[str, Any]]
    tags: dict[str, str]
    timestamp: datetime | None
    environment: str
    release: str
    platform: str
    explicit_fingerprint: list[str] | None
    transaction: str
    raw: dict[str, Any]

    @property
    def title(self) -> str:
        if self.exception_type:
            return f"{self.exception_type}: {self.exception_value}"[:500] if self.exception_value else self.exception_type[:500]
        return (self.message or "(no message)").splitlines()[0][:500] if self.message else "(no message)"


def _s(value: Any, limit: int = 1000) -> str:
    if value is None:
        return ""
    return str(value)[:limit]


def _timestamp(value: Any) -> datetime | None:
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(float(value), tz=UTC)
        if isinstance(value, str) and value:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _frame(frame: Any) -> dict[str, Any] | None:
    if not isinstance(frame, dict):
        return None
    out: dict[str, Any] = {
        "filename": _s(frame.get("filename") or frame.get("abs_path") or frame.get("file"), 500),
        "function": _s(frame.get("function"), 200),
        "module": _s(frame.get("module"), 200),
        "lineno": frame.get("lineno") if isinstance(frame.get("lineno"), int) else None,
        "in_app": bool(frame.get("in_app", False)),
        "context_line": _s(frame.get("context_line"), 500),
    }
    for key in ("pre_context", "post_context"):
        lines = frame.get(key)
        if isinstance(lines, list):
            out[key] = [_s(line, 500) for line in lines[-5:]]
    return out


def _exceptions(event: dict[str, Any]) -> list[dict[str, Any]]:
    exc = event.get("exception")
    if isinstance(exc, dict) and "values" in exc:
        values = exc.get("values")
    elif isinstance(exc, dict):
        values = [exc]  # the webhook's short form: {"type", "value", "frames"|"stacktrace"}
    elif isinstance(exc, list):
        values = exc
    else:
        values = []
    if not isinstance(values, list):
        raise IngestError(400, "exception.values must be a list")
    result = []
    for value in values:
        if not isinstance(value, dict):
            continue
        stack = value.get("stacktrace")
        frames = stack.get("frames") if isinstance(stack, dict) else stack if isinstance(stack, list) else value.get("frames")
        frames = frames if isinstance(frames, list) else []
        result.append(
            {
                "type": _s(value.get("type"), 200),
                "value": _s(value.get("value"), 2000),
                "module": _s(value.get("module"), 200),
                "frames": [f for f in (_frame(f) for f in frames[-MAX_FRAMES:]) if f is not None],
            }
        )
    return result


def _tags(event: dict[str, Any]) -> dict[str, str]:
    raw = event.get("tags") or {}
    tags: dict[str, str] = {}
    if isinstance(raw, dict):
        items = raw.items()
    elif isinstance(raw, list):
        items = [tuple(pair) for pair in raw if isinstance(pair, (list, tuple)) and len(pair) == 2]
    else:
        raise IngestError(400, "tags must be an object or a list of [key, value] pairs")
    for key, value in list(items)[:100]:
        tags[_s(key, 100)] = _s(value, 200)
    # Sentry shows these as tags too; rules may match on them.
    for key in ("environment", "release", "server_name"):
        if event.get(key) and key not in tags:
            tags[key] = _s(event[key], 200)
    return tags


def _message(event: dict[str, Any]) -> str:
    for key in ("logentry", "message"):
        value = event.get(key)
        if isinstance(value, dict):
            value = value.get("formatted") or value.get("message")
        if isinstance(value, str) and value:
            return value[:5000]
    return ""


def _capped_raw(event: dict[str, Any]) -> dict[str, Any]:
    raw = redact(event)
    if len(json.dumps(raw, default=str)) <= RAW_CAP_BYTES:
        return raw
    for bulky in ("breadcrumbs", "modules", "extra", "contexts", "debug_meta", "request", "spans"):
        raw.pop(bulky, None)
        if len(json.dumps(raw, default=str)) <= RAW_CAP_BYTES:
            raw["_agentops_trimmed"] = True
            return raw
    keep = {k: raw[k] for k in ("event_id", "level", "platform", "timestamp", "environment", "release") if k in raw}
    keep["_agentops_trimmed"] = True
    return keep


def normalize_event(event: Any) -> NormalizedEvent:
    if not isinstance(event, dict):
        raise IngestError(400, "an event must be a JSON object")
    event_id = _s(event.get("event_id"), 100).replace("-", "").lower() or uuid.uuid4().hex
    if not re.fullmatch(r"[0-9a-zA-Z_.:]{1,64}", event_id):
        raise IngestError(400, "event_id must be 1-64 letters, digits or _.:")
    level = _s(event.get("level") or "error", 20).lower()
    if level not in LEVELS:
        raise IngestError(400, f"unknown level {level!r}")
    level = {"warn": "warning", "critical": "fatal"}.get(level, level)
    exceptions = redact(_exceptions(event))
    last = exceptions[-1] if exceptions else {}
    fingerprint = event.get("fingerprint")
    if fingerprint is not None and not (isinstance(fingerprint, list) and all(isinstance(p, (str, int, float)) for p in fingerprint)):
        raise IngestError(400, "fingerprint must be a list of strings")
    message = redact(_message(event))
    if not exceptions and not message:
        raise IngestError(400, "an event needs an exception or a message")
    return NormalizedEvent(
        event_id=event_id,
        level=level,
        message=message,
        exception_type=last.get("type", ""),
        exception_value=last.get("value", ""),
        stacktrace=exceptions,
        tags=_tags(event),
        timestamp=_timestamp(event.get("timestamp")),
        environment=_s(event.get("environment"), 100),
        release=_s(event.get("release"), 200),
        platform=_s(event.get("platform"), 50),
        explicit_fingerprint=[str(p) for p in fingerprint] if fingerprint else None,
        transaction=_s(event.get("transaction") or event.get("culprit"), 500),
        raw=_capped_raw(event),
    )


# --------------------------------------------------------------------------------------------------
# grouping


def default_fingerprint_parts(event: NormalizedEvent) -> list[str]:
    """Exception type plus the in-app frames (module/file and function, not line numbers, so an
    edit elsewhere in a file does not split a group); a message when there is no exception."""
    if event.exception_type or event.stacktrace:
        parts = [event.exception_type]
        frames = event.stacktrace[-1]["frames"] if event.stacktrace else []
        in_app = [f for f in frames if f.get("in_app")] or frames
        parts += [f"{f.get('module') or f.get('filename')}:{f.get('function')}" for f in in_app]
        return parts
    # Numbers in messages (ids, durations) would split one problem into many groups.
    return ["message", re.sub(r"\d+", "<n>", event.message)[:500]]


def fingerprint_of(event: NormalizedEvent) -> str:
    if event.explicit_fingerprint:
        parts: list[str] = []
        for part in event.explicit_fingerprint:
            parts += default_fingerprint_parts(event) if part in ("{{ default }}", "{{default}}") else [part]
    else:
        parts = default_fingerprint_parts(event)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def culprit_of(event: NormalizedEvent) -> str:
    frames = event.stacktrace[-1]["frames"] if event.stacktrace else []
    in_app = [f for f in frames if f.get("in_app")] or frames
    if in_app:
        top = in_app[-1]
        return f"{top.get('module') or top.get('filename')} in {top.get('function')}"[:500]
    return event.transaction


# --------------------------------------------------------------------------------------------------
# storing

# SQLite has one writer; under threads (the test server, several ASGI worker threads) a shared-cache
# database reports "table is locked" instead of waiting, so writes from this process take turns.
sqlite_lock = threading.RLock()


@dataclass
class Stored:
    event: ErrorEvent | None  # None for a duplicate event_id
    group: ErrorGroup
    duplicate: bool


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def store_events(*, project: ErrorProject, events: list[NormalizedEvent], source: str) -> list[Stored]:
    """Store every event (or none): groups are created or counted, hourly counts bumped."""
    if connection.vendor == "sqlite":
        with sqlite_lock:
            return _store_events(project=project, events=events, source=source)
    return _store_events(project=project, events=events, source=source)


def _store_events(*, project: ErrorProject, events: list[NormalizedEvent], source: str) -> list[Stored]:
    stored: list[Stored] = []
    with transaction.atomic():
        for event in events:
            stored.append(_store_one(project=project, event=event, source=source))
    return stored


def _store_one(*, project: ErrorProject, event: NormalizedEvent, source: str) -> Stored:
    now = timezone.now()
    fingerprint = fingerprint_of(event)
    group, created = ErrorGroup.objects.get_or_create(
        project=project,
        fingerprint=fingerprint,
        defaults={
            "title": event.title,
            "culprit": culprit_of(event),
            "level": event.level,
            "exception_type": event.exception_type[:200],
            "first_seen": now,
            "last_seen": now,
            "count": 0,
            "tags": event.tags,
        },
    )
    try:
        with transaction.atomic():
            row = ErrorEvent.objects.create(
                project=project,
                group=group,
                event_id=event.event_id,
                received_at=now,
                timestamp=event.timestamp,
                level=event.level,
                message=event.message,
                exception_type=event.exception_type,
                exception_value=event.exception_value,
                stacktrace=event.stacktrace,
                tags=event.tags,
                environment=event.environment,
                release=event.release,
                platform=event.platform,
                source=source,
                raw=event.raw,
            )
    except IntegrityError:
        # The same event_id again (an SDK retry): accepted, not counted twice.
        if ErrorEvent.objects.filter(event_id=event.event_id).exists():
            return Stored(event=None, group=group, duplicate=True)
        raise
    # Worse levels win: a group that once was fatal stays fatal.
    updates: dict[str, Any] = {"count": F("count") + 1, "last_seen": now, "tags": event.tags}
    if LEVELS[event.level] > LEVELS.get(group.level, 0):
        updates["level"] = event.level
    ErrorGroup.objects.filter(pk=group.pk).update(**updates)
    hour = _hour(now)
    if not ErrorCount.objects.filter(group=group, hour=hour).update(count=F("count") + 1):
        try:
            with transaction.atomic():
                ErrorCount.objects.create(group=group, hour=hour, count=1)
        except IntegrityError:
            ErrorCount.objects.filter(group=group, hour=hour).update(count=F("count") + 1)
    group.refresh_from_db()
    return Stored(event=row, group=group, duplicate=False)


def hourly_counts(group: ErrorGroup, *, hours: int = 24, now: datetime | None = None) -> list[tuple[datetime, int]]:
    """Events per hour over the last `hours` hours, oldest first, zero-filled."""
    end = _hour(now or timezone.now())
    start = end - timedelta(hours=hours - 1)
    found = dict(ErrorCount.objects.filter(group=group, hour__gte=start, hour__lte=end).values_list("hour", "count"))
    return [(start + timedelta(hours=i), found.get(start + timedelta(hours=i), 0)) for i in range(hours)]


def events_in_window(group: ErrorGroup, *, window_s: int, now: datetime | None = None) -> int:
    since = (now or timezone.now()) - timedelta(seconds=window_s)
    return ErrorEvent.objects.filter(group=group, received_at__gte=since).count()
