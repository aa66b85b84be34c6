"""Schemathesis against the API's own OpenAPI description: whatever a client sends, the answer is a
documented status with a body that matches the schema — never a 5xx, never an undocumented shape."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from dashboard.openapi import SCHEMA
from dashboard.services import api_token_create

schema = schemathesis.openapi.from_dict(SCHEMA)
# Requests go straight into Django through WSGI, in this thread, so they see the test's database.
schema.app = get_wsgi_application()


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    # Django's WSGI handler closes the database connection after each request; inside a test
    # transaction that would end the test's connection (Django's own test Client does the same).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def admin_token(team, run, approval) -> str:
    # A run and an approval exist, so path ids can hit real rows as well as missing ones.
    return api_token_create(user=team.owner, name="fuzz", scope="admin")[1]


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db
def test_the_api_answers_every_generated_request_within_its_schema(case, admin_token):
    # Negative-data rejection is left out: it would count the token this test adds as a request
    # the generator meant to send without one.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {admin_token}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, positive_data_acceptance],
    )
