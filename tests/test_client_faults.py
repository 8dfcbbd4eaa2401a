"""The client library and `python -m client` under faults: refused or broken handshakes,
lost readers, shared and slow subscriptions, early breaks, rate limits."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from client import AuthFailed, Client, ConnectionFailed, HandshakeFailed

from .harness import ROOT, ServerProcess

WELCOME = json.dumps({"type": "welcome", "protocol": 1, "server": "fake/0"})

Behaviour = Callable[[ServerConnection], Awaitable[None]]


class FakeServer:
    """A tiny WebSocket server on 127.0.0.1 that treats its n-th connection the n-th way
    (the last way repeats), and counts connections."""

    def __init__(
        self,
        *behaviours: Behaviour,
        process_request: Callable[[ServerConnection, Request], Response | None] | None = None,
    ) -> None:
        self.behaviours = behaviours
        self.process_request = process_request
        self.connections = 0
        self.url = ""
        self._server: Server | None = None

    async def __aenter__(self) -> FakeServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self.process_request)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        await self.behaviours[min(self.connections, len(self.behaviours)) - 1](ws)


def close_with(code: int, reason: str = "") -> Behaviour:
    """Close right after the handshake, before any welcome."""

    async def behaviour(ws: ServerConnection) -> None:
        await ws.close(code, reason)

    return behaviour


def greet_with(text: str) -> Behaviour:
    """Send `text` as the first frame, then wait for the client to go."""

    async def behaviour(ws: ServerConnection) -> None:
        await ws.send(text)
        await ws.wait_closed()

    return behaviour


def refuse(status: int) -> Callable[[ServerConnection, Request], Response]:
    """Answer the upgrade request with an HTTP error."""

    def process_request(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(status, "no\n")

    return process_request


async def welcome_then_drop(ws: ServerConnection) -> None:
    """Greet, take one message without answering it, then go away (as a restarting server would)."""
    await ws.send(WELCOME)
    await ws.recv()
    await ws.close(1001)


async def welcome_and_pong(ws: ServerConnection) -> None:
    """Greet and answer pings: the smallest working server."""
    await ws.send(WELCOME)
    async for raw in ws:
        msg = json.loads(raw)
        if msg.get("type") == "ping":
            await ws.send(json.dumps({"type": "pong", "id": msg.get("id")}))


async def welcome_then_garbage(ws: ServerConnection) -> None:
    """Greet, then answer the first message with a frame that is not JSON."""
    await ws.send(WELCOME)
    await ws.recv()
    await ws.send("this is not json")
    await ws.wait_closed()


# ---- 1. typed errors at connect ------------------------------------------------------------


def connect_faults() -> list[tuple[str, Callable[[], FakeServer], type[HandshakeFailed], dict[str, Any], str]]:
    return [
        ("close-1008", lambda: FakeServer(close_with(1008, "bad token")), AuthFailed, {"close_code": 1008}, "token"),
        ("close-1013", lambda: FakeServer(close_with(1013, "full")), HandshakeFailed, {"close_code": 1013}, "later"),
        ("http-403", lambda: FakeServer(process_request=refuse(403)), AuthFailed, {"http_status": 403}, "token"),
        ("http-503", lambda: FakeServer(process_request=refuse(503)), HandshakeFailed, {"http_status": 503}, "later"),
        ("not-json", lambda: FakeServer(greet_with("hello")), HandshakeFailed, {"retryable": False}, "runcast"),
        ("not-welcome", lambda: FakeServer(greet_with('{"type": "hi"}')), HandshakeFailed, {}, "runcast"),
    ]


FAULTS = connect_faults()


@pytest.mark.parametrize(("name", "make", "error", "attrs", "hint"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_connect_faults_raise_typed_errors(
    name: str, make: Callable[[], FakeServer], error: type[HandshakeFailed], attrs: dict[str, Any], hint: str
) -> None:
    async with make() as fake:
        with pytest.raises(error) as info:
            async with Client(fake.url):
                pass
    assert isinstance(info.value, ConnectionFailed)
    assert hint in str(info.value)
    for key, value in attrs.items():
        assert getattr(info.value, key) == value


@pytest.mark.parametrize(("name", "make", "error", "attrs", "hint"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_cli_connect_faults_exit_2_with_one_line(
    name: str, make: Callable[[], FakeServer], error: type[HandshakeFailed], attrs: dict[str, Any], hint: str
) -> None:
    async with make() as fake:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "client",
            "workflows",
            "--url",
            fake.url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = err.decode().splitlines()
    assert proc.returncode == 2, err.decode()
    assert len(lines) == 1 and lines[0].startswith("error: ") and hint in lines[0], lines
    assert out == b""


async def test_reconnect_raises_an_auth_failure_instead_of_retrying() -> None:
    async with FakeServer(welcome_then_drop, close_with(1008, "bad token")) as fake:
        async with Client(fake.url, max_backoff=0.1) as c:
            with pytest.raises(AuthFailed, match="token"):
                await asyncio.wait_for(c.ping(), 10)
        assert fake.connections == 2


async def test_reconnect_retries_a_full_server() -> None:
    async with FakeServer(welcome_then_drop, close_with(1013), close_with(1013), welcome_and_pong) as fake:
        async with Client(fake.url, max_backoff=0.1) as c:
            await asyncio.wait_for(c.ping(), 10)
        assert fake.connections == 4


# ---- 2. callers never wait forever on a dead reader -------------------------------------


async def test_waiting_callers_fail_when_reconnecting_gives_up(server: ServerProcess) -> None:
    reconnecting = asyncio.Event()

    def on_state(state: str) -> None:
        if state == "reconnecting":
            reconnecting.set()

    async with Client(server.url, max_backoff=0.2, give_up_after=1.0, on_state=on_state) as c:
        run = await c.start("sleep", {"seconds": 60})
        events: list[dict[str, Any]] = []

        async def follow() -> None:
            async for event in c.subscribe(run["run_id"]):
                events.append(event)

        follower = asyncio.create_task(follow())
        while not events:  # the subscription is live
            await asyncio.sleep(0.01)
        server.kill()
        await asyncio.wait_for(reconnecting.wait(), 10)
        with pytest.raises(ConnectionFailed):
            await asyncio.wait_for(c.poll(run["run_id"]), 20)  # asked while reconnecting
        with pytest.raises(ConnectionFailed):
            await asyncio.wait_for(follower, 5)
        with pytest.raises(ConnectionFailed):
            await c.ping()  # and later calls fail at once


async def test_waiting_callers_fail_when_reconnect_is_off(server: ServerProcess) -> None:
    async with Client(server.url, reconnect=False) as c:
        run = await c.start("sleep", {"seconds": 60})
        iterator = c.subscribe(run["run_id"])
        assert (await anext(iterator))["event"] == "run_started"
        server.kill()
        with pytest.raises(ConnectionFailed):
            await asyncio.wait_for(drain(iterator), 10)
        with pytest.raises(ConnectionFailed):
            await asyncio.wait_for(c.poll(run["run_id"]), 10)


async def drain(iterator: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event async for event in iterator]


async def test_a_broken_frame_fails_waiting_requests() -> None:
    async with FakeServer(welcome_then_garbage) as fake, Client(fake.url) as c:
        with pytest.raises(ConnectionFailed, match="stopped reading"):
            await asyncio.wait_for(c.ping(), 10)
