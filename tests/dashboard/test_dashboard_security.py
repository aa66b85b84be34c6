"""Accounts and tokens: sign-in throttling with lock-out, browser security headers, and API
tokens with a scope and an expiry."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from helpers_dashboard import client_for

from agentops.audit.models import AuditEvent
from dashboard.models import ApiToken
from dashboard.services import ScopeNotAllowed, api_token_create, api_token_revoke

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _throttle(settings):
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


def sign_in(username: str, password: str, *, ip: str = "127.0.0.1", **headers: str):
    """Each attempt from a fresh client: no cookie or session carries the lock-out."""
    client = Client()
    response = client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=ip, **headers)
    return client, response


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# --- sign-in throttling ------------------------------------------------------------------------


def test_the_right_password_signs_in_before_any_failure(team):
    client, response = sign_in("alice", "pw-alice")
    assert response.status_code == 302 and signed_in(client)


def test_five_wrong_passwords_lock_the_account_even_against_the_right_password(team):
    for _ in range(5):
        client, response = sign_in("alice", "wrong")
        assert not signed_in(client)
    client, response = sign_in("alice", "pw-alice")
    assert response.status_code == 429
    assert not signed_in(client)
    body = response.content.decode()
    assert "Sign-in locked" in body and "even with the right password" in body and "15m 0s" in body


def test_a_lock_out_is_audited_once_however_many_tries_follow(team):
    for _ in range(5):
        sign_in("alice", "wrong")
    for _ in range(4):
        sign_in("alice", "pw-alice")
    events = list(AuditEvent.objects.filter(action="auth.lockout"))
    assert len(events) == 1
    assert events[0].after["username"] == "alice" and events[0].after["ip_address"] == "127.0.0.1"
    assert "alice" in events[0].detail


def test_guessing_one_username_from_many_addresses_still_locks_it(team):
    for i in range(5):
        sign_in("alice", "wrong", ip=f"10.0.0.{i + 1}")
    client, response = sign_in("alice", "pw-alice", ip="10.9.9.9")
    assert response.status_code == 429 and not signed_in(client)


def test_a_forwarded_for_header_does_not_give_a_guesser_fresh_addresses(team):
    for i in range(5):
        sign_in(f"nobody{i}", "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
    # Five failures from one socket address lock that address, whatever the header claimed.
    client, response = sign_in("bob", "pw-bob", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert response.status_code == 429 and not signed_in(client)


def test_a_lock_out_ends_after_the_cool_off(team):
    from axes.models import AccessAttempt

    for _ in range(5):
        sign_in("alice", "wrong")
    assert sign_in("alice", "pw-alice")[1].status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    client, response = sign_in("alice", "pw-alice")
    assert response.status_code == 302 and signed_in(client)


def test_four_failures_then_the_right_password_signs_in_and_starts_the_count_again(team):
    for _ in range(4):
        sign_in("alice", "wrong")
    client, _ = sign_in("alice", "pw-alice")
    assert signed_in(client)
    for _ in range(4):
        sign_in("alice", "wrong")
    client, _ = sign_in("alice", "pw-alice")
    assert signed_in(client)


def test_another_account_is_not_locked_by_someone_elses_failures_from_elsewhere(team):
    for _ in range(5):
        sign_in("alice", "wrong", ip="10.1.1.1")
    client, response = sign_in("bob", "pw-bob", ip="10.2.2.2")
    assert response.status_code == 302 and signed_in(client)


def test_the_admin_sign_in_is_throttled_too(team):
    for _ in range(5):
        Client().post("/admin/login/", {"username": "alice", "password": "wrong"})
    client, response = sign_in("alice", "pw-alice")
    assert response.status_code == 429


# --- browser security headers -----------------------------------------------------------------


def test_pages_carry_a_content_security_policy_without_inline_script_and_deny_framing(team, run):
    response = client_for(team.owner).get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert "unsafe" not in policy
    assert directives["frame-ancestors"] == "'none'"
    assert "ws:" in directives["connect-src"] and "wss:" in directives["connect-src"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


INLINE = [
    re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),  # a script element without src
    re.compile(r"\sstyle\s*=", re.I),  # a style attribute
    re.compile(r"<style\b", re.I),  # a style element
    re.compile(r"\son[a-z]+\s*=", re.I),  # an event handler attribute
    re.compile(r"javascript:", re.I),
    re.compile(r"\shx-on", re.I),  # htmx handlers are evaluated code
]


def test_no_template_or_static_script_holds_inline_script_or_style():
    offenders = []
    for path in [*(ROOT / "templates").rglob("*.html"), ROOT / "static" / "agentops" / "app.js"]:
        text = path.read_text()
        if path.suffix == ".js":
            # Markup the script inserts must obey the same policy.
            text = " ".join(re.findall(r"'(<[^']*)'", text))
        for pattern in INLINE:
            for match in pattern.finditer(text):
                offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)!r}")
    assert offenders == []


def test_every_page_a_member_sees_renders_without_inline_script_or_style(team, run, approval, agent):
    client = client_for(team.owner)
    pages = [
        "/",
        "/runs/",
        f"/runs/{run.pk}/",
        "/approvals/",
        "/pulls/",
        "/errors/",
        "/agents/",
        f"/agents/{agent.slug}/",
        f"/agents/{agent.slug}/edit/",
        "/spend/",
        "/audit/",
        "/drills/",
        "/tokens/",
        "/kill-switch/",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        for pattern in INLINE:
            assert not pattern.search(body), (url, pattern.pattern, pattern.search(body).group(0))
    login = Client().get("/login/").content.decode()
    assert not any(p.search(login) for p in INLINE)


# --- API tokens: scope and expiry --------------------------------------------------------------


def api(client: Client, method: str, path: str, token: str, body: dict | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if method == "GET":
        return client.get(path, **headers)
    return client.post(path, data=json.dumps(body or {}), content_type="application/json", **headers)


def test_a_read_token_of_an_admin_may_only_read(client, team, run, approval, agent):
    _, raw = api_token_create(user=team.owner, name="ro", scope="read")
    assert api(client, "GET", "/api/v1/runs/", raw).status_code == 200
    assert api(client, "GET", "/api/v1/kill-switch/", raw).status_code == 200
    for path, body in [
        ("/api/v1/runs/", {"agent": agent.slug, "input": "x"}),
        (f"/api/v1/runs/{run.pk}/cancel/", {}),
        (f"/api/v1/approvals/{approval.pk}/decide/", {"approve": True}),
        ("/api/v1/kill-switch/", {"engaged": True, "reason": "x"}),
    ]:
        response = api(client, "POST", path, raw, body)
        assert response.status_code == 403, path
        assert "scope" in response.json()["error"]
    approval.refresh_from_db()
    assert approval.status == "pending"
    assert not AuditEvent.objects.filter(action__startswith="kill_switch").exists()


def test_an_operate_token_decides_but_never_touches_the_kill_switch(client, team, approval):
    _, raw = api_token_create(user=team.owner, name="ops", scope="operate")
    assert api(client, "POST", "/api/v1/kill-switch/", raw, {"engaged": True, "reason": "x"}).status_code == 403
    from agentops.guardrails.models import ControlState

    assert not ControlState.objects.filter(engaged=True).exists()
    response = api(client, "POST", f"/api/v1/approvals/{approval.pk}/decide/", raw, {"approve": True})
    assert response.status_code == 200 and response.json()["status"] == "approved"


def test_an_admin_token_operates_the_kill_switch(client, team):
    _, raw = api_token_create(user=team.owner, name="adm", scope="admin")
    response = api(client, "POST", "/api/v1/kill-switch/", raw, {"engaged": True, "reason": "drill"})
    assert response.status_code == 200 and response.json()["engaged"] is True


def test_a_scope_never_widens_a_role(client, team):
    # An approver cannot give a token the admin scope, and a viewer not even operate.
    with pytest.raises(ScopeNotAllowed):
        api_token_create(user=team.approver, name="x", scope="admin")
    with pytest.raises(ScopeNotAllowed):
        api_token_create(user=team.viewer, name="x", scope="operate")
    with pytest.raises(ScopeNotAllowed):
        api_token_create(user=team.owner, name="x", scope="root")
    assert not ApiToken.objects.exists()


def test_an_expired_token_gets_a_401_with_a_json_error(client, team):
    token, raw = api_token_create(user=team.owner, name="old", scope="admin", expires_in_days=1)
    assert api(client, "GET", "/api/v1/runs/", raw).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api(client, "GET", "/api/v1/runs/", raw)
    assert response.status_code == 401
    assert response.json() == {"error": "this token has expired"}
    assert "invalid_token" in response["WWW-Authenticate"]


def test_a_revoked_token_gets_a_401_and_both_ends_are_audited(client, team):
    token, raw = api_token_create(user=team.approver, name="bot", scope="operate")
    api_token_revoke(token=token, actor=team.approver)
    response = api(client, "GET", "/api/v1/runs/", raw)
    assert response.status_code == 401 and "revoked" in response.json()["error"]
    created = AuditEvent.objects.get(action="api_token.create")
    assert created.after["scope"] == "operate" and created.actor_label == "bob"
    assert AuditEvent.objects.filter(action="api_token.revoke", target_id=str(token.pk)).count() == 1


def test_a_token_of_a_deactivated_user_stops_working(client, team):
    _, raw = api_token_create(user=team.owner, name="x", scope="read")
    team.owner.is_active = False
    team.owner.save()
    assert api(client, "GET", "/api/v1/runs/", raw).status_code == 401


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic YWxpY2U6cHc=", "Bearer aop_" + "x" * 5000, "Bearer aop_\x00", "bearer  "])
def test_a_malformed_authorization_header_is_a_401_not_a_crash(client, team, header):
    response = client.get("/api/v1/runs/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401 and "error" in response.json()


def test_only_the_hash_of_a_token_is_stored(team):
    from django.db import connection

    token, raw = api_token_create(user=team.owner, name="x", scope="read")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM dashboard_apitoken")
        row = cursor.fetchone()
    stored = " ".join(str(v) for v in row)
    assert raw not in stored and raw[10:] not in stored and raw[12:30] not in stored
    import hashlib

    assert token.key_hash == hashlib.sha256(raw.encode()).hexdigest()


def test_the_tokens_page_creates_a_token_with_a_scope_and_a_default_expiry_of_90_days(team):
    client = client_for(team.approver)
    page = client.get("/tokens/").content.decode()
    assert 'value="operate"' in page and 'value="admin"' not in page
    assert '<option value="90" selected>' in page
    response = client.post("/tokens/", {"name": "chatops", "scope": "operate", "expires_in_days": "90"})
    body = response.content.decode()
    raw = re.search(r'id="new-token">(aop_[^<]+)<', body).group(1)
    assert response["Cache-Control"] == "no-store"
    token = ApiToken.objects.get(user=team.approver)
    assert token.scope == "operate"
    assert abs((token.expires_at - timezone.now()) - timedelta(days=90)) < timedelta(minutes=1)
    # The secret is shown once: the next view of the page has only its prefix.
    assert raw not in client.get("/tokens/").content.decode()


def test_the_tokens_page_refuses_a_scope_above_the_role_and_an_unknown_expiry(team):
    client = client_for(team.viewer)
    for data in [
        {"name": "x", "scope": "admin", "expires_in_days": "90"},
        {"name": "x", "scope": "read", "expires_in_days": "100000"},
        {"name": "x", "scope": "read", "expires_in_days": "-1"},
    ]:
        response = client.post("/tokens/", data)
        assert response.status_code == 200 and 'id="new-token"' not in response.content.decode()
    assert not ApiToken.objects.exists()
