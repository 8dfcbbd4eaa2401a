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
from ..runtime import Runtime
from ..settings import Settings
from ..vocabulary import CloseCode
from ..workflow import Workflow
from .auth import Tokens
from .connection import Connection
from .http import JSON, BodyLimit, HeaderLimit, HttpApi
from .metrics import Metrics

log = logging.getLogger("runcast.app")

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"


def create_app(
    db: str = "./data/runcast.db",
    workflows: Iterable[Workflow] = (),
    *,
    settings: Settings | None = None,
    tokens: Tokens | None = None,
) -> Starlette:
    """The runcast app on the store named by `db`, serving `workflows` (the command line
    adds the built-ins, see server.examples), set up by `settings`. With `tokens`, every
    client must present one."""
    tokens = tokens or Tokens()
    settings = settings or Settings()
    limits = settings.limits
    runtime = Runtime(db, workflows, settings)
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
