"""create_app(): the Starlette application: /ws, the HTTP API (http.py), /healthz and the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from ..commands import Commands
from ..engine import DEFAULT_MAX_RUNNING
from ..engine.cluster import DEFAULT_TAKEOVER_SECONDS
from ..runtime import Runtime
from ..store.retention import DEFAULT_RETENTION_DAYS
from ..vocabulary import CloseCode
from ..workflow import Workflow
from .auth import Tokens
from .connection import Connection
from .http import JSON, BodyLimit, HeaderLimit, HttpApi
from .limits import Limits
from .metrics import Metrics

log = logging.getLogger("runcast.app")

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"


def create_app(
    db: str = "./data/runcast.db",
    workflows: Iterable[Workflow] = (),
    *,
    max_running: int = DEFAULT_MAX_RUNNING,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    tokens: Tokens | None = None,
    limits: Limits | None = None,
    node_id: str | None = None,
    takeover_seconds: float = DEFAULT_TAKEOVER_SECONDS,
) -> Starlette:
    """The runcast app on the store named by `db`, serving `workflows` (the command line
    adds the built-ins, see server.examples).

    Finished runs older than `retention_days` are deleted (0 keeps them forever). With
    `tokens`, every client must present one; `limits` bounds what one client may use."""
    tokens = tokens or Tokens()
    limits = limits or Limits()
    runtime = Runtime(
        db,
        workflows,
        max_running=max_running,
        retention_days=retention_days,
        max_event_bytes=limits.max_event_bytes,
        node_id=node_id,
        takeover_seconds=takeover_seconds,
    )
    commands = Commands(runtime, max_input_bytes=limits.max_input_bytes)
    connections: set[Connection] = set()
    metrics = Metrics(runtime, lambda: list(connections))
    api = HttpApi(commands, tokens, limits, metrics, connections)  # its event streams count with the sockets

    async def watch_stuck_readers() -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, limits.stuck_seconds / 4))
            now = loop.time()
            await asyncio.gather(*(c.close_stuck() for c in connections if c.stuck(now)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.open()
        watchdog = asyncio.create_task(watch_stuck_readers(), name="runcast-stuck-readers")
        app.state.ready = True
        try:
            yield
        finally:
            watchdog.cancel()
            app.state.ready = False
            await close_connections(CloseCode.GOING_AWAY)
            await runtime.close()

    async def close_connections(code: int) -> None:
        for conn in list(connections):
            await conn.close(code)

    async def going_away() -> None:
        """A stop's first step: every socket gets 1001 while the runs stop where they are
        (they resume at the next start), so no run keeps the stop waiting."""
        await asyncio.gather(close_connections(CloseCode.GOING_AWAY), runtime.engine.shutdown())

    async def ws_endpoint(websocket: WebSocket) -> None:
        if len(connections) >= limits.max_connections:
            await websocket.accept()
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "too many connections; try again later")
            return
        conn = Connection(websocket, commands, tokens, limits, metrics.error)
        connections.add(conn)
        try:
            await conn.serve()
        finally:
            connections.discard(conn)

    async def healthz(request: Request) -> Response:
        if not getattr(request.app.state, "ready", False):
            return JSON({"status": "starting"}, 503)
        reason = runtime.store.degraded
        if reason is not None:
            return JSON({"status": "degraded", "reason": reason}, 503)
        return JSON({"status": "ok"})

    routes: list[Any] = [
        WebSocketRoute("/ws", ws_endpoint),
        Route("/healthz", healthz),
        *api.routes(),
        Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(HeaderLimit), Middleware(BodyLimit, limit=limits.max_frame_bytes)],
    )
    app.state.runtime = runtime
    app.state.close_connections = close_connections
    app.state.going_away = going_away
    return app
