"""Settings helpers fail loudly on bad values, naming the variable."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from agentops.conf import database_config, env_bool, env_choice, env_decimal, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parents[1]


def test_env_bool_accepts_the_usual_spellings_and_rejects_others(monkeypatch):
    monkeypatch.setenv("X", "yes")
    assert env_bool("X") is True
    monkeypatch.setenv("X", "off")
    assert env_bool("X") is False
    monkeypatch.setenv("X", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X must be one of"):
        env_bool("X")


def test_env_int_rejects_garbage_and_values_below_the_minimum(monkeypatch):
    monkeypatch.setenv("N", "12")
    assert env_int("N", 1) == 12
    monkeypatch.setenv("N", "twelve")
    with pytest.raises(ImproperlyConfigured, match="N must be an integer"):
        env_int("N", 1)
    monkeypatch.setenv("N", "0")
    with pytest.raises(ImproperlyConfigured, match="N must be >= 1"):
        env_int("N", 1, minimum=1)


def test_env_decimal_rejects_negative_and_non_finite(monkeypatch):
    monkeypatch.setenv("D", "2.5")
    assert env_decimal("D", "0") == Decimal("2.5")
    for bad in ("-1", "nan", "abc"):
        monkeypatch.setenv("D", bad)
        with pytest.raises(ImproperlyConfigured):
            env_decimal("D", "0")


def test_env_str_required_and_lists_and_choices(monkeypatch):
    monkeypatch.delenv("S", raising=False)
    with pytest.raises(ImproperlyConfigured, match="S must be set"):
        env_str("S", required=True)
    monkeypatch.setenv("L", "a.example, b.example,,")
    assert env_list("L") == ["a.example", "b.example"]
    monkeypatch.setenv("C", "kubernetes")
    with pytest.raises(ImproperlyConfigured, match="C must be one of docker"):
        env_choice("C", ("docker", "bubblewrap"), "docker")


def test_database_url_defaults_to_sqlite_and_parses_postgres(tmp_path):
    assert database_config(None, default_sqlite_path=str(tmp_path / "db.sqlite3"))["ENGINE"] == "django.db.backends.sqlite3"
    pg = database_config("postgres://u:p@db.example:5433/agentops", default_sqlite_path="x")
    assert pg["ENGINE"] == "django.db.backends.postgresql" and pg["PORT"] == 5433 and pg["NAME"] == "agentops"


def test_database_url_with_an_unsupported_scheme_is_an_error():
    with pytest.raises(ImproperlyConfigured, match="mysql"):
        database_config("mysql://root@localhost/x", default_sqlite_path="x")


def _load_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "DJANGO_SETTINGS_MODULE": "agentops.settings", "AGENTOPS_DATA_DIR": "/tmp/agentops-settings-test", **env}
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_secret_key_is_required_unless_debug():
    result = _load_settings({})
    assert result.returncode != 0 and "SECRET_KEY must be set unless DEBUG=1" in result.stderr
    assert _load_settings({"DEBUG": "1"}).returncode == 0
    assert _load_settings({"SECRET_KEY": "x" * 50}).returncode == 0


def test_a_bad_redis_url_stops_start_up():
    result = _load_settings({"DEBUG": "1", "REDIS_URL": "localhost:6379"})
    assert result.returncode != 0 and "REDIS_URL must start with redis://" in result.stderr


def test_redis_url_switches_the_channel_layer_and_the_broker():
    code = "import django; django.setup(); from django.conf import settings as s; print(s.CHANNEL_LAYERS['default']['BACKEND'], 'redis' in s.Q_CLUSTER, 'orm' in s.Q_CLUSTER)"
    clean = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "DJANGO_SETTINGS_MODULE": "agentops.settings",
        "DEBUG": "1",
        "AGENTOPS_DATA_DIR": "/tmp/agentops-settings-test",
    }
    with_redis = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, "REDIS_URL": "redis://127.0.0.1:6379/0"}, capture_output=True, text=True)
    assert with_redis.stdout.split() == ["channels_redis.core.RedisChannelLayer", "True", "False"], with_redis.stderr
    without = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert without.stdout.split() == ["channels.layers.InMemoryChannelLayer", "False", "True"], without.stderr


def test_schema_commands_run_without_a_secret_key_but_others_do_not():
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "AGENTOPS_DATA_DIR": "/tmp/agentops-settings-test"}
    check = subprocess.run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert check.returncode == 0 and "No changes detected" in check.stdout, check.stderr
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--plan"], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert migrate.returncode != 0 and "SECRET_KEY must be set unless DEBUG=1" in migrate.stderr


def _settings_json(env: dict[str, str], names: list[str]) -> dict:
    import json

    code = (
        "import json, django; django.setup(); from django.conf import settings as s; print(json.dumps({n: getattr(s, n, None) for n in %r}, default=str))"
        % names
    )
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "DJANGO_SETTINGS_MODULE": "agentops.settings", "AGENTOPS_DATA_DIR": "/tmp/agentops-settings-test", **env}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


SECURITY = [
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "X_FRAME_OPTIONS",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "SESSION_COOKIE_HTTPONLY",
    "CONTENT_SECURITY_POLICY",
    "MIDDLEWARE",
]


def test_production_settings_make_cookies_secure_and_send_hsts_and_a_strict_policy():
    got = _settings_json({"SECRET_KEY": "x" * 50}, SECURITY)
    assert got["SESSION_COOKIE_SECURE"] is True and got["CSRF_COOKIE_SECURE"] is True and got["SESSION_COOKIE_HTTPONLY"] is True
    assert got["SECURE_HSTS_SECONDS"] >= 31_536_000 and got["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert got["X_FRAME_OPTIONS"] == "DENY" and got["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert got["SECURE_REFERRER_POLICY"] == "same-origin"
    directives = got["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]
    assert directives["script-src"] == ["'self'"] and directives["style-src"] == ["'self'"]
    assert not any("unsafe" in v for values in directives.values() for v in values)
    assert "csp.middleware.CSPMiddleware" in got["MIDDLEWARE"] and got["MIDDLEWARE"][-1] == "axes.middleware.AxesMiddleware"


def test_the_embedded_demo_turns_secure_cookies_off_for_plain_http_on_loopback():
    got = _settings_json({"SECRET_KEY": "x" * 50, "AGENTOPS_SECURE_COOKIES": "0"}, SECURITY)
    assert got["SESSION_COOKIE_SECURE"] is False and got["CSRF_COOKIE_SECURE"] is False
    # Everything else stays as strict as in production.
    assert got["X_FRAME_OPTIONS"] == "DENY" and got["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]["script-src"] == ["'self'"]
    result = _load_settings({"SECRET_KEY": "x" * 50, "AGENTOPS_SECURE_COOKIES": "sometimes"})
    assert result.returncode != 0 and "AGENTOPS_SECURE_COOKIES must be one of" in result.stderr


def test_the_redis_channel_layer_reads_longer_than_its_blocking_receive_waits():
    from channels_redis.core import RedisChannelLayer

    got = _settings_json({"DEBUG": "1", "REDIS_URL": "redis://127.0.0.1:6379/0"}, ["CHANNEL_LAYERS"])
    host = got["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"][0]
    assert host["address"] == "redis://127.0.0.1:6379/0"
    # A finite timeout (a dead Redis is noticed) that outlasts BZPOPMIN's wait (no idle 1011s).
    assert RedisChannelLayer.brpop_timeout < host["socket_timeout"] < 300
    result = _load_settings({"DEBUG": "1", "REDIS_URL": "redis://x/0", "AGENTOPS_CHANNEL_REDIS_SOCKET_TIMEOUT_S": "5"})
    assert result.returncode != 0 and "AGENTOPS_CHANNEL_REDIS_SOCKET_TIMEOUT_S must be >= 10" in result.stderr
