"""A 403 is an answer, not a fault: one log line, no traceback, and the 403 page."""

from __future__ import annotations

import logging

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _formatted(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return "\n".join(formatter.format(r) for r in records)


def test_it_logs_a_refused_permission_as_one_line_without_a_traceback(client, team, agent, caplog):
    client.force_login(team.outsider)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get(reverse("dashboard:agent_detail", args=[agent.slug]))
    assert response.status_code == 403
    assert "403.html" in [t.name for t in response.templates]
    assert b"Not allowed" in response.content
    forbidden = [r for r in caplog.records if r.name == "django.request" and "Forbidden" in r.getMessage()]
    assert len(forbidden) == 1
    text = _formatted(forbidden)
    assert "Traceback" not in text and "PermissionDenied" not in text
    assert text.count("\n") == 0 and f"/agents/{agent.slug}/" in text


def test_it_logs_a_viewer_posting_configuration_as_one_line(client, team, agent, caplog):
    client.force_login(team.viewer)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.post(reverse("dashboard:agent_edit", args=[agent.slug]), {"name": "x"})
    assert response.status_code == 403
    assert all(r.exc_info is None for r in caplog.records if r.name == "django.request")
    assert any("Forbidden (Permission denied)" in r.getMessage() for r in caplog.records)


def test_it_keeps_the_traceback_of_a_real_error():
    from dashboard.log_filters import ForbiddenWithoutTraceback

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error: /x", (), sys.exc_info())
    assert ForbiddenWithoutTraceback().filter(record) is True
    assert record.exc_info is not None and "Traceback" in logging.Formatter().format(record)
