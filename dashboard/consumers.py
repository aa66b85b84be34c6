"""Live views. Thin: join a group, read from the database, send; never write.

The channel layer only says "something changed". What is sent always comes from the database by
seq, so a dropped message, a Redis hiccup or a reconnect loses nothing: the next message, the
periodic check, or the reconnect (`?after=<last seq>`) catches up. The periodic check also carries
the embedded default, where the worker runs in another process than the in-memory layer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from dashboard import access, selectors, timeline


def poll_interval() -> float:
    configured = getattr(settings, "AGENTOPS_LIVE_POLL_S", None)
    if configured is not None:
        return float(configured)
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    # In-memory: the worker's broadcasts never reach this process, so check often. Redis: only a safety net.
    return 1.0 if "InMemory" in backend else 10.0


class _LiveConsumer(AsyncJsonWebsocketConsumer):
    group: str = ""

    async def _allowed(self) -> bool:
        user = self.scope.get("user")
        return user is not None and await database_sync_to_async(access.is_member)(user)

    async def _start_polling(self) -> None:
        interval = poll_interval()
        if interval > 0:
            self._poller = asyncio.ensure_future(self._poll(interval))

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.on_poll()

    async def on_poll(self) -> None:  # pragma: no cover - overridden
        pass

    async def disconnect(self, code: int) -> None:
        poller = getattr(self, "_poller", None)
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)


class RunConsumer(_LiveConsumer):
    """ws/runs/<id>/?after=<seq>: the run's steps after seq, in order, then every new one.

    Sends {"type": "steps", "steps": [{"seq", "kind", "html"}], "last_seq", "run": {...},
    "summary_html"}; the browser appends the rows and replaces the run header.
    """

    async def connect(self) -> None:
        if not await self._allowed():
            await self.close(code=4403)
            return
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        if not await self._run_exists():
            await self.close(code=4404)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            self.last_sent = max(0, int(query.get("after", ["0"])[0]))
        except ValueError:
            self.last_sent = 0
        self.group = f"run-{self.run_id}"
        # Join before reading, so a step committed in between is either read now or announced later.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_new_steps()
        await self._start_polling()

    @database_sync_to_async
    def _run_exists(self) -> bool:
        return selectors.run_exists(self.run_id)

    async def step_created(self, event: dict[str, Any]) -> None:
        if int(event.get("seq", 0)) > self.last_sent:
            await self.send_new_steps()

    async def on_poll(self) -> None:
        if await self._newest_seq() > self.last_sent:
            await self.send_new_steps()

    @database_sync_to_async
    def _newest_seq(self) -> int:
        return selectors.newest_step_seq(self.run_id)

    async def send_new_steps(self) -> None:
        while True:
            message = await self._read_after(self.last_sent)
            if message is None:
                return
            self.last_sent = message["last_seq"]
            await self.send_json(message)
            if len(message["steps"]) < timeline.MAX_CATCH_UP:
                return

    @database_sync_to_async
    def _read_after(self, after: int) -> dict[str, Any] | None:
        steps = timeline.steps_window(self.run_id, after=after, limit=timeline.MAX_CATCH_UP)
        if not steps:
            return None
        run = selectors.run_with_policy(self.run_id)
        spans = timeline.live_spans(run, steps)

        return {
            "type": "steps",
            "run_id": self.run_id,
            "steps": [
                {
                    "seq": span.seq,
                    "kind": span.kind,
                    "call_id": span.call_id,
                    "html": render_to_string("dashboard/run_detail.html#step", {"span": span, "run": run}),
                }
                for span in spans
            ],
            "last_seq": steps[-1].seq,
            "run": {"status": run.status, "status_reason": run.status_reason, "active": run.is_active},
            "summary_html": render_to_string("dashboard/run_detail.html#summary", selectors.run_context(run)),
        }


class OverviewConsumer(_LiveConsumer):
    """ws/overview/: tells every page that runs or the kill switch changed; the page re-fetches
    the affected fragment over HTTP (so what it shows always comes from the database)."""

    group = "overview"

    async def connect(self) -> None:
        if not await self._allowed():
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.engaged, self.newest_step = await self._state()
        await self.send_json({"type": "kill_switch", "engaged": self.engaged})
        await self._start_polling()

    @database_sync_to_async
    def _state(self) -> tuple[bool, int]:
        return selectors.overview_state()

    async def run_changed(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "runs", "run_id": event.get("run_id"), "kind": event.get("kind")})

    async def kill_switch_changed(self, event: dict[str, Any]) -> None:
        self.engaged = bool(event.get("engaged"))
        await self.send_json({"type": "kill_switch", "engaged": self.engaged})

    async def on_poll(self) -> None:
        # Catches what another process changed when the layer could not tell us.
        engaged, newest_step = await self._state()
        if engaged != self.engaged:
            self.engaged = engaged
            await self.send_json({"type": "kill_switch", "engaged": engaged})
        if newest_step != self.newest_step:
            self.newest_step = newest_step
            await self.send_json({"type": "runs", "run_id": None, "kind": None})
