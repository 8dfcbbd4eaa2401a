"""The LISTEN side of a PostgreSQL node: one connection that hears other nodes' commits
(which runs they wrote, up to which seq) and control messages (cancels, new pending runs),
kept up with backoff. What it misses while down, the periodic catch-up covers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson

from ..waiting import cancelled, wait_set

log = logging.getLogger("runcast.store")

EVENTS_CHANNEL = "runcast_events"  # payload: {"node", "runs": {run_id: last_seq}} or {"node", "all": true}
CONTROL_CHANNEL = "runcast_control"  # payload: {"cancel": run_id} or {"pending": true}
CONNECT_TIMEOUT = 5.0


def payload(node_id: str, message: dict[str, Any]) -> str:
    """A NOTIFY payload from this node."""
    return orjson.dumps({"node": node_id, **message}).decode()


class Listener:
    """One node's LISTEN connection and the callbacks it feeds."""

    def __init__(self, url: str, where: str, node_id: str) -> None:
        self.url = url
        self.where = where
        self.node_id = node_id
        self.listening = False  # the LISTEN connection is up (else only the periodic catch-up delivers)
        self._listener: asyncpg.Connection | None = None
        self._listening: asyncio.Task[None] | None = None
        self._on_events: list[Callable[[dict[str, int] | None, set[str] | None], None]] = []
        self._on_control: list[Callable[[dict[str, Any]], None]] = []

    def start(self) -> None:
        self._listening = asyncio.create_task(self._listen_loop(), name="runcast-pg-listen")

    async def stop(self) -> None:
        task, self._listening = self._listening, None
        await cancelled(task)

    def abandon(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            self._listening = None
        if self._listener is not None:  # the cancelled loop will not get to close it
            self._listener.terminate()
            self._listener = None

    def on_events(self, callback: Callable[[dict[str, int] | None, set[str] | None], None]) -> None:
        """Call `callback({run_id: last_seq}, changed)` when another node committed: the runs
        it wrote (None: any run), and `changed`, those whose state (status, steps) it wrote
        (None: any of them may have; the runs feed then reads them all)."""
        self._on_events.append(callback)

    def on_control(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback(message)` for cancel requests and new pending runs."""
        self._on_control.append(callback)

    async def _listen_loop(self) -> None:
        """Keep one LISTEN connection; reconnect with backoff when it drops (the periodic
        catch-up covers what was missed meanwhile)."""
        delay = 0.1
        while True:
            lost = asyncio.Event()
            try:
                conn = self._listener = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
                # Held from here on, so that a cancel or a failure below still closes it.
                conn.add_termination_listener(lambda _c, gone=lost: gone.set())
                await conn.add_listener(EVENTS_CHANNEL, self._heard)
                await conn.add_listener(CONTROL_CHANNEL, self._heard)
                self.listening, delay = True, 0.1
                self._notify_all()  # whatever was missed while not listening
                while not lost.is_set():
                    if not await wait_set(lost, 5.0):
                        await conn.execute("SELECT 1")  # a dead connection says so here
            except asyncio.CancelledError:
                await self._drop_listener()
                raise
            except Exception as exc:
                if self.listening:
                    log.warning("store %s: LISTEN connection lost (%s); reconnecting", self.where, exc)
            self.listening = False
            await self._drop_listener()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 1.0)
            except Exception:  # a connection that cannot close politely is cut
                conn.terminate()

    def _notify_all(self) -> None:
        for callback in self._on_events:
            callback(None, None)

    def _heard(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if message.get("node") == self.node_id:
            return  # our own commit: the local broker has it already
        if channel == EVENTS_CHANNEL:
            runs = None if message.get("all") else message.get("runs", {})
            changed = message.get("changed")  # absent from an older node's: any may have changed
            states = set(changed) if runs is not None and isinstance(changed, list) else None
            for callback in self._on_events:
                callback(runs, states)
        else:
            for control in self._on_control:
                control(message)
