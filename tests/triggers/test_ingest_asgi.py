"""The ingest endpoints as daphne serves them: agentops.asgi.application, through IngestFastPath."""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator

from agentops.runs.models import Run
from agentops.triggers.ingest import MAX_BODY_BYTES
from agentops.triggers.models import ErrorEvent, ErrorGroup
from agentops.triggers.views import webhook_signature
from tests.triggers.factories import make_agent, make_error_trigger, make_project, sentry_event

pytestmark = pytest.mark.django_db(transaction=True)  # the handlers run on the fast path's own threads


def post(path: str, body: bytes, headers: list[tuple[bytes, bytes]] | None = None, method: str = "POST") -> dict:
    from agentops.asgi import application

    default = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    communicator = HttpCommunicator(application, method, path, body=body, headers=headers or default)
    return async_to_sync(communicator.get_response)(timeout=10)


def auth(project) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"x-sentry-auth", f"Sentry sentry_key={project.public_key}".encode())]


@pytest.fixture(autouse=True)
def _close_fast_path_connections():
    yield
    from agentops.triggers.asgi import close_all

    close_all()  # its threads' connections would keep the test database from being dropped


@pytest.fixture
def project():
    make_error_trigger(make_agent())
    return make_project()


def test_the_fast_path_stores_an_event_and_starts_one_run(project):
    for _ in range(3):
        response = post(f"/api/{project.pk}/store/", json.dumps(sentry_event(event_id=uuid.uuid4().hex)).encode(), auth(project))
        assert response["status"] == 200, response["body"]
    assert ErrorEvent.objects.count() == 3
    assert ErrorGroup.objects.get().count == 3
    assert Run.objects.count() == 1


def test_the_fast_path_deduplicates_a_resent_event(project):
    body = json.dumps(sentry_event(event_id=uuid.uuid4().hex)).encode()
    assert post(f"/api/{project.pk}/store/", body, auth(project))["status"] == 200
    assert post(f"/api/{project.pk}/store/", body, auth(project))["status"] == 200
    assert ErrorEvent.objects.count() == 1 and ErrorGroup.objects.get().count == 1


def test_the_fast_path_refuses_hostile_bodies_with_a_4xx_and_writes_nothing(project):
    deep = json.dumps(sentry_event())[:-1].encode() + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for body in [deep, b'{"level": NaN}', b"\xff\xfe", json.dumps(sentry_event())[:-1].encode() + b', "x": 1e999}']:
        response = post(f"/api/{project.pk}/store/", body, auth(project))
        assert response["status"] == 400, response["body"]
        assert json.loads(response["body"])["error"]
    assert ErrorEvent.objects.count() == 0 and ErrorGroup.objects.count() == 0


def test_the_fast_path_refuses_an_oversized_body_before_parsing_it(project):
    response = post(f"/api/{project.pk}/store/", b" " * (MAX_BODY_BYTES + 1), auth(project))
    assert response["status"] == 413


def test_the_fast_path_checks_the_host_header_like_django(project):
    headers = [(b"host", b"evil.example"), *auth(project)[1:]]
    response = post(f"/api/{project.pk}/store/", json.dumps(sentry_event()).encode(), headers)
    assert response["status"] == 400
    assert ErrorEvent.objects.count() == 0


def test_the_fast_path_serves_the_signed_webhook_and_the_envelope(project):
    body = json.dumps({"events": [sentry_event(event_id=uuid.uuid4().hex)]}).encode()
    headers = [(b"host", b"127.0.0.1"), (b"x-agentops-signature", webhook_signature(project.webhook_secret, body).encode())]
    assert post(f"/hooks/errors/{project.slug}/", body, headers)["status"] == 202
    payload = json.dumps(sentry_event(event_id=uuid.uuid4().hex)).encode()
    envelope = b"{}\n" + json.dumps({"type": "event", "length": len(payload)}).encode() + b"\n" + payload
    assert post(f"/api/{project.pk}/envelope/", envelope, auth(project))["status"] == 200
    assert ErrorEvent.objects.count() == 2
    unsigned = post(f"/hooks/errors/{project.slug}/", body, [(b"host", b"127.0.0.1")])
    assert unsigned["status"] == 401


def test_other_requests_go_to_django(project):
    assert post(f"/api/{project.pk}/store/", b"", method="GET")["status"] == 405
    assert post("/api/v1/nothing-here/", b"{}")["status"] in (401, 403, 404)


def test_a_failing_event_in_a_batch_fails_only_its_own_request(project):
    from concurrent.futures import Future

    from django.db import connection

    from agentops.triggers.asgi import BatchWriter
    from agentops.triggers.ingest import normalize_event
    from agentops.triggers.models import ErrorProject

    if connection.vendor != "postgresql":
        pytest.skip("the batch writer is PostgreSQL's; SQLite stores request by request")
    gone = ErrorProject(pk=987654321, name="gone", slug="gone")  # its rows would violate the foreign key
    good, bad = Future(), Future()
    BatchWriter()._write(
        [
            (project, [normalize_event(sentry_event(event_id=uuid.uuid4().hex))], "sentry", good),
            (gone, [normalize_event(sentry_event(event_id=uuid.uuid4().hex, exc_type="Other"))], "sentry", bad),
        ]
    )
    assert len(good.result(timeout=1)) == 1 and not good.result()[0].duplicate
    assert bad.exception(timeout=1) is not None
    assert ErrorEvent.objects.count() == 1 and ErrorGroup.objects.count() == 1


def test_concurrent_requests_share_a_commit_and_each_gets_its_own_answer(project):
    import asyncio

    from agentops.asgi import application

    async def many() -> list[dict]:
        bodies = [json.dumps(sentry_event(event_id=uuid.uuid4().hex, lineno=i % 3)).encode() for i in range(30)]
        bodies.append(bodies[0])  # a resend among them
        return await asyncio.gather(
            *[HttpCommunicator(application, "POST", f"/api/{project.pk}/store/", body=b, headers=auth(project)).get_response(timeout=20) for b in bodies]
        )

    responses = async_to_sync(many)()
    assert [r["status"] for r in responses] == [200] * 31
    assert ErrorEvent.objects.count() == 30
    assert ErrorGroup.objects.get().count == 30
    assert Run.objects.count() == 1
