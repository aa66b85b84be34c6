"""The production shape's Redis parts, for real: the channel layer across processes, and the
django-q2 Redis broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from agentops.runs.models import Run
from tests.runs.test_durability import database_url
from tests.support.processes import FINAL, qcluster, wait_for_status

ROOT = Path(__file__).resolve().parents[1]
REDIS = os.environ.get("AGENTOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_url(require_real) -> str:
    host, port = REDIS.split("//")[1].split("/")[0].split(":")
    try:
        socket.create_connection((host, int(port)), 2).close()
    except OSError as exc:
        require_real("Redis", f"{REDIS}: {exc}")
    return REDIS


def subprocess_env(redis_url: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "AGENTOPS_CHANNEL_PREFIX": prefix,
        "AGENTOPS_TOOL_MODULES": "tests.support.tools",
    }


def test_steps_written_by_a_worker_process_reach_a_websocket_through_redis(make_agent, settings, redis_url, django_user_model):
    from dashboard.roles import ensure_roles
    from dashboard.routing import websocket_urlpatterns

    prefix = f"agentops-test-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url], "prefix": prefix}}}
    settings.AGENTOPS_LIVE_POLL_S = 0  # no database polling: only Redis can deliver
    channel_layers.backends.clear()
    viewer = django_user_model.objects.create_user("viv", password="pw")
    viewer.groups.add(ensure_roles()["viewer"])
    script = [{"text": f"t{i}", "tool_calls": [{"name": "test_echo", "arguments": {"text": str(i)}}]} for i in range(3)] + [{"text": "done"}]
    agent = make_agent(script=script, grants={"test_echo": {}})
    from agentops.runs.services import run_create

    run = run_create(agent=agent, input="go", enqueue=False)

    async def scenario() -> list[int]:
        comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/")
        comm.scope["user"] = viewer
        connected, _ = await comm.connect()
        assert connected
        first = await comm.receive_json_from(timeout=5)
        seen = [s["seq"] for s in first["steps"]]
        worker = subprocess.Popen([sys.executable, "manage.py", "agentops", "execute", str(run.pk)], cwd=ROOT, env=subprocess_env(redis_url, prefix))
        try:
            while len(seen) < 10:
                message = await comm.receive_json_from(timeout=15)
                seen += [s["seq"] for s in message.get("steps", [])]
        finally:
            worker.wait(30)
            await comm.disconnect()
        return seen

    try:
        seen = async_to_sync(scenario)()
    finally:
        channel_layers.backends.clear()
    total = Run.objects.get(pk=run.pk).steps.count()
    # Echo-only: the run ends, honestly, as "changed nothing" (not "succeeded").
    assert Run.objects.get(pk=run.pk).outcome == "no_change"
    assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 10 and len(seen) <= total


def test_the_django_q2_redis_broker_carries_runs_to_a_worker(make_agent, redis_url, tmp_path):
    prefix = f"agentops-test-{uuid.uuid4().hex[:8]}"
    env = subprocess_env(redis_url, prefix)
    env["AGENTOPS_Q_NAME"] = prefix  # a queue of its own on the shared Redis
    script = [{"text": "w", "tool_calls": [{"name": "test_append", "arguments": {"text": "via redis"}}]}, {"text": "done"}]
    agent = make_agent(script=script, grants={"test_append": {"path": str(tmp_path / "effects")}})
    log = tmp_path / "qcluster.log"
    with qcluster(env, log):
        # Enqueued from another process through the Redis broker, exactly as the web server would.
        subprocess.run([sys.executable, "manage.py", "agentops", "run", agent.slug, "--input", "go"], cwd=ROOT, env=env, check=True, capture_output=True)
        run = Run.objects.get(agent=agent)
        status = wait_for_status(run.pk, FINAL, timeout=60, what="the Redis broker never delivered the run", log_path=log)
        assert status == "succeeded"
        assert (tmp_path / "effects").read_text().count("via redis") == 1


def test_an_idle_run_websocket_stays_open_for_30_seconds_through_daphne_and_redis(make_agent, redis_url, tmp_path, client, django_user_model):
    """redis-py >= 8 times out every read after 5 s; channels_redis blocks 5 s in BZPOPMIN for a
    consumer's next message. Unless the layer's read timeout outlasts that wait, daphne closes
    every websocket with 1011 after ~6 s of quiet."""
    import asyncio
    import time

    import websockets

    from agentops.runs.services import run_create
    from dashboard.roles import ensure_roles
    from tests.support.web import daphne

    hold_s = float(os.environ.get("AGENTOPS_TEST_WS_HOLD_S", "30"))
    viewer = django_user_model.objects.create_user("ivy", password="pw")
    viewer.groups.add(ensure_roles()["viewer"])
    client.force_login(viewer)
    session = client.cookies["sessionid"].value
    run = run_create(agent=make_agent(script=[{"text": "done"}]), input="go", enqueue=False)
    prefix = f"agentops-test-{uuid.uuid4().hex[:8]}"
    env = {**subprocess_env(redis_url, prefix), "AGENTOPS_LIVE_POLL_S": "0", "LOG_LEVEL": "WARNING"}
    log = tmp_path / "daphne.log"

    async def hold(base: str) -> tuple[list[str], float]:
        events: list[str] = []
        url = base.replace("http://", "ws://") + f"/ws/runs/{run.pk}/"
        async with websockets.connect(url, origin=base, additional_headers={"Cookie": f"sessionid={session}"}, ping_interval=None) as ws:
            started = time.monotonic()
            while (left := hold_s - (time.monotonic() - started)) > 0:
                try:
                    events.append(await asyncio.wait_for(ws.recv(), timeout=left))
                except TimeoutError:
                    break
                except websockets.ConnectionClosed as exc:
                    events.append(f"closed {exc.rcvd.code if exc.rcvd else None} after {time.monotonic() - started:.1f}s")
                    break
            held = time.monotonic() - started
            # Still open: a message sent now gets its answer (the connection is not half-dead).
            if not any(e.startswith("closed") for e in events):
                await asyncio.wait_for(await ws.ping(), timeout=5)
        return events, held

    with daphne(env, log) as base:
        events, held = async_to_sync(hold)(base)
    closes = [e for e in events if e.startswith("closed")]
    assert closes == [], f"{closes}\n{log.read_text()[-2000:]}"
    assert held >= hold_s - 0.5
    assert "TimeoutError" not in log.read_text()
