"""Live views: refused without a role, steps in order, catch-up after a drop, and exactly which
live events an action emits."""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from helpers_dashboard import make_approval, make_run

from agentops.runs.models import RunStatus
from agentops.runs.steps import step_record
from dashboard.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.AGENTOPS_LIVE_POLL_S = 0  # only the layer and reconnects, unless a test turns polling on
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def communicator(path: str, user) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    comm.scope["user"] = user
    return comm


@contextmanager
def dropped_broadcasts():
    """The channel layer loses every message (a Redis blip): only the database remains."""
    with mock.patch("agentops.live.broadcast"):
        yield


def record(run, n: int, start: int = 0):
    return database_sync_to_async(lambda: [step_record(run=run, kind="observation", payload={"output": f"out {start + i}"}).seq for i in range(n)])()


def test_an_anonymous_visitor_is_refused(run):
    async def scenario():
        comm = communicator(f"/ws/runs/{run.pk}/", AnonymousUser())
        connected, _ = await comm.connect()
        assert not connected
        comm = communicator("/ws/overview/", AnonymousUser())
        connected, _ = await comm.connect()
        assert not connected

    async_to_sync(scenario)()


def test_a_signed_in_outsider_is_refused(team, run):
    async def scenario():
        connected, _ = await communicator(f"/ws/runs/{run.pk}/", team.outsider).connect()
        assert not connected

    async_to_sync(scenario)()


def test_an_unknown_run_is_refused(team):
    async def scenario():
        connected, _ = await communicator("/ws/runs/999999/", team.viewer).connect()
        assert not connected

    async_to_sync(scenario)()


def test_a_viewer_gets_existing_steps_then_new_ones_in_order(team, run):
    async def scenario():
        comm = communicator(f"/ws/runs/{run.pk}/", team.viewer)
        connected, _ = await comm.connect()
        assert connected
        first = await comm.receive_json_from()
        assert [s["seq"] for s in first["steps"]] == [1, 2, 3]
        assert 'id="step-3"' in first["steps"][-1]["html"] and 'id="run-summary"' in first["summary_html"]
        await record(run, 5)
        seen = []
        while len(seen) < 5:
            message = await comm.receive_json_from(timeout=3)
            seen += [s["seq"] for s in message["steps"]]
        assert seen == [4, 5, 6, 7, 8]
        assert await comm.receive_nothing(timeout=0.2)
        await comm.disconnect()

    async_to_sync(scenario)()


def test_a_reconnect_with_the_last_seq_catches_up_what_the_layer_dropped(team, run):
    async def scenario():
        comm = communicator(f"/ws/runs/{run.pk}/?after=3", team.viewer)
        assert (await comm.connect())[0]
        assert await comm.receive_nothing(timeout=0.1)  # nothing after seq 3 yet
        with dropped_broadcasts():
            await record(run, 4)
        assert await comm.receive_nothing(timeout=0.3)  # the layer lost all four
        await comm.disconnect()

        again = communicator(f"/ws/runs/{run.pk}/?after=3", team.viewer)
        assert (await again.connect())[0]
        message = await again.receive_json_from()
        assert [s["seq"] for s in message["steps"]] == [4, 5, 6, 7]
        await again.disconnect()

    async_to_sync(scenario)()


def test_the_next_message_also_carries_the_steps_whose_messages_were_dropped(team, run):
    async def scenario():
        comm = communicator(f"/ws/runs/{run.pk}/?after=3", team.viewer)
        assert (await comm.connect())[0]
        with dropped_broadcasts():
            await record(run, 2)
        await record(run, 1)
        message = await comm.receive_json_from()
        assert [s["seq"] for s in message["steps"]] == [4, 5, 6]
        await comm.disconnect()

    async_to_sync(scenario)()


def test_polling_finds_steps_written_by_another_process(team, run, settings):
    settings.AGENTOPS_LIVE_POLL_S = 0.1

    async def scenario():
        comm = communicator(f"/ws/runs/{run.pk}/?after=3", team.viewer)
        assert (await comm.connect())[0]
        with dropped_broadcasts():
            await record(run, 2)
        message = await comm.receive_json_from(timeout=2)
        assert [s["seq"] for s in message["steps"]] == [4, 5]
        await comm.disconnect()

    async_to_sync(scenario)()


