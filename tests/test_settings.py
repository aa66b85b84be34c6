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
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "DJANGO_SETTINGS_MODULE": "agentops.settings", "DEBUG": "1", "AGENTOPS_DATA_DIR": "/tmp/agentops-settings-test"}
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
