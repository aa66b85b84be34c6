"""The real sentry-sdk, in a separate process, reporting to a live server over a real socket."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from urllib.parse import urlsplit

import pytest

from agentops.runs.models import Run
from agentops.triggers.models import ErrorEvent, ErrorGroup
from tests.triggers.factories import make_agent, make_error_trigger, make_project

pytestmark = pytest.mark.django_db(transaction=True)

REPORTER = textwrap.dedent(
    """
    import sys
    import sentry_sdk

    class ConnectionPoolExhaustedError(Exception):
        pass

    def acquire():
        raise ConnectionPoolExhaustedError("all 10 connections in use")

    def checkout():
        acquire()

    sentry_sdk.init(dsn=sys.argv[1], default_integrations=False, environment="production", release="checkout@1.2.3")
    sentry_sdk.set_tag("service", "checkout")
    for _ in range(int(sys.argv[2])):
        try:
            checkout()
        except ConnectionPoolExhaustedError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=20)
    """
)


def report(dsn: str, count: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", REPORTER, dsn, str(count)], capture_output=True, text=True, timeout=60)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_the_real_sentry_sdk_reports_an_exception_that_starts_a_run(live_server):
    agent = make_agent()
    project = make_project()
    make_error_trigger(agent, tags={"service": "checkout"})
    proc = report(project.dsn(live_server.url), count=3)
    assert proc.returncode == 0, proc.stderr
    assert wait_for(lambda: ErrorEvent.objects.count() == 3), proc.stderr
    event = ErrorEvent.objects.first()
    assert event.exception_type == "ConnectionPoolExhaustedError"
    assert event.exception_value == "all 10 connections in use"
    assert event.environment == "production" and event.release == "checkout@1.2.3"
    assert event.tags["service"] == "checkout"
    functions = [f["function"] for f in event.stacktrace[-1]["frames"]]
    assert functions[-2:] == ["checkout", "acquire"]
    group = ErrorGroup.objects.get()
    assert group.count == 3
    assert Run.objects.filter(agent=agent, fingerprint=f"error:{group.pk}").count() == 1


def test_the_real_sentry_sdk_with_a_wrong_key_stores_nothing(live_server):
    project = make_project()
    dsn = project.dsn(live_server.url).replace(project.public_key, "0" * 32)
    proc = report(dsn)
    assert proc.returncode == 0, proc.stderr
    time.sleep(0.5)
    assert ErrorEvent.objects.count() == 0


def test_a_body_shorter_than_its_content_length_is_refused(live_server):
    project = make_project()
    parts = urlsplit(live_server.url)
    body = b'{}\n{"type":"event"}\n{"message": "hello", "level": "error"}\n'
    request = (
        f"POST /api/{project.pk}/envelope/?sentry_key={project.public_key} HTTP/1.1\r\n"
        f"Host: {parts.hostname}\r\nContent-Type: application/x-sentry-envelope\r\n"
        f"Content-Length: {len(body) + 100}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line = response.split(b"\r\n", 1)[0]
    assert b" 400 " in status_line, response[:500]
    assert b"truncated body" in response
    assert ErrorEvent.objects.count() == 0