def test_the_consumer_never_writes(team, run):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    async def scenario():
        comm = communicator(f"/ws/runs/{run.pk}/", team.viewer)
        assert (await comm.connect())[0]
        await comm.receive_json_from()
        await comm.disconnect()

    with CaptureQueriesContext(connection) as queries:
        async_to_sync(scenario)()
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}]
    assert writes == []


# --- exactly which live events an action emits -------------------------------------------------


@pytest.fixture
def emitted():
    sent: list[tuple[str, dict]] = []
    with (
        mock.patch("agentops.live.broadcast", side_effect=lambda group, message: sent.append((group, message))),
        mock.patch("agentops.guardrails.killswitch.broadcast", side_effect=lambda group, message: sent.append((group, message))),
    ):
        yield sent


def test_recording_a_step_emits_one_run_event_and_one_overview_event(run, emitted):
    step = step_record(run=run, kind="tool_call", payload={"tool": "read_file"})
    assert emitted == [
        (f"run-{run.pk}", {"type": "step.created", "run_id": run.pk, "seq": step.seq, "kind": "tool_call"}),
        ("overview", {"type": "run.changed", "run_id": run.pk, "seq": step.seq, "kind": "tool_call"}),
    ]


def test_engaging_the_kill_switch_with_nothing_running_emits_exactly_one_event(team, emitted):
    from agentops.guardrails.killswitch import kill_switch_engage

    kill_switch_engage(actor=team.owner, reason="drill")
    assert emitted == [("overview", {"type": "kill_switch.changed", "engaged": True})]


def test_engaging_the_kill_switch_emits_a_status_step_per_halted_run_then_the_switch(team, agent, emitted):
    from agentops.guardrails.killswitch import kill_switch_engage

    waiting = make_run(agent, status=RunStatus.WAITING_APPROVAL)
    queued = make_run(agent, status=RunStatus.QUEUED)
    emitted.clear()
    kill_switch_engage(actor=team.owner, reason="incident")
    kinds = [(group, message["type"], message.get("kind")) for group, message in emitted]
    assert sorted(kinds[:4]) == sorted(
        [
            (f"run-{waiting.pk}", "step.created", "status"),
            ("overview", "run.changed", "status"),
            (f"run-{queued.pk}", "step.created", "status"),
            ("overview", "run.changed", "status"),
        ]
    )
    assert kinds[4:] == [("overview", "kill_switch.changed", None)]


def test_approving_emits_one_decision_step(team, run, emitted):
    from agentops.approvals.services import approval_decide

    approval = make_approval(run)
    emitted.clear()
    with mock.patch("agentops.runs.services.run_enqueue"):
        approval_decide(approval=approval, actor=team.approver, approve=True)
    assert [(g, m["type"], m["kind"]) for g, m in emitted] == [
        (f"run-{run.pk}", "step.created", "approval_decision"),
        ("overview", "run.changed", "approval_decision"),
    ]


# --- the overview socket and the full ASGI stack -----------------------------------------------


def test_the_overview_socket_says_when_the_kill_switch_changes(team):
    from agentops.guardrails.killswitch import kill_switch_engage

    async def scenario():
        comm = communicator("/ws/overview/", team.viewer)
        assert (await comm.connect())[0]
        assert await comm.receive_json_from() == {"type": "kill_switch", "engaged": False}
        await database_sync_to_async(kill_switch_engage)(actor=team.owner, reason="stop")
        assert await comm.receive_json_from(timeout=3) == {"type": "kill_switch", "engaged": True}
        await comm.disconnect()

    async_to_sync(scenario)()


def test_the_real_asgi_stack_authenticates_by_session_and_checks_the_origin(team, run):
    from django.conf import settings as django_settings
    from django.test import Client

    from agentops.asgi import application

    client = Client()
    client.force_login(team.viewer)
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"

    async def scenario():
        good = WebsocketCommunicator(
            application, f"/ws/runs/{run.pk}/", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie.encode())]
        )
        assert (await good.connect())[0]
        assert [s["seq"] for s in (await good.receive_json_from())["steps"]] == [1, 2, 3]
        await good.disconnect()
        evil = WebsocketCommunicator(
            application, f"/ws/runs/{run.pk}/", headers=[(b"origin", b"http://evil.example"), (b"host", b"localhost"), (b"cookie", cookie.encode())]
        )
        assert not (await evil.connect())[0]
        anonymous = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
        assert not (await anonymous.connect())[0]

    async_to_sync(scenario)()
