"""Chaos around the workers: Redis restarted without persistence, PostgreSQL restarted, Docker
unreachable. After each fault clears, every run ends, within two reaper periods of the reconciler
(plus the time to do the work), with nothing lost and nothing done twice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.db import connection

from tests.chaos.conftest import REAPER_S, SETTLE_S, chaos_env, enqueue_through, redis_broker, wait_all_final
from tests.chaos.scenario import TURNS, audit, chaos_agent, create_runs, statuses
from tests.support.processes import FINAL, ROOT, PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# django-q2's pusher sleeps 10 s after its broker fails before the sentinel respawns it.
PUSHER_RECOVERY_S = 12


def test_a_redis_restart_without_persistence_strands_no_run(redis_server, monkeypatch, clusters, q_name, tmp_path):
    from agentops.runs.services import run_create
    from tests.runs.test_durability import database_url

    enqueue_through(monkeypatch, redis_broker(redis_server.url, q_name))
    ledger = tmp_path / "effects"
    agent = chaos_agent(slug="chaos-redis-restart", ledger=str(ledger))
    env = chaos_env(database_url=database_url(), q_name=q_name, redis_url=redis_server.url)

    # Jobs waiting in Redis (no cluster yet) when it restarts: they are gone.
    lost = create_runs(agent=agent, count=4)
    redis_server.restart()
    # Runs created while Redis is down: kept, queued, and the caller is told they were not handed off.
    redis_server.kill()
    refused = [run_create(agent=agent, input=f"while redis is down {i}", actor="chaos") for i in range(3)]
    assert [r.dispatched for r in refused] == [False] * 3
    redis_server.start()
    cluster = clusters(env)
    # And a restart while the cluster works through jobs.
    busy = create_runs(agent=agent, count=5)
    # Restart Redis while the cluster works through jobs: once it has taken one (a fixed sleep could
    # land in its start-up, which is not this scenario: a service manager restarts a cluster that failed to start).
    started_work = time.monotonic() + 60
    while all(s == "queued" for s in statuses(busy).values()) and time.monotonic() < started_work:
        time.sleep(0.2)
    time.sleep(0.5)
    redis_server.restart(down_s=1.0)
    cleared = time.monotonic()

    run_ids = lost + [r.pk for r in refused] + busy
    wait_all_final(run_ids, timeout=2 * REAPER_S + PUSHER_RECOVERY_S + SETTLE_S, cluster_logs=[cluster.log_path])
    settle = time.monotonic() - cleared
    report = audit(run_ids, str(ledger))
    log = cluster.log_path.read_text()
    report["reconciled"] = {"redispatched": log.count("without a live job"), "handed_over": log.count("lost its worker")}
    print(f"redis restart: terminal {settle:.1f}s after Redis was back; {report}")
    assert report["problems"] == [], report
    assert report["statuses"] == {"succeeded": len(run_ids)}, report
    assert len(run_ids) * TURNS - report["interrupted"] <= report["effects"] <= len(run_ids) * TURNS
    assert report["reconciled"]["redispatched"] >= len(lost) + len(refused), "the stranded runs ran without the reconciler?"
    # 12 runs of ~1 s of work on 2 workers, after the pusher's recovery and two reaper periods.
    assert settle < 2 * REAPER_S + PUSHER_RECOVERY_S + 20, f"{settle:.1f}s"


def _manage(env: dict[str, str], code: str, timeout: float = 120) -> str:
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _chaos_db_statuses(url: str, run_ids: list[int]) -> dict[int, str]:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return dict(conn.execute("SELECT id, status FROM runs_run WHERE id = ANY(%s)", (run_ids,)).fetchall())
    except psycopg.OperationalError:
        return {}


def test_a_postgresql_restart_strands_no_run_and_fails_none(redis_server, clusters, q_name, require_real):
    if not (PostgresServer.BIN / "initdb").exists():
        require_real("PostgreSQL 15 server binaries", f"{PostgresServer.BIN} not found")
    # Not under pytest's tmp dir: the postgres user must be able to reach its data directory.
    workdir = Path(tempfile.mkdtemp(prefix="agentops-chaos-pg-"))
    ledger = workdir / "effects"
    pg = PostgresServer(workdir, port=5440)
    try:
        pg.init()
        # The schema (and migration state) of this session's test database, copied in a second.
        test_db = connection.settings_dict["NAME"]
        dump = subprocess.run(
            ["pg_dump", "-h", "127.0.0.1", "-p", str(connection.settings_dict["PORT"] or 5432), "-U", "postgres", "--no-owner", "--schema-only", test_db],
            capture_output=True,
            check=True,
            timeout=60,
        )
        migrations = subprocess.run(
            [
                "pg_dump",
                "-h",
                "127.0.0.1",
                "-p",
                str(connection.settings_dict["PORT"] or 5432),
                "-U",
                "postgres",
                "--data-only",
                "-t",
                "django_migrations",
                "-t",
                "django_content_type",
                "-t",
                "auth_permission",
                test_db,
            ],
            capture_output=True,
            check=True,
            timeout=60,
        )
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", pg.url], input=dump.stdout + migrations.stdout, capture_output=True, check=True, timeout=60)
        ledger.touch()
        env = chaos_env(database_url=pg.url, q_name=q_name, redis_url=redis_server.url)
        run_ids = json.loads(
            _manage(
                env,
                (
                    "import json; from tests.chaos.scenario import chaos_agent, create_runs; "
                    f"agent = chaos_agent(slug='chaos-pg', ledger={str(ledger)!r}); "
                    "print(json.dumps(create_runs(agent=agent, count=10)))"
                ),
            )
        )
        cluster = clusters(env)
        deadline = time.monotonic() + 60
        while len(ledger.read_text().splitlines()) < 3:
            assert time.monotonic() < deadline, cluster.log_path.read_text()[-3000:]
            time.sleep(0.1)
        # A crash (no clean shutdown), down long enough for workers to give jobs up.
        pg.stop("immediate")
        time.sleep(8)
        pg.start()
        cleared = time.monotonic()
        while True:
            current = _chaos_db_statuses(pg.url, run_ids)
            if len(current) == len(run_ids) and all(s in FINAL for s in current.values()):
                break
            assert time.monotonic() - cleared < 2 * REAPER_S + PUSHER_RECOVERY_S + SETTLE_S, f"not terminal: {current}\n{cluster.log_path.read_text()[-4000:]}"
            time.sleep(0.3)
        settle = time.monotonic() - cleared
        report = json.loads(_manage(env, f"from tests.chaos.scenario import audit_json; print(audit_json({run_ids!r}, {str(ledger)!r}))"))
        log = cluster.log_path.read_text()
        report["reconciled"] = {
            "redispatched": log.count("without a live job"),
            "handed_over": log.count("lost its worker"),
            "db_unavailable": log.count("database unavailable"),
        }
        print(f"postgres restart: terminal {settle:.1f}s after PostgreSQL was back; {report}")
        assert report["problems"] == [], report
        assert report["statuses"] == {"succeeded": len(run_ids)}, report
        assert len(run_ids) * TURNS - report["interrupted"] <= report["effects"] <= len(run_ids) * TURNS
        assert settle < 2 * REAPER_S + PUSHER_RECOVERY_S + 25, f"{settle:.1f}s"
    finally:
        try:
            pg.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def test_an_unreachable_docker_engine_ends_the_run_as_an_infrastructure_failure_not_a_loop(make_agent, start_run, settings, monkeypatch, tmp_path):
    from agentops.forges.local import local_repo_create
    from agentops.runs.models import StepKind

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    settings.AGENTOPS_SANDBOX_BACKEND = "docker"
    settings.AGENTOPS_INFRA_BACKOFF_S = 0.05
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text("print('hi')\n")
    local_repo_create("app", source)
    marker = tmp_path / "ran-unsandboxed"
    # The model keeps asking for the same command, as a model facing a broken tool does.
    script = [{"text": "run it", "tool_calls": [{"name": "run_command", "arguments": {"command": f"touch {marker}"}}]} for _ in range(12)]
    config = {"planner": "scripted", "script": [*script, {"text": "done"}], "repository": "app", "forge": "local"}
    agent = make_agent(grants={"run_command": {}}, trust_phase=2, config=config)
    started = time.monotonic()
    run = start_run(agent, "fix it")
    elapsed = time.monotonic() - started
    print(f"docker unreachable: {run.status} after {elapsed:.1f}s: {run.status_reason}")
    assert run.status in FINAL
    assert "loop" not in run.status_reason.lower(), run.status_reason
    assert "infrastructure" in run.status_reason.lower(), run.status_reason
    assert not run.steps.filter(kind=StepKind.GUARDRAIL, payload__guard="loop_detector").exists()
    assert run.steps.filter(kind=StepKind.ERROR, payload__kind="infrastructure").exists()
    assert run.steps.filter(kind=StepKind.TOOL_CALL).count() < len(script), "it stopped before the model gave up"
    assert not marker.exists(), "a command ran outside a sandbox"
