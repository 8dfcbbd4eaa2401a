"""The HTTP API: the same operations as /ws (server/commands.py), with the same data and
error codes; its JSON responses, and the limits on requests' headers and bodies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sized
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..bounds import MAX_REPLY_BYTES
from ..commands import Caller, Commands
from ..jsontext import dumps
from ..protocol import (
    ErrorCode,
    RuncastError,
    loads,
    parse_answer,
    parse_list_runs_filters,
    parse_mint_token,
    parse_schedule,
    parse_start,
    parse_start_options,
)
from ..settings import Limits
from ..workflow import FINISHED
from .auth import bearer
from .limits import Quotas, check_start_rate
from .metrics import CONTENT_TYPE, Metrics
from .sse import EventStreamResponse, event_stream

Handler = Callable[[Request], Awaitable[Response]]

EVENTS_PAGE_MAX = 10_000
MAX_HEADER_LINE = 8192  # bytes: what websockets allows on /ws (above it: 431); HTTP gets the same

HTTP_STATUS = {
    ErrorCode.BAD_JSON: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.UNKNOWN_WORKFLOW: 404,
    ErrorCode.RUN_NOT_FOUND: 404,
    ErrorCode.SCHEDULE_NOT_FOUND: 404,
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


def error_response(exc: RuncastError) -> Response:
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


class HttpApi:
    """The `/api` routes and `/metrics` on the command layer, behind the bearer token."""

    def __init__(self, commands: Commands, limits: Limits, metrics: Metrics, sockets: Sized, quotas: Quotas) -> None:
        self.quotas = quotas  # an identity's starts per second count over HTTP too
        self.commands = commands
        self.auth = commands.auth
        self.limits = limits
        self.metrics = metrics
        self.sockets = sockets  # the open WebSocket connections: streams count with them
        self.streams: set[EventStreamResponse] = set()

    def routes(self) -> list[Route]:
        guarded, answer = self._guarded, self._answer
        return [
            Route("/api/workflows", guarded(answer(self.list_workflows))),
            Route("/api/runs", guarded(answer(self.start_run, 202)), methods=["POST"]),
            Route("/api/runs", guarded(answer(self.list_runs)), methods=["GET"]),
            Route("/api/runs/{run_id}", guarded(answer(self.get_run))),
            Route("/api/runs/{run_id}/events", guarded(answer(self.run_events))),
            Route("/api/runs/{run_id}/cancel", guarded(answer(self.cancel_run, 202)), methods=["POST"]),
            Route("/api/runs/{run_id}/respond", guarded(answer(self.respond_run)), methods=["POST"]),
            Route("/api/tokens", guarded(answer(self.mint_token, 201)), methods=["POST"]),
            Route("/api/schedules", guarded(answer(self.list_schedules)), methods=["GET"]),
            Route("/api/schedules", guarded(answer(self.create_schedule, 201)), methods=["POST"]),
            Route("/api/schedules/{name}", guarded(answer(self.delete_schedule)), methods=["DELETE"]),
            Route("/metrics", guarded(self.metrics_endpoint)),
        ]

    def _guarded(self, handler: Handler) -> Handler:
        """HTTP endpoints need a valid token when tokens are configured: the caller's
        identity goes on `request.state.caller`. Only an event stream also takes it as
        `?token=` (an EventSource cannot set headers)."""

        async def check(request: Request) -> Response:
            token = bearer(request.headers.get("authorization"))
            if token is None and _event_stream(request):
                token = request.query_params.get("token")
            try:
                request.state.caller = Caller("http", self.auth.identify(token))
            except RuncastError as exc:
                self.metrics.error("unauthorized")
                body = {
                    "error": {"code": "unauthorized", "message": f"{exc.message}: send Authorization: Bearer <token>"}
                }
                return JSON(body, 401, headers={"WWW-Authenticate": "Bearer"})
            return await handler(request)

        return check

    def _answer(self, handler: Callable[[Request], Awaitable[Any]], status: int = 200) -> Handler:
        """An endpoint: `handler` returns the body (or a Response), or raises the contract's error."""

        async def endpoint(request: Request) -> Response:
            try:
                body = await handler(request)
            except RuncastError as exc:
                self.metrics.error(str(exc.code))
                return error_response(exc)
            return body if isinstance(body, Response) else JSON(body, status)

        return endpoint

    async def list_workflows(self, request: Request) -> Any:
        return {"workflows": self.commands.list_workflows(_caller(request))}

    async def start_run(self, request: Request) -> Any:
        body = await _json_object(request, "a 'workflow'")
        workflow, input, run_id = parse_start(body)
        options = parse_start_options(body)
        caller = _caller(request)
        key = self.quotas.key(caller.identity.sub)
        if key is not None:  # an identity's starts count over every door (without a sub, HTTP has no limit)
            check_start_rate(self.quotas.starts(key))
        run, existing = await self.commands.start(caller, workflow, input, run_id, options)
        return {**run, "existing": existing}

    async def list_runs(self, request: Request) -> Any:
        query: dict[str, Any] = {k: v for k, v in request.query_params.items() if v != ""}
        if "limit" in query:
            if not query["limit"].isdigit():
                raise RuncastError("'limit' must be a whole number", ErrorCode.BAD_REQUEST)
            query["limit"] = int(query["limit"])
        runs, cursor = await self.commands.list_runs(_caller(request), *parse_list_runs_filters(query))
        return {"runs": runs, "next": cursor}

    async def get_run(self, request: Request) -> Any:
        return await self.commands.get_run(_caller(request), request.path_params["run_id"])

    async def run_events(self, request: Request) -> Any:
        """A page of stored events, or with `Accept: text/event-stream` an event stream."""
        run_id = request.path_params["run_id"]
        query = request.query_params
        wants_stream = "text/event-stream" in request.headers.get("accept", "")
        after = query.get("after") or (request.headers.get("last-event-id") if wants_stream else None) or "0"
        limit = query.get("limit", str(EVENTS_PAGE_MAX))
        if not _whole(after) or not _whole(limit) or not 1 <= int(limit) <= EVENTS_PAGE_MAX:
            message = f"'after' (or Last-Event-ID) must be a whole number and 'limit' 1 to {EVENTS_PAGE_MAX}"
            raise RuncastError(message, ErrorCode.BAD_REQUEST)
        if wants_stream:
            return await self._stream(_caller(request), run_id, int(after))
        events = await self.commands.read_events(_caller(request), run_id, int(after), int(limit))
        frames = [e.frame.encode() for e in events]
        taken, used = 0, 0
        for frame in frames:  # a page ends early rather than grow past one reply's budget
            if taken and used + len(frame) + 1 > MAX_REPLY_BYTES:
                break
            taken, used = taken + 1, used + len(frame) + 1
        return JSON(b'{"events":[' + b",".join(frames[:taken]) + b"]}")

    async def _stream(self, caller: Caller, run_id: str, after: int) -> Response:
        run = await self.commands.follow(caller, run_id)
        if run["status"] in FINISHED and after >= run["last_seq"]:
            return Response(status_code=204)  # nothing more will ever come: tells EventSource to stop
        if len(self.sockets) + len(self.streams) >= self.limits.max_connections:
            raise RuncastError("too many connections; try again later", ErrorCode.OVERLOADED)
        broker = self.commands.runtime.broker
        return EventStreamResponse(event_stream(broker, run_id, after), self.limits.stuck_seconds, self.streams)

    async def metrics_endpoint(self, request: Request) -> Response:
        if not _caller(request).identity.admin:
            return error_response(RuncastError("/metrics needs a token with scope admin", ErrorCode.FORBIDDEN))
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def cancel_run(self, request: Request) -> Any:
        return await self.commands.cancel(_caller(request), request.path_params["run_id"])

    async def respond_run(self, request: Request) -> Any:
        request_id, value = parse_answer(await _json_object(request, "'request_id' and 'value'"))
        return await self.commands.respond(_caller(request), request.path_params["run_id"], request_id, value)

    async def list_schedules(self, request: Request) -> Any:
        return {"schedules": await self.commands.list_schedules(_caller(request))}

    async def create_schedule(self, request: Request) -> Any:
        fields = parse_schedule(await _json_object(request, "'name', 'workflow' and 'cron' or 'every'"))
        return await self.commands.create_schedule(_caller(request), fields)

    async def delete_schedule(self, request: Request) -> Any:
        return await self.commands.delete_schedule(_caller(request), request.path_params["name"])

    async def mint_token(self, request: Request) -> Any:
        return self.commands.mint_token(_caller(request), parse_mint_token(await _json_object(request, "token fields")))


def _event_stream(request: Request) -> bool:
    """A run's event stream (`GET /api/runs/{run_id}/events`, Accept: text/event-stream): the
    one endpoint that takes `?token=`, since an EventSource cannot set headers."""
    path = request.url.path
    return (
        request.method == "GET"
        and path.startswith("/api/runs/")
        and path.endswith("/events")
        and "text/event-stream" in request.headers.get("accept", "")
    )


def _caller(request: Request) -> Caller:
    """Who sent the request (set by HttpApi._guarded)."""
    caller: Caller = request.state.caller
    return caller
