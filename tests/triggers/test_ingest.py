"""Error ingest: Sentry envelope/store endpoints and the signed webhook, grouping, bad input."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from agentops.triggers.ingest import hourly_counts
from agentops.triggers.models import ErrorCount, ErrorEvent, ErrorGroup
from agentops.triggers.views import webhook_signature
from tests.triggers.factories import make_project, sentry_event

pytestmark = pytest.mark.django_db


def envelope(*events: dict, extra_items: bytes = b"") -> bytes:
    parts = [json.dumps({"sent_at": "2025-01-01T00:00:00Z"}).encode()]
    for event in events:
        payload = json.dumps(event).encode()
        parts.append(json.dumps({"type": "event", "length": len(payload)}).encode())
        parts.append(payload)
    body = b"\n".join(parts) + b"\n"
    return body + extra_items


def auth(project) -> dict[str, str]:
    return {"HTTP_X_SENTRY_AUTH": f"Sentry sentry_version=7, sentry_client=test/1.0, sentry_key={project.public_key}"}


def post_envelope(client, project, body: bytes, *, encoding: str | None = "gzip", headers: dict | None = None, path: str | None = None):
    data = gzip.compress(body) if encoding == "gzip" else body
    extra = dict(auth(project) if headers is None else headers)
    if encoding:
        extra["HTTP_CONTENT_ENCODING"] = encoding
    return client.post(path or f"/api/{project.pk}/envelope/", data=data, content_type="application/x-sentry-envelope", **extra)


def test_it_stores_a_gzipped_envelope_event_with_its_stack_trace(client):
    project = make_project()
    response = post_envelope(client, project, envelope(sentry_event(event_id="a" * 32)))
    assert response.status_code == 200, response.content
    assert response.json() == {"id": "a" * 32}
    event = ErrorEvent.objects.get()
    assert event.exception_type == "ConnectionPoolExhaustedError"
    assert event.exception_value == "pool of 10 exhausted"
    frames = event.stacktrace[-1]["frames"]
    assert [f["function"] for f in frames] == ["run", "checkout", "acquire"]
    assert "vars" not in frames[-1]  # local variables are not kept in the stack trace
    assert event.tags == {"service": "checkout", "environment": "production"}
    group = event.group
    assert group.count == 1
    assert group.title == "ConnectionPoolExhaustedError: pool of 10 exhausted"
    assert group.culprit == "checkout.db in acquire"
    assert ErrorCount.objects.get(group=group).count == 1
    assert sum(c for _, c in hourly_counts(group)) == 1


def test_it_accepts_the_key_in_the_query_string_and_plain_bodies(client):
    project = make_project()
    response = client.post(
        f"/api/{project.pk}/envelope/?sentry_key={project.public_key}",
        data=envelope(sentry_event()),
        content_type="application/x-sentry-envelope",
    )
    assert response.status_code == 200, response.content
    assert ErrorEvent.objects.count() == 1


def test_the_store_endpoint_accepts_deflate(client):
    project = make_project()
    body = zlib.compress(json.dumps(sentry_event(event_id="b" * 32)).encode())
    response = client.post(f"/api/{project.pk}/store/", data=body, content_type="application/json", HTTP_CONTENT_ENCODING="deflate", **auth(project))
    assert response.status_code == 200, response.content
    assert ErrorEvent.objects.get().event_id == "b" * 32


def test_it_ignores_non_event_envelope_items(client):
    project = make_project()
    session = json.dumps({"sid": "x", "status": "ok"}).encode()
    body = envelope(extra_items=json.dumps({"type": "session"}).encode() + b"\n" + session + b"\n")
    response = post_envelope(client, project, body)
    assert response.status_code == 200
    assert ErrorEvent.objects.count() == 0


def test_it_refuses_a_wrong_key(client):
    project = make_project()
    headers = {"HTTP_X_SENTRY_AUTH": "Sentry sentry_key=0123456789abcdef0123456789abcdef"}
    response = post_envelope(client, project, envelope(sentry_event()), headers=headers)
    assert response.status_code == 403
    assert "invalid sentry_key" in response.json()["error"]
    assert ErrorEvent.objects.count() == 0


def test_it_refuses_a_missing_key(client):
    project = make_project()
    response = post_envelope(client, project, envelope(sentry_event()), headers={})
    assert response.status_code == 401
    assert ErrorEvent.objects.count() == 0


def test_it_refuses_a_key_of_another_project(client):
    project = make_project()
    other = make_project("billing")
    response = post_envelope(client, project, envelope(sentry_event()), headers=auth(other))
    assert response.status_code == 403
    assert ErrorEvent.objects.count() == 0


def test_it_refuses_an_unknown_project_like_a_wrong_key(client):
    project = make_project()
    response = post_envelope(client, project, envelope(sentry_event()), path="/api/999999/envelope/")
    assert response.status_code == 403


def test_it_refuses_malformed_json_and_stores_nothing(client):
    project = make_project()
    body = b'{}\n{"type":"event"}\n{"event_id": "abc", "exception": \n'
    response = post_envelope(client, project, body)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    assert ErrorEvent.objects.count() == 0
    assert ErrorGroup.objects.count() == 0


def test_it_stores_nothing_when_one_event_of_an_envelope_is_invalid(client):
    project = make_project()
    bad = sentry_event(level="catastrophic")
    response = post_envelope(client, project, envelope(sentry_event(), bad))
    assert response.status_code == 400
    assert "unknown level" in response.json()["error"]
    assert ErrorEvent.objects.count() == 0
    assert ErrorGroup.objects.count() == 0


def test_it_refuses_a_truncated_gzip_body(client):
    project = make_project()
    data = gzip.compress(envelope(sentry_event()))[:-12]
    response = post_envelope(client, project, data, encoding=None, headers={**auth(project), "HTTP_CONTENT_ENCODING": "gzip"})
    assert response.status_code == 400
    assert "truncated gzip" in response.json()["error"]
    assert ErrorEvent.objects.count() == 0


def test_it_refuses_a_truncated_envelope_item(client):
    project = make_project()
    payload = json.dumps(sentry_event()).encode()
    body = b"{}\n" + json.dumps({"type": "event", "length": len(payload) + 50}).encode() + b"\n" + payload
    response = post_envelope(client, project, body)
    assert response.status_code == 400
    assert "truncated envelope" in response.json()["error"]
    assert ErrorEvent.objects.count() == 0


def test_it_refuses_an_oversized_body(client):
    project = make_project()
    big = sentry_event(message="x" * (1024 * 1024 + 10))
    response = post_envelope(client, project, envelope(big), encoding=None, headers=auth(project))
    assert response.status_code == 413
    assert ErrorEvent.objects.count() == 0


def test_it_stops_a_gzip_bomb_at_the_limit(client):
    project = make_project()
    bomb = gzip.compress(b"{}\n" + b" " * (64 * 1024 * 1024))
    assert len(bomb) < 200_000
    response = post_envelope(client, project, bomb, encoding=None, headers={**auth(project), "HTTP_CONTENT_ENCODING": "gzip"})
    assert response.status_code == 413
    assert "decompressed body exceeds" in response.json()["error"]


def test_it_refuses_an_unknown_encoding(client):
    project = make_project()
    response = post_envelope(client, project, b"xx", encoding=None, headers={**auth(project), "HTTP_CONTENT_ENCODING": "br"})
    assert response.status_code == 415


def test_it_refuses_get(client):
    project = make_project()
    assert client.get(f"/api/{project.pk}/envelope/").status_code == 405


def test_it_groups_by_exception_type_and_in_app_frames_not_line_numbers(client):
    project = make_project()
    post_envelope(client, project, envelope(sentry_event(lineno=42, value="pool of 10 exhausted (waited 1s)")))
    post_envelope(client, project, envelope(sentry_event(lineno=57, value="pool of 10 exhausted (waited 3s)")))
    post_envelope(client, project, envelope(sentry_event(exc_type="TimeoutError")))
    groups = {g.exception_type: g.count for g in ErrorGroup.objects.all()}
    assert groups == {"ConnectionPoolExhaustedError": 2, "TimeoutError": 1}


def test_an_explicit_fingerprint_decides_the_group(client):
    project = make_project()
    post_envelope(client, project, envelope(sentry_event(fingerprint=["pool"])))
    post_envelope(client, project, envelope(sentry_event(exc_type="TimeoutError", fingerprint=["pool"])))
    post_envelope(client, project, envelope(sentry_event(fingerprint=["{{ default }}", "eu"])))
    assert sorted(ErrorGroup.objects.values_list("count", flat=True)) == [1, 2]


def test_the_same_event_id_twice_counts_once(client):
    project = make_project()
    for _ in range(2):
        assert post_envelope(client, project, envelope(sentry_event(event_id="c" * 32))).status_code == 200
    assert ErrorEvent.objects.count() == 1
    assert ErrorGroup.objects.get().count == 1


def test_a_worse_level_raises_the_group_level(client):
    project = make_project()
    post_envelope(client, project, envelope(sentry_event(level="warning")))
    post_envelope(client, project, envelope(sentry_event(level="fatal")))
    post_envelope(client, project, envelope(sentry_event(level="error")))
    assert ErrorGroup.objects.get().level == "fatal"


def test_message_events_group_with_numbers_ignored(client):
    project = make_project()
    for n in (3, 7):
        event = {"level": "error", "message": f"checkout timed out after {n}s"}
        assert post_envelope(client, project, envelope(event)).status_code == 200
    group = ErrorGroup.objects.get()
    assert group.count == 2
    assert group.title == "checkout timed out after 3s"


# --- the webhook ------------------------------------------------------------------------------


def post_webhook(client, project, payload, *, secret: str | None = None, raw: bytes | None = None, signature: str | None = None):
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {}
    sig = signature if signature is not None else webhook_signature(secret or project.webhook_secret, body)
    if sig:
        headers["HTTP_X_AGENTOPS_SIGNATURE"] = sig
    return client.post(f"/hooks/errors/{project.slug}/", data=body, content_type="application/json", **headers)


def test_the_webhook_accepts_a_signed_event_in_the_short_form(client):
    project = make_project()
    payload = {
        "level": "fatal",
        "exception": {"type": "KeyError", "value": "'sku'", "frames": [{"filename": "cart.py", "function": "total", "lineno": 3, "in_app": True}]},
        "tags": {"service": "checkout"},
    }
    response = post_webhook(client, project, payload)
    assert response.status_code == 202, response.content
    event = ErrorEvent.objects.get()
    assert (event.source, event.exception_type, event.level) == ("webhook", "KeyError", "fatal")
    assert event.stacktrace[0]["frames"][0]["function"] == "total"


def test_the_webhook_accepts_a_batch(client):
    project = make_project()
    response = post_webhook(client, project, {"events": [sentry_event(), sentry_event(exc_type="ValueError")]})
    assert response.status_code == 202
    assert len(response.json()["ids"]) == 2
    assert ErrorGroup.objects.count() == 2


def test_the_webhook_refuses_a_wrong_signature(client):
    project = make_project()
    response = post_webhook(client, project, sentry_event(), secret="not-the-secret")
    assert response.status_code == 403
    assert ErrorEvent.objects.count() == 0


def test_the_webhook_refuses_a_missing_signature(client):
    project = make_project()
    response = post_webhook(client, project, sentry_event(), signature="")
    assert response.status_code == 401
    assert ErrorEvent.objects.count() == 0


def test_the_webhook_refuses_a_signed_but_malformed_body(client):
    project = make_project()
    response = post_webhook(client, project, None, raw=b'{"level": "error", "message": ')
    assert response.status_code == 400
    assert ErrorEvent.objects.count() == 0


def test_the_webhook_refuses_an_event_without_exception_or_message(client):
    project = make_project()
    response = post_webhook(client, project, {"level": "error"})
    assert response.status_code == 400
    assert ErrorEvent.objects.count() == 0


def test_the_webhook_refuses_an_unknown_project(client):
    project = make_project()
    body = json.dumps(sentry_event()).encode()
    response = client.post(
        "/hooks/errors/nope/",
        data=body,
        content_type="application/json",
        HTTP_X_AGENTOPS_SIGNATURE=webhook_signature(project.webhook_secret, body),
    )
    assert response.status_code == 403


def test_stored_events_are_redacted(client):
    project = make_project()
    token = "ghp_" + "A" * 36
    response = post_envelope(client, project, envelope(sentry_event(value=f"bad token {token}")))
    assert response.status_code == 200
    event = ErrorEvent.objects.get()
    assert token not in json.dumps(event.raw)
    assert token not in json.dumps(event.stacktrace)


def test_no_stored_field_of_an_event_or_its_group_keeps_a_secret(client):
    project = make_project()
    token = "ghp_" + "B" * 36
    event = sentry_event(value=f"bad token {token}", tags={"service": "checkout", "auth": token}, message=token, release=token)
    event["exception"]["values"][0]["type"] = f"Leak{token}"
    response = post_envelope(client, project, envelope(event))
    assert response.status_code == 200
    stored = ErrorEvent.objects.get()
    group = ErrorGroup.objects.get()
    for text in [
        stored.exception_value,
        stored.exception_type,
        stored.message,
        stored.release,
        json.dumps(stored.tags),
        json.dumps(stored.raw),
        json.dumps(stored.stacktrace),
        group.title,
        group.exception_type,
        json.dumps(group.tags),
    ]:
        assert token not in text
