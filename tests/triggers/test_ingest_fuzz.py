"""No input makes ingest answer 5xx, and a refused request writes nothing (issue 10, item 3).

Property tests (hypothesis) on the three endpoints — the legacy store, the envelope and the signed
webhook — with hostile JSON: NUL characters, unpaired surrogates, NaN/Infinity, huge numbers, deep
nesting, odd types in every field; and the concrete bodies that answered 500 before.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentops.triggers.models import ErrorCount, ErrorEvent, ErrorGroup
from agentops.triggers.views import webhook_signature
from tests.triggers.factories import make_agent, make_error_trigger, make_project, sentry_event

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Every code point, surrogates and NUL included: what a hostile client can put in a JSON string.
hostile_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40) | st.sampled_from(["\x00", "\ud800", "a\x00b", "\udfff\ud800", "²", ""])
scalars = st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40) | st.floats(allow_nan=True, allow_infinity=True) | hostile_text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4), max_leaves=20)
FIELDS = [
    "event_id",
    "level",
    "message",
    "logentry",
    "tags",
    "exception",
    "fingerprint",
    "timestamp",
    "environment",
    "release",
    "platform",
    "transaction",
    "culprit",
    "extra",
    "contexts",
    "breadcrumbs",
    "server_name",
]


@st.composite
def hostile_events(draw: st.DrawFn) -> str:
    """A mostly valid Sentry event with a few fields replaced by anything, as JSON text (NaN and
    Infinity written the way a careless encoder writes them)."""
    event: dict[str, Any] = sentry_event(event_id=uuid.uuid4().hex)
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        event[field] = draw(json_values)
    if draw(st.booleans()):
        frames = event.get("exception", {}).get("values", [{}])[0].get("stacktrace", {}).get("frames") if isinstance(event.get("exception"), dict) else None
        if isinstance(frames, list) and frames and isinstance(frames[-1], dict):
            frames[-1][draw(st.sampled_from(["lineno", "function", "filename", "vars", "in_app", "pre_context"]))] = draw(json_values)
    text = json.dumps(event, allow_nan=True)
    depth = draw(st.sampled_from([0, 0, 0, 40, 900, 5000]))
    if depth:
        text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    return text


@pytest.fixture
def project(db):
    make_error_trigger(make_agent())
    return make_project()


def _rows() -> tuple[int, int, int]:
    return ErrorEvent.objects.count(), ErrorGroup.objects.count(), sum(ErrorCount.objects.values_list("count", flat=True))


def _store(client: Client, project, body: bytes, project_id: str | None = None):
    return client.post(
        f"/api/{project_id if project_id is not None else project.pk}/store/",
        data=body,
        content_type="application/json",
        HTTP_X_SENTRY_AUTH=f"Sentry sentry_key={project.public_key}",
    )


def _envelope(client: Client, project, payload: bytes):
    body = b'{"event_id": "' + uuid.uuid4().hex.encode() + b'"}\n' + json.dumps({"type": "event", "length": len(payload)}).encode() + b"\n" + payload
    return client.post(
        f"/api/{project.pk}/envelope/", data=body, content_type="application/x-sentry-envelope", HTTP_X_SENTRY_AUTH=f"Sentry sentry_key={project.public_key}"
    )


def _webhook(client: Client, project, body: bytes):
    return client.post(
        f"/hooks/errors/{project.slug}/", data=body, content_type="application/json", HTTP_X_AGENTOPS_SIGNATURE=webhook_signature(project.webhook_secret, body)
    )


def _check(response, before: tuple[int, int, int]) -> None:
    assert response.status_code < 500, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    if response.status_code >= 400:
        assert json.loads(response.content)["error"]
        assert _rows() == before, "a refused request wrote rows"


@FUZZ
@given(body=hostile_events())
def test_the_store_endpoint_never_answers_5xx_nor_writes_part_of_a_refused_event(client, project, body):
    before = _rows()
    _check(_store(client, project, body.encode("utf-8", "surrogatepass")), before)


@FUZZ
@given(body=hostile_events())
def test_the_envelope_endpoint_never_answers_5xx_nor_writes_part_of_a_refused_event(client, project, body):
    before = _rows()
    _check(_envelope(client, project, body.encode("utf-8", "surrogatepass")), before)


@FUZZ
@given(bodies=st.lists(hostile_events(), min_size=1, max_size=3))
def test_the_webhook_never_answers_5xx_and_stores_a_batch_whole_or_not_at_all(client, project, bodies):
    before = _rows()
    known = set(ErrorEvent.objects.values_list("event_id", flat=True))
    body = ('{"events": [' + ", ".join(bodies) + "]}").encode("utf-8", "surrogatepass")
    response = _webhook(client, project, body)
    _check(response, before)
    if response.status_code == 202:
        assert _rows()[0] == before[0] + len(set(response.json()["ids"]) - known)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_are_a_clear_4xx(client, project, raw):
    before = _rows()
    _check(_store(client, project, raw), before)
    _check(_webhook(client, project, raw), before)


@FUZZ
@given(project_id=st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30).filter(lambda s: "/" not in s))
def test_any_project_id_in_the_dsn_path_is_a_clear_answer(client, project, project_id):
    from urllib.parse import quote

    response = _store(client, project, json.dumps(sentry_event()).encode(), project_id=quote(project_id, safe=""))
    assert response.status_code in (200, 400, 403, 404), response.content[:200]


# --- the bodies that answered 500 before ----------------------------------------------------------


@pytest.mark.parametrize("value", ["a\x00b", "\ud800", "x\udfffy"])
def test_an_unstorable_character_is_replaced_and_the_event_stored(client, project, value):
    body = json.dumps(sentry_event(value=value, tags={"service": "checkout", "k\x00": value})).encode("utf-8", "surrogatepass")
    assert b"\\u0000" in body or b"\\ud" in body
    response = _store(client, project, body)
    assert response.status_code == 200, response.content
    stored = ErrorEvent.objects.get()
    assert "\x00" not in stored.exception_value and "\ufffd" in stored.exception_value
    assert "k\ufffd" in stored.tags


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("endpoint", [_store, _envelope, _webhook])
def test_non_finite_numbers_are_refused_with_a_400(client, project, literal, endpoint):
    body = json.dumps(sentry_event())[:-1] + f', "extra": {{"x": {literal}}}}}'
    response = endpoint(client, project, body.encode())
    assert response.status_code == 400, response.content
    assert ErrorEvent.objects.count() == 0 and ErrorGroup.objects.count() == 0


@pytest.mark.parametrize("endpoint", [_store, _envelope, _webhook])
def test_five_thousand_deep_nesting_is_refused_with_a_400(client, project, endpoint):
    body = json.dumps(sentry_event())[:-1] + ', "extra": ' + "[" * 5000 + "]" * 5000 + "}"
    response = endpoint(client, project, body.encode())
    assert response.status_code == 400, response.content
    assert "nested too deeply" in response.json()["error"]
    assert ErrorEvent.objects.count() == 0


def test_moderate_nesting_is_stored_with_its_deep_part_cut(client, project):
    body = json.dumps(sentry_event())[:-1] + ', "extra": ' + "[" * 200 + "]" * 200 + "}"
    assert _store(client, project, body.encode()).status_code == 200
    assert "[nested too deeply]" in json.dumps(ErrorEvent.objects.get().raw)


@pytest.mark.parametrize("project_id", ["%C2%B2", "%00", "9" * 5000, "1" * 19, "%F0%9F%92%A5"])
def test_a_malformed_project_id_is_a_400(client, project, project_id):
    response = _store(client, project, json.dumps(sentry_event()).encode(), project_id=project_id)
    assert response.status_code == 400, response.content
    assert ErrorEvent.objects.count() == 0


def test_a_timestamp_that_overflows_in_utc_is_ignored_not_a_500(client, project):
    response = _store(client, project, json.dumps(sentry_event(timestamp="0001-01-01T00:00:00+01:00")).encode())
    assert response.status_code == 200
    assert ErrorEvent.objects.get().timestamp is None


def test_a_webhook_batch_with_one_bad_event_writes_none(client, project):
    good = json.dumps(sentry_event())
    bad = json.dumps({"level": "error", "tags": 5, "message": "x"})
    response = _webhook(client, project, ('{"events": [' + good + ", " + bad + "]}").encode())
    assert response.status_code == 400
    assert ErrorEvent.objects.count() == 0 and ErrorGroup.objects.count() == 0


def test_a_database_outage_is_a_503_with_retry_after_not_a_500(client, project, monkeypatch):
    from django.db import OperationalError

    from agentops.triggers import ingest

    def down(**_: Any) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(ingest, "_store_one_pg", down)
    monkeypatch.setattr(ingest, "_store_one_orm", down)
    response = _store(client, project, json.dumps(sentry_event()).encode())
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert ErrorEvent.objects.count() == 0
