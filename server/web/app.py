"""create_app(): the Starlette application: /ws, the HTTP API, /healthz and the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from ..bounds import MAX_REPLY_BYTES
from ..commands import Caller, Commands
from ..engine import DEFAULT_MAX_RUNNING
from ..engine.cluster import DEFAULT_TAKEOVER_SECONDS
from ..protocol import ErrorCode, RuncastError, dumps, loads, parse_answer, parse_list_runs_filters, parse_start
from ..runtime import Runtime
from ..store.retention import DEFAULT_RETENTION_DAYS
from ..vocabulary import CloseCode
from ..workflow import FINISHED, Workflow
from .auth import Tokens
from .connection import Connection
from .limits import Limits
from .metrics import CONTENT_TYPE, Metrics
from .sse import EventStreamResponse, event_stream

log = logging.getLogger("runcast.app")

Handler = Callable[[Request], Awaitable[Response]]

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"
EVENTS_PAGE_MAX = 10_000
MAX_HEADER_LINE = 8192  # bytes: what websockets allows on /ws (above it: 431); HTTP gets the same

HTTP = Caller("http")

HTTP_STATUS = {
    ErrorCode.BAD_JSON: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.UNKNOWN_WORKFLOW: 404,
    ErrorCode.RUN_NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.INVALID_INPUT: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.INTERNAL: 500,
}


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else dumps(content).encode()


def _whole(text: str) -> bool:
    """A whole number of at most 18 digits (what a seq or a page size can be)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


async def _json_object(request: Request, fields: str) -> dict[str, Any]:
    """The request's body as a JSON object (BodyLimit stops one over --max-frame-bytes as
    it is read), or the contract's error."""
    try:
        body = loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise RuncastError(f"body is not valid JSON: {exc}", ErrorCode.BAD_JSON) from None
    if not isinstance(body, dict):
        raise RuncastError(f"body must be a JSON object with {fields}", ErrorCode.BAD_REQUEST)
    return body


def _error_response(exc: RuncastError) -> Response:
    return JSON({"error": {"code": str(exc.code), "message": exc.message}}, HTTP_STATUS[exc.code])


