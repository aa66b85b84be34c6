"""Reading, normalising, grouping and storing error events (Sentry envelopes, store bodies, webhooks).

Everything here treats the body as hostile: sizes are bounded before and after decompression (a
gzip bomb stops at the limit), and an event is stored in one transaction or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from agentops.forges.models import PullRequest
from agentops.redaction import redact, redact_text
from agentops.runs.models import Run
from agentops.triggers.models import ErrorCount, ErrorEvent, ErrorGroup, ErrorProject

MAX_BODY_BYTES = 1024 * 1024  # compressed and decompressed alike
RAW_CAP_BYTES = 64 * 1024
MAX_FRAMES = 100
# Deeper parts of an event are replaced by a marker: no SDK nests this deep, and every later pass
# (redaction, serialisation, the database's JSON) stays far from any recursion limit.
MAX_DEPTH = 32
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e999 parses to inf: no database stores it in JSON, and no client meant it.
        raise ValueError(f"number {text[:20]} is out of range")
    return value


# NUL cannot be stored in a PostgreSQL text or jsonb value; a surrogate without its pair cannot be
# encoded at all. Both become U+FFFD, the character that says "something unreadable was here".
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
DEPTH_MARKER = "[nested too deeply]"


def clean_text(text: str) -> str:
    return _UNSTORABLE.sub("\ufffd", text) if _UNSTORABLE.search(text) else text


def sanitize(value: Any, depth: int = 0) -> Any:
    """A copy of parsed JSON that every database can store: unstorable characters replaced in keys
    and strings, parts deeper than MAX_DEPTH replaced by a marker."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return DEPTH_MARKER
        return {clean_text(str(k)): sanitize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return DEPTH_MARKER
        return [sanitize(v, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def parse_json(data: bytes, what: str = "body") -> Any:
    """Strict JSON (no NaN/Infinity, finite numbers, bounded nesting), sanitised for storage."""
    try:
        parsed = json.loads(data.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise IngestError(400, f"{what} is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise IngestError(400, f"{what} is not valid JSON: {clean_text(str(exc))[:200]}") from None
    return sanitize(parsed)


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
        if rest[pos : pos + 1] == b"\n":
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
            payload = rest[pos : pos + length]
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
            parsed = datetime.fromisoformat(value[:64].replace("Z", "+00:00"))
            # Year 1 at +01:00 is before year 1 in UTC: convert here, where that overflow is caught.
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
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
    items: Iterable[tuple[Any, ...]]
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


def _capped_raw(redacted: dict[str, Any]) -> dict[str, Any]:
    raw = dict(redacted)
    if len(json.dumps(raw, default=str)) <= RAW_CAP_BYTES:
        return raw
    for bulky in ("breadcrumbs", "modules", "extra", "contexts", "debug_meta", "request", "spans"):
        raw.pop(bulky, None)
        if len(json.dumps(raw, default=str)) <= RAW_CAP_BYTES:
            raw["_agentops_trimmed"] = True
            return raw
    keep: dict[str, Any] = {k: raw[k] for k in ("event_id", "level", "platform", "timestamp", "environment", "release") if k in raw}
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
    # Redacted once, before anything is cut from it: a secret truncated first might no longer match.
    event = redact(event)
    exceptions = _exceptions(event)
    last = exceptions[-1] if exceptions else {}
    fingerprint = event.get("fingerprint")
    if fingerprint is not None and not (isinstance(fingerprint, list) and all(isinstance(p, (str, int, float)) for p in fingerprint)):
        raise IngestError(400, "fingerprint must be a list of strings")
    message = _message(event)
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
class GroupSnapshot:
    """What the trigger decision needs about a group and its last run, read in the same statement
    that counted the event (PostgreSQL) or right after it (SQLite)."""

    group_id: int
    count: int
    count_at_last_run: int
    regressed_at: datetime | None
    last_run_id: int | None
    run_status: str | None = None
    run_created_at: datetime | None = None
    run_started_at: datetime | None = None
    run_finished_at: datetime | None = None
    run_lease_expires_at: datetime | None = None
    run_model_calls: int = 0
    run_status_reason: str = ""
    run_trigger_id: int | None = None
    fix_pr_number: int | None = None
    fix_merged_at: datetime | None = None


@dataclass
class Stored:
    event_pk: int | None  # None for a duplicate event_id
    group_id: int | None
    duplicate: bool
    snapshot: GroupSnapshot | None = None
    normalized: NormalizedEvent | None = None
    received_at: datetime | None = None

    @property
    def group(self) -> ErrorGroup:
        if not hasattr(self, "_group"):
            group_id = self.group_id
            if group_id is None and self.normalized is not None:
                group_id = ErrorEvent.objects.filter(event_id=self.normalized.event_id).values_list("group_id", flat=True).first()
            if group_id is None:
                # What .get(pk=None) would say, without asking the database.
                raise ErrorGroup.DoesNotExist("the event's group is not known")
            self._group = ErrorGroup.objects.select_related("project").get(pk=group_id)
        return self._group

    @property
    def event(self) -> ErrorEvent | None:
        if self.event_pk is None:
            return None
        if not hasattr(self, "_event"):
            self._event = ErrorEvent.objects.get(pk=self.event_pk)
        return self._event


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def store_events(*, project: ErrorProject, events: list[NormalizedEvent], source: str) -> list[Stored]:
    """Store every event (or none): groups are created or counted, hourly counts bumped."""
    if connection.vendor == "sqlite":
        with sqlite_lock:
            return _store_events(project=project, events=events, source=source)
    return _store_events(project=project, events=events, source=source)


def _store_events(*, project: ErrorProject, events: list[NormalizedEvent], source: str) -> list[Stored]:
    store_one = _store_one_pg if connection.vendor == "postgresql" else _store_one_orm
    if len(events) == 1:
        # One statement on PostgreSQL is atomic on its own: no BEGIN/COMMIT round trips.
        with contextlib.nullcontext() if connection.vendor == "postgresql" else transaction.atomic():
            return [store_one(project=project, event=events[0], source=source)]
    # Several events lock several groups: take them in one order, so that two batches never deadlock.
    order = sorted(range(len(events)), key=lambda i: fingerprint_of(events[i]))
    stored: dict[int, Stored] = {}
    with transaction.atomic():
        for i in order:
            stored[i] = store_one(project=project, event=events[i], source=source)
    return [stored[i] for i in range(len(events))]


_LEVEL_RANK_SQL = "CASE eg.level " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in LEVELS.items()) + " ELSE 0 END"

# One statement per event: skip a known event_id, create or count the group (worse levels win),
# insert the event, bump the hour, and return the group with its last run and that run's merged fix.
_STORE_SQL = f"""
WITH dup AS (
    SELECT 1 FROM triggers_errorevent WHERE event_id = %(event_id)s::varchar
), g AS (
    INSERT INTO triggers_errorgroup AS eg
        (project_id, fingerprint, title, culprit, level, exception_type, first_seen, last_seen, count, tags, count_at_last_run)
    SELECT %(project_id)s::bigint, %(fingerprint)s::varchar, %(title)s::varchar, %(culprit)s::varchar, %(level)s::varchar,
           %(exception_type)s::varchar, %(now)s::timestamptz, %(now)s::timestamptz, 1, %(tags)s::jsonb, 0
    WHERE NOT EXISTS (SELECT 1 FROM dup)
    ON CONFLICT (project_id, fingerprint) DO UPDATE SET
        count = eg.count + 1,
        last_seen = EXCLUDED.last_seen,
        tags = EXCLUDED.tags,
        level = CASE WHEN %(rank)s::int > {_LEVEL_RANK_SQL} THEN EXCLUDED.level ELSE eg.level END
    RETURNING eg.id, eg.count, eg.count_at_last_run, eg.regressed_at, eg.last_run_id
), e AS (
    INSERT INTO triggers_errorevent
        (project_id, group_id, event_id, received_at, timestamp, level, message, exception_type, exception_value,
         stacktrace, tags, environment, release, platform, source, raw)
    SELECT %(project_id)s::bigint, g.id, %(event_id)s::varchar, %(now)s::timestamptz, %(timestamp)s::timestamptz,
           %(level)s::varchar, %(message)s::text, %(exception_type_full)s::varchar, %(exception_value)s::text,
           %(stacktrace)s::jsonb, %(tags)s::jsonb, %(environment)s::varchar, %(release)s::varchar, %(platform)s::varchar,
           %(source)s::varchar, %(raw)s::jsonb
    FROM g
    ON CONFLICT (event_id) DO NOTHING
    RETURNING id
), h AS (
    INSERT INTO triggers_errorcount AS ec (group_id, hour, count)
    SELECT g.id, %(hour)s::timestamptz, 1 FROM g
    ON CONFLICT (group_id, hour) DO UPDATE SET count = ec.count + 1
)
SELECT g.id, g.count, g.count_at_last_run, g.regressed_at, g.last_run_id, (SELECT id FROM e),
       r.status, r.created_at, r.started_at, r.finished_at, r.lease_expires_at, r.model_calls, r.status_reason, r.trigger_id,
       pr.number, pr.merged_at
FROM g
LEFT JOIN runs_run r ON r.id = g.last_run_id
LEFT JOIN LATERAL (
    SELECT p.number, p.merged_at FROM forges_pullrequest p
    WHERE p.run_id = g.last_run_id AND p.merged_at IS NOT NULL ORDER BY p.merged_at LIMIT 1
) pr ON TRUE
"""

# A concurrent request stored the same event_id between our check and our insert: undo our count.
_UNCOUNT_SQL = """
WITH g AS (UPDATE triggers_errorgroup SET count = count - 1 WHERE id = %(group_id)s RETURNING id)
UPDATE triggers_errorcount SET count = count - 1 WHERE group_id = %(group_id)s AND hour = %(hour)s
"""


def _store_one_pg(*, project: ErrorProject, event: NormalizedEvent, source: str) -> Stored:
    """Hand-written SQL skips the redacting model fields (agentops/fields.py): every value here
    comes from the event that normalize_event redacted as a whole, and the strings built from
    several parts are redacted again."""
    now = timezone.now()
    params: dict[str, Any] = {
        "event_id": event.event_id,
        "project_id": project.pk,
        "fingerprint": fingerprint_of(event),
        "title": redact_text(event.title)[:500],
        "culprit": redact_text(culprit_of(event))[:500],
        "level": event.level,
        "rank": LEVELS[event.level],
        "exception_type": event.exception_type[:200],
        "exception_type_full": event.exception_type[:200],
        "now": now,
        "hour": _hour(now),
        "tags": json.dumps(event.tags),
        "timestamp": event.timestamp,
        "message": event.message,
        "exception_value": event.exception_value,
        "stacktrace": json.dumps(event.stacktrace),
        "environment": event.environment,
        "release": event.release,
        "platform": event.platform,
        "source": source,
        "raw": json.dumps(event.raw, default=str),
    }
    with connection.cursor() as cursor:
        cursor.execute(_STORE_SQL, params)
        row = cursor.fetchone()
        if row is None:
            return Stored(event_pk=None, group_id=None, duplicate=True, normalized=event, received_at=now)
        if row[5] is None:
            cursor.execute(_UNCOUNT_SQL, {"group_id": row[0], "hour": params["hour"]})
            return Stored(event_pk=None, group_id=row[0], duplicate=True, normalized=event, received_at=now)
    snapshot = GroupSnapshot(
        group_id=row[0],
        count=row[1],
        count_at_last_run=row[2],
        regressed_at=row[3],
        last_run_id=row[4],
        run_status=row[6],
        run_created_at=row[7],
        run_started_at=row[8],
        run_finished_at=row[9],
        run_lease_expires_at=row[10],
        run_model_calls=row[11] or 0,
        run_status_reason=row[12] or "",
        run_trigger_id=row[13],
        fix_pr_number=row[14],
        fix_merged_at=row[15],
    )
    return Stored(event_pk=row[5], group_id=row[0], duplicate=False, snapshot=snapshot, normalized=event, received_at=now)


def group_snapshot(group_id: int) -> GroupSnapshot:
    """The same snapshot as the ingest statement returns, read through the ORM (SQLite, the error page)."""
    group = ErrorGroup.objects.values("pk", "count", "count_at_last_run", "regressed_at", "last_run_id").get(pk=group_id)
    snapshot = GroupSnapshot(
        group_id=group["pk"],
        count=group["count"],
        count_at_last_run=group["count_at_last_run"],
        regressed_at=group["regressed_at"],
        last_run_id=group["last_run_id"],
    )
    if snapshot.last_run_id is not None:
        run = (
            Run.objects.filter(pk=snapshot.last_run_id)
            .values("status", "created_at", "started_at", "finished_at", "lease_expires_at", "model_calls", "status_reason", "trigger_id")
            .first()
        )
        if run:
            snapshot.run_status = run["status"]
            snapshot.run_created_at = run["created_at"]
            snapshot.run_started_at = run["started_at"]
            snapshot.run_finished_at = run["finished_at"]
            snapshot.run_lease_expires_at = run["lease_expires_at"]
            snapshot.run_model_calls = run["model_calls"]
            snapshot.run_status_reason = run["status_reason"]
            snapshot.run_trigger_id = run["trigger_id"]
            fix = PullRequest.objects.filter(run_id=snapshot.last_run_id, merged_at__isnull=False).order_by("merged_at").values("number", "merged_at").first()
            if fix:
                snapshot.fix_pr_number, snapshot.fix_merged_at = fix["number"], fix["merged_at"]
    return snapshot


def _store_one_orm(*, project: ErrorProject, event: NormalizedEvent, source: str) -> Stored:
    now = timezone.now()
    if ErrorEvent.objects.filter(event_id=event.event_id).exists():
        return Stored(event_pk=None, group_id=None, duplicate=True, normalized=event, received_at=now)
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
            return Stored(event_pk=None, group_id=group.pk, duplicate=True, normalized=event, received_at=now)
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
    return Stored(event_pk=row.pk, group_id=group.pk, duplicate=False, snapshot=group_snapshot(group.pk), normalized=event, received_at=now)


def hourly_counts(group: ErrorGroup, *, hours: int = 24, now: datetime | None = None) -> list[tuple[datetime, int]]:
    """Events per hour over the last `hours` hours, oldest first, zero-filled."""
    end = _hour(now or timezone.now())
    start = end - timedelta(hours=hours - 1)
    found = dict(ErrorCount.objects.filter(group=group, hour__gte=start, hour__lte=end).values_list("hour", "count"))
    return [(start + timedelta(hours=i), found.get(start + timedelta(hours=i), 0)) for i in range(hours)]


def events_in_window(group: ErrorGroup, *, window_s: int, now: datetime | None = None) -> int:
    since = (now or timezone.now()) - timedelta(seconds=window_s)
    return ErrorEvent.objects.filter(group=group, received_at__gte=since).count()
