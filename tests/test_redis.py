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
    assert Run.objects.get(pk=run.pk).status == "succeeded"
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
