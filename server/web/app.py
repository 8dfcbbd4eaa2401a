"""create_app(): the Starlette application: /ws, the HTTP API (http.py), /healthz and the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from ..commands import Commands
from ..identities import Authenticator
from ..runtime import Runtime
from ..settings import Limits, Settings
from ..vocabulary import CloseCode
from ..workflow import Workflow
from .agentos import agentos_endpoint
from .connection import Connection
from .http import JSON, BodyLimit, HeaderLimit, HttpApi
from .limits import Quotas
from .metrics import Metrics
from .origins import Origins, Sources
from .serving import answers_cleanly

log = logging.getLogger("runcast.app")

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"
JS_DIR = STATIC_DIR.parent / "js"  # the JavaScript client's own files: the dashboard imports them from /js/


class Sockets:
    """The open /ws connections: admitted up to --max-connections, watched for clients
    that read nothing, closed together."""

    def __init__(self, commands: Commands, limits: Limits, quotas: Quotas) -> None:
        self.commands = commands
        self.limits = limits
        self.quotas = quotas
        self.connections: set[Connection] = set()
        self.agno: set[Any] = set()  # the /workflows/ws sockets (web/agentos.py), counted with these
        self.on_error: Callable[[str], None] | None = None  # counts the errors sent (metrics)

    async def endpoint(self, websocket: WebSocket) -> None:
        # Until it signs in, a socket counts against its address's share (when tokens are on).
        address = websocket.client.host if websocket.client else "?"
        key = f"address:{address}" if self.commands.auth.enabled else None
        if not self.room() or not self.quotas.enter(key):
            await websocket.accept()
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "too many connections; try again later")
            return
        conn = Connection(websocket, self.commands, self.limits, self.on_error, quotas=self.quotas, key=key)
        self.connections.add(conn)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)
            self.quotas.leave(conn.key)

    def room(self) -> bool:
        """Room for one more socket, of either endpoint, under --max-connections."""
        return len(self.connections) + len(self.agno) < self.limits.max_connections

    async def close_stuck_readers(self) -> None:
        """Forever: close (1008) each socket whose client has read nothing for --stuck-seconds."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.limits.stuck_seconds / 4))
            now = loop.time()
            await asyncio.gather(*(c.close_stuck() for c in self.connections if c.stuck(now)))

    async def close_all(self, code: int) -> None:
        await asyncio.gather(*(socket.close(code) for socket in list(self.agno)))
        for conn in list(self.connections):
            await conn.close(code)


def dashboard_config(settings: Settings) -> Any:
    """`/dashboard.json`: what the dashboard needs to know of the server's flags (nothing
    secret): the trace link's template (--trace-url), or null."""

    async def config(request: Request) -> Response:
        return JSON({"trace_url": settings.trace_url})

    return config


def health(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    """GET /healthz: 200 once the server accepts work; 503 while starting, or while the store
    cannot commit (the reason is given)."""

    async def healthz(request: Request) -> Response:
        if not getattr(request.app.state, "ready", False):
            return JSON({"status": "starting"}, 503)
        reason = runtime.store.degraded
        if reason is not None:
            return JSON({"status": "degraded", "reason": reason}, 503)
        return JSON({"status": "ok"})

    return healthz


async def no_socket_here(websocket: WebSocket) -> None:
    """A WebSocket handshake to a path with no endpoint: 404, saying where the endpoint is."""
    if not answers_cleanly(websocket.scope):
        await websocket.close(CloseCode.POLICY_VIOLATION)  # before accept: uvicorn's stock protocol answers 403
        return
    message = f"no WebSocket endpoint at {websocket.url.path}; runcast's is /ws (AgentOS clients: /workflows/ws)"
    await websocket.send_denial_response(PlainTextResponse(message + "\n", 404))


def create_app(
    db: str = "./data/runcast.db",
    workflows: Iterable[Workflow] = (),
    *,
    settings: Settings | None = None,
    auth: Authenticator | None = None,
) -> Starlette:
    """The runcast app on the store `db`, serving `workflows` (the command line adds the
    built-ins), set up by `settings`; with `auth` set up with tokens or keys, every client
    must present a token, and sees what its identity reaches."""
    settings = settings or Settings()
    limits = settings.limits
    runtime = Runtime(db, workflows, settings)
    commands = Commands(runtime, max_input_bytes=limits.max_input_bytes, auth=auth)
    quotas = Quotas(limits.starts_per_second, limits.connections_per_identity)
    sockets = Sockets(commands, limits, quotas)
    metrics = Metrics(runtime, lambda: list(sockets.connections))
    sockets.on_error = metrics.error
    api = HttpApi(commands, limits, metrics, sockets.connections, quotas)  # its event streams count with the sockets

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.open()
        watchdog = asyncio.create_task(sockets.close_stuck_readers(), name="runcast-stuck-readers")
        app.state.ready = True
        try:
            yield
        finally:
            watchdog.cancel()
            app.state.ready = False
            await sockets.close_all(CloseCode.GOING_AWAY)
            await runtime.close()

    async def going_away() -> None:
        """A stop's first step: every socket gets 1001 while the runs stop where they are
        (they resume at the next start), so no run keeps the stop waiting."""
        await asyncio.gather(sockets.close_all(CloseCode.GOING_AWAY), runtime.engine.shutdown())

    agentos = agentos_endpoint(commands, quotas, sockets.agno, sockets.room)  # Agno's AgentOS protocol (10)
    routes: list[Any] = [
        WebSocketRoute("/ws", sockets.endpoint),
        WebSocketRoute("/workflows/ws", agentos),
        WebSocketRoute("/{path:path}", no_socket_here),  # not a 403, which reads as a refused token
        Route("/healthz", health(runtime)),
        Route("/dashboard.json", dashboard_config(settings)),
        *api.routes(),
        Mount("/js", StaticFiles(directory=JS_DIR), name="js"),
        Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(Origins, sources=Sources.from_settings(settings)),  # first: a refused request does nothing
            Middleware(HeaderLimit),
            Middleware(BodyLimit, limit=limits.max_frame_bytes),
        ],
    )
    app.state.runtime = runtime
    app.state.close_connections = sockets.close_all
    app.state.going_away = going_away
    return app
