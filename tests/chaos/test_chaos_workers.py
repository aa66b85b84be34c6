"""Chaos: SIGKILL of django-q2 cluster processes at random points, on the Redis broker and on the ORM
broker, across 20 runs with real side effects. Nothing is lost, nothing happens twice."""

from __future__ import annotations

import time

import pytest

from tests.chaos.conftest import REAPER_S, SETTLE_S, chaos_env, enqueue_through, orm_broker, redis_broker, wait_all_final
from tests.chaos.scenario import TURNS, audit, chaos_agent, create_runs, statuses
from tests.runs.test_durability import database_url
from tests.support.processes import FINAL

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUNS = 20
FAULTS = 5


@pytest.mark.parametrize("broker_kind", ["redis", "orm"])
def test_sigkill_of_cluster_processes_at_random_points_loses_no_run_and_repeats_no_side_effect(
    broker_kind, request, monkeypatch, clusters, rng, q_name, tmp_path
):
    redis_url = None
    if broker_kind == "redis":
        redis_url = request.getfixturevalue("redis_server").url
        enqueue_through(monkeypatch, redis_broker(redis_url, q_name))
    else:
        enqueue_through(monkeypatch, orm_broker(q_name))
    ledger = tmp_path / "effects"
    agent = chaos_agent(slug=f"chaos-{broker_kind}", ledger=str(ledger))
    env = chaos_env(database_url=database_url(), q_name=q_name, redis_url=redis_url)
    cluster = clusters(env)
    run_ids = create_runs(agent=agent, count=RUNS)

    faults: list[str] = []
    last_fault = time.monotonic()
    deadline = time.monotonic() + 90
    while len(faults) < FAULTS and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 2.5))
        if cluster.supervise():
            faults.append("restarted by its supervisor")
        if all(s in FINAL for s in statuses(run_ids).values()):
            break
        if rng.random() < 0.5:
            cluster.kill_all()
            faults.append("cluster")
            time.sleep(rng.uniform(0, 1.0))
            cluster.start()
        else:
            victim = cluster.kill_one(rng)
            if victim is None:  # the cluster is still starting: nothing to kill yet
                continue
            faults.append(f"process {victim}")
        last_fault = time.monotonic()

    settle = wait_all_final(run_ids, timeout=SETTLE_S, cluster_logs=[cluster.log_path], supervised=[cluster])
    report = audit(run_ids, str(ledger))
    log = cluster.log_path.read_text()
    report["reconciled"] = {"redispatched": log.count("without a live job"), "handed_over": log.count("lost its worker")}
    print(f"{broker_kind}: faults {faults}; terminal {settle:.1f}s after the last one; {report}")
    assert faults, "no fault was injected: the runs finished before the first one"
    assert report["problems"] == [], report
    assert report["statuses"] == {"succeeded": RUNS}, report
    # Exactly once, except a call a kill landed inside: its outcome is unknown and it is never repeated.
    assert RUNS * TURNS - report["interrupted"] <= report["effects"] <= RUNS * TURNS, "each side effect happens once, or is reported in doubt"
    assert time.monotonic() - last_fault < 90 + SETTLE_S + 2 * REAPER_S