class HeaderLimit:
    """Answers 431 to an HTTP request with a header line over MAX_HEADER_LINE bytes
    (uvicorn on httptools sets no limit of its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(len(k) + len(v) + 2 > MAX_HEADER_LINE for k, v in scope["headers"]):
            message = f"a request header line is over {MAX_HEADER_LINE} bytes"
            await JSON({"error": {"code": "bad_request", "message": message}}, 431)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Answers 413 to an HTTP request whose body is over `limit` bytes, chunked or not: at once
    when Content-Length says so, else as soon as the chunks read pass it; the app then gets
    the body (at most `limit` bytes held) whether or not it reads it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone: nothing to answer
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the body is over {self.limit} bytes, the limit (--max-frame-bytes)"
        await JSON({"error": {"code": "bad_request", "message": message}}, 413)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then whatever comes next (a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


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
    streams: set[EventStreamResponse] = set()  # open event streams: they count toward --max-connections too
    metrics = Metrics(runtime, lambda: list(connections))

    def _error(exc: RuncastError) -> Response:
        metrics.error(str(exc.code))
        return _error_response(exc)

    def guarded(handler: Handler) -> Handler:
        """HTTP endpoints need the bearer token when tokens are configured."""

        async def check(request: Request) -> Response:
            if not tokens.check_header(request.headers.get("authorization")):
                metrics.error("unauthorized")
                body = {"error": {"code": "unauthorized", "message": "send Authorization: Bearer <token>"}}
                return JSON(body, 401, headers={"WWW-Authenticate": "Bearer"})
            return await handler(request)

        return check

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

    def answer(handler: Callable[[Request], Awaitable[Any]], status: int = 200) -> Handler:
        """An HTTP endpoint: `handler` returns the body, or raises the contract's error."""

        async def endpoint(request: Request) -> Response:
            try:
                body = await handler(request)
            except RuncastError as exc:
                return _error(exc)
            return body if isinstance(body, Response) else JSON(body, status)

        return endpoint

    async def list_workflows(request: Request) -> Any:
        return {"workflows": commands.list_workflows(HTTP)}

    async def start_run(request: Request) -> Any:
        workflow, input, run_id = parse_start(await _json_object(request, "a 'workflow'"))
        run, existing = await commands.start(HTTP, workflow, input, run_id)
        return {**run, "existing": existing}

    async def list_runs(request: Request) -> Any:
        query: dict[str, Any] = {k: v for k, v in request.query_params.items() if v != ""}
        if "limit" in query:
            if not query["limit"].isdigit():
                raise RuncastError("'limit' must be a whole number", ErrorCode.BAD_REQUEST)
            query["limit"] = int(query["limit"])
        runs, cursor = await commands.list_runs(HTTP, *parse_list_runs_filters(query))
        return {"runs": runs, "next": cursor}

    async def get_run(request: Request) -> Any:
        return await commands.get_run(HTTP, request.path_params["run_id"])

    async def run_events(request: Request) -> Any:
        run_id = request.path_params["run_id"]
        query = request.query_params
        wants_stream = "text/event-stream" in request.headers.get("accept", "")
        after = query.get("after") or (request.headers.get("last-event-id") if wants_stream else None) or "0"
        limit = query.get("limit", str(EVENTS_PAGE_MAX))
        if not _whole(after) or not _whole(limit) or not 1 <= int(limit) <= EVENTS_PAGE_MAX:
            message = f"'after' (or Last-Event-ID) must be a whole number and 'limit' 1 to {EVENTS_PAGE_MAX}"
            raise RuncastError(message, ErrorCode.BAD_REQUEST)
        if wants_stream:
            run = await commands.follow(HTTP, run_id)
            if run["status"] in FINISHED and int(after) >= run["last_seq"]:
                return Response(status_code=204)  # nothing more will ever come: tells EventSource to stop
            if len(connections) + len(streams) >= limits.max_connections:
                raise RuncastError("too many connections; try again later", ErrorCode.OVERLOADED)
            return EventStreamResponse(event_stream(runtime.broker, run_id, int(after)), limits.stuck_seconds, streams)
        events = await commands.read_events(HTTP, run_id, int(after), int(limit))
        frames = [e.frame.encode() for e in events]
        taken, used = 0, 0
        for frame in frames:  # a page ends early rather than grow past one reply's budget
            if taken and used + len(frame) + 1 > MAX_REPLY_BYTES:
                break
            taken, used = taken + 1, used + len(frame) + 1
        return JSON(b'{"events":[' + b",".join(frames[:taken]) + b"]}")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def cancel_run(request: Request) -> Any:
        return await commands.cancel(HTTP, request.path_params["run_id"])

    async def respond_run(request: Request) -> Any:
        request_id, value = parse_answer(await _json_object(request, "'request_id' and 'value'"))
        return await commands.respond(HTTP, request.path_params["run_id"], request_id, value)

    routes: list[Any] = [
        WebSocketRoute("/ws", ws_endpoint),
        Route("/healthz", healthz),
        Route("/api/workflows", guarded(answer(list_workflows))),
        Route("/api/runs", guarded(answer(start_run, 202)), methods=["POST"]),
        Route("/api/runs", guarded(answer(list_runs)), methods=["GET"]),
        Route("/api/runs/{run_id}", guarded(answer(get_run))),
        Route("/api/runs/{run_id}/events", guarded(answer(run_events))),
        Route("/api/runs/{run_id}/cancel", guarded(answer(cancel_run, 202)), methods=["POST"]),
        Route("/api/runs/{run_id}/respond", guarded(answer(respond_run)), methods=["POST"]),
        Route("/metrics", guarded(metrics_endpoint)),
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
