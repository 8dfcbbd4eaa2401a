"""One WebSocket client: its outbound queue, its subscriptions, and what it asks for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from . import __version__
from .broker import Subscription
from .engine import FINISHED
from .protocol import (
    Auth,
    Cancel,
    ClientMessage,
    ErrorCode,
    ListRuns,
    ListWorkflows,
    ParseError,
    Ping,
    Poll,
    RuncastError,
    RunNotFound,
    Start,
    Subscribe,
    Unsubscribe,
    error_frame,
    parse_client_frame,
    reply,
    welcome_frame,
)
from .runtime import Runtime

log = logging.getLogger("runcast.connection")

OUTBOX_SIZE = 256  # frames waiting for the socket; a full outbox makes this client's senders wait


class Connection:
    """Serves one socket: reads messages in order, writes frames through one bounded queue."""

    def __init__(self, websocket: WebSocket, runtime: Runtime) -> None:
        self.websocket = websocket
        self.runtime = runtime
        self.subscriptions: dict[str, Subscription] = {}
        self._outbox: asyncio.Queue[str] = asyncio.Queue(OUTBOX_SIZE)
        self._writer: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        await self.websocket.accept()
        self._writer = asyncio.create_task(self._write_loop(), name="runcast-ws-writer")
        await self.send(welcome_frame(__version__))
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                await self.handle(text if text is not None else message.get("bytes"))
        except WebSocketDisconnect:
            pass
        finally:
            for sub in list(self.subscriptions.values()):
                sub.stop()
            self.subscriptions.clear()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def close(self, code: int) -> None:
        """Close the socket with a contract close code (e.g. 1001 on shutdown)."""
        with contextlib.suppress(RuntimeError, OSError):
            await self.websocket.close(code)

    async def send(self, frame: str) -> None:
        await self._outbox.put(frame)

    async def _write_loop(self) -> None:
        try:
            while True:
                frame = await self._outbox.get()
                await self.websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the socket is gone or closing; the reader ends the connection

    # ---- messages --------------------------------------------------------------------

    async def handle(self, frame: str | bytes | None) -> None:
        """Answer one received frame; errors go back to this client only."""
        message = parse_client_frame(frame)
        if isinstance(message, ParseError):
            await self.send(error_frame(message.code, message.message, message.id))
            return
        try:
            await self._dispatch(message)
        except RuncastError as exc:
            await self.send(error_frame(exc.code, exc.message, message.id))
        except Exception:
            log.exception("error answering %s", type(message).__name__)
            await self.send(error_frame(ErrorCode.INTERNAL, "the server failed to answer; see its log", message.id))

    async def _dispatch(self, message: ClientMessage) -> None:
        engine, store = self.runtime.engine, self.runtime.store
        match message:
            case Start():
                run, existing = await engine.start(message.workflow, message.input, message.run_id)
                await self.send(reply("started", message.id, run=run, existing=existing))
                if message.subscribe:
                    self._follow(run, 0, message.batch)
            case Subscribe():
                run = await self._snapshot(message.run_id)
                await self.send(reply("subscribed", message.id, run=run))
                self._follow(run, message.after, message.batch)
            case Unsubscribe():
                sub = self.subscriptions.pop(message.run_id, None)
                if sub is not None:
                    sub.stop()
                await self.send(reply("unsubscribed", message.id, run_id=message.run_id))
            case Poll():
                await self.send(reply("run", message.id, run=await self._snapshot(message.run_id)))
            case Cancel():
                await self.send(reply("cancel_requested", message.id, run=await engine.cancel(message.run_id)))
            case ListWorkflows():
                workflows = [wf.describe() for wf in engine.workflows.values()]
                await self.send(reply("workflows", message.id, workflows=workflows))
            case ListRuns():
                try:
                    runs, cursor = await store.list_runs(
                        message.workflow, message.status, message.limit, message.before
                    )
                except ValueError as exc:
                    raise RuncastError(str(exc), ErrorCode.BAD_REQUEST) from None
                await self.send(reply("runs", message.id, runs=runs, next=cursor))
            case Ping():
                await self.send(reply("pong", message.id))
            case Auth():
                await self.send(reply("authed", message.id))

    async def _snapshot(self, run_id: str) -> dict[str, Any]:
        run = await self.runtime.store.get_run(run_id)
        if run is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        return run

    def _follow(self, run: dict[str, Any], after: int, batch: bool) -> None:
        """Deliver the run's events after `after`, replacing any earlier subscription to it."""
        run_id = run["run_id"]
        old = self.subscriptions.pop(run_id, None)
        if old is not None:
            old.stop()
        if run["status"] in FINISHED and after >= run["last_seq"]:
            return  # nothing left to deliver
        sub = Subscription(self.runtime.broker, run_id, after, self.send, batch=batch)
        self.subscriptions[run_id] = sub
        self.runtime.broker.subscribe(sub, self._ended)

    def _ended(self, sub: Subscription) -> None:
        if self.subscriptions.get(sub.run_id) is sub:
            del self.subscriptions[sub.run_id]
