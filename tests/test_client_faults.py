"""The client library and `python -m client` under faults: refused or broken handshakes,
lost readers, shared and slow subscriptions, early breaks, rate limits."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from client import AuthFailed, Client, ConnectionFailed, HandshakeFailed, RateLimited, SyncClient
from client.feeds import Feed, Follower

from .harness import ROOT, ServerProcess, assert_log, http, stored_log

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


# name, the fake server, the error, attributes it carries, a word its message must hold
FAULTS: list[tuple[str, Callable[[], FakeServer], type[HandshakeFailed], dict[str, Any], str]] = [
    ("close-1008", lambda: FakeServer(close_with(1008, "bad token")), AuthFailed, {"close_code": 1008}, "token"),
    ("close-1013", lambda: FakeServer(close_with(1013, "full")), HandshakeFailed, {"close_code": 1013}, "later"),
    ("http-403", lambda: FakeServer(process_request=refuse(403)), AuthFailed, {"http_status": 403}, "token"),
    ("http-503", lambda: FakeServer(process_request=refuse(503)), HandshakeFailed, {"http_status": 503}, "later"),
    ("not-json", lambda: FakeServer(greet_with("hello")), HandshakeFailed, {"retryable": False}, "runcast"),
    ("not-welcome", lambda: FakeServer(greet_with('{"type": "hi"}')), HandshakeFailed, {}, "runcast"),
]


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


async def test_a_wrong_token_is_an_auth_failure(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--token", "right").start()
    try:
        with pytest.raises(AuthFailed, match="check the token"):
            async with Client(server.url, token="wrong"):
                pass
        async with Client(server.url, token="right") as c:
            await c.ping()
    finally:
        server.stop()


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


# ---- 3. several iterators on one run -----------------------------------------------------


async def collect(c: Client, run_id: str, after: int, into: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async for event in c.subscribe(run_id, after):
        into.append(event)
    return into


async def test_iterators_on_one_run_each_get_the_whole_log(server: ServerProcess) -> None:
    async with Client(server.url) as c:
        run_id = (await c.start("count", {"n": 200, "delay": 0.005}))["run_id"]
        first: list[dict[str, Any]] = []
        early = asyncio.create_task(collect(c, run_id, 0, first))
        while len(first) < 50:  # the first subscription is well under way
            await asyncio.sleep(0.01)
        second, third = collect(c, run_id, 0, []), collect(c, run_id, 10, [])
        logs = await asyncio.wait_for(asyncio.gather(early, second, third), 30)
        stored = [json.loads(f) for f in stored_log(server.db, run_id)]
        assert_log(stored)
        assert logs == [stored, stored, stored[10:]]
        last = stored[-1]["seq"]
        assert await asyncio.wait_for(collect(c, run_id, last, []), 10) == []  # nothing after the end
        assert await asyncio.wait_for(collect(c, run_id, last - 1, []), 10) == stored[-1:]


# ---- 4. bounded queues, slow readers get everything --------------------------------------


async def test_a_slow_reader_gets_every_event_through_a_bounded_queue(server: ServerProcess) -> None:
    bound = 100
    async with Client(server.url, queue_size=bound) as c:
        run_id = (await c.start("count", {"n": 5000, "delay": 0}))["run_id"]
        fast: list[dict[str, Any]] = []
        fast_task = asyncio.create_task(collect(c, run_id, 0, fast))
        slow: list[dict[str, Any]] = []
        most = 0
        async for event in c.subscribe(run_id):
            slow.append(event)
            feed = c._feeds.get(run_id)
            most = max([most, *(len(f.queue) for f in feed.followers)] if feed else [most])
            if len(slow) % 50 == 0:
                await asyncio.sleep(0.02)  # a reader slower than the run
        await asyncio.wait_for(fast_task, 30)
    stored = [json.loads(f) for f in stored_log(server.db, run_id)]
    assert len(stored) == 5004  # run_started, step_started, 5000 progress, step_completed, run_completed
    assert slow == stored and fast == stored
    assert bound // 2 < most <= bound  # the queue filled up, and never past its bound


def event(seq: int, kind: str = "progress") -> dict[str, Any]:
    return {"type": "event", "run_id": "r", "seq": seq, "event": kind, "step": None, "data": {}}


async def test_feed_pauses_a_full_follower_and_refills_it_from_its_cursor() -> None:
    feed, follower = Feed("r"), Follower(0, size=4)
    feed.followers.append(follower)
    assert feed.steer() == {"type": "subscribe", "run_id": "r", "after": 0, "batch": True}
    for seq in (1, 2, 2, 4, 3, 4, 5, 6):  # a repeat, a gap, then more than fits
        feed.offer(event(seq))
    assert [e["seq"] for e in follower.queue] == [1, 2, 3, 4]
    assert feed.steer() == {"type": "unsubscribe", "run_id": "r"}  # nobody wants more now
    assert (await follower.get())["seq"] == 1
    assert feed.steer() is None  # still above half
    assert (await follower.get())["seq"] == 2
    assert feed.steer() == {"type": "subscribe", "run_id": "r", "after": 4, "batch": True}
    feed.offer(event(5))
    feed.offer(event(6, "run_completed"))
    assert [(await follower.get())["seq"] for _ in range(4)] == [3, 4, 5, 6]
    assert await follower.get() is None


async def test_feed_rewinds_for_a_follower_that_joins_behind() -> None:
    feed, ahead = Feed("r"), Follower(0)
    feed.followers.append(ahead)
    feed.steer()
    for seq in range(1, 11):
        feed.offer(event(seq))
    assert feed.steer() is None
    behind = Follower(3)
    feed.followers.append(behind)
    assert feed.steer() == {"type": "subscribe", "run_id": "r", "after": 3, "batch": True}
    for seq in range(4, 13):  # the replay, then live events
        feed.offer(event(seq))
    assert [e["seq"] for e in ahead.queue] == list(range(1, 13))
    assert [e["seq"] for e in behind.queue] == list(range(4, 13))


# ---- 5. SyncClient stops its work when the caller stops iterating ------------------------


def subscriptions(server: ServerProcess) -> float:
    """The server's live subscription count, from /metrics."""
    _, text = http("GET", server.http_url + "/metrics")
    text = text.decode() if isinstance(text, bytes) else str(text)
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("runcast_subscriptions "))


def wait_until(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def other_tasks() -> list[str]:
    """What runs in the loop besides the caller: the qualified names of the tasks' coroutines."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    return sorted(getattr(t.get_coro(), "__qualname__", "?") for t in tasks)


def test_sync_subscribe_stops_when_the_caller_breaks(server: ServerProcess) -> None:
    with SyncClient(server.url) as c:
        run_id = c.start("count", {"n": 200, "delay": 0.05})["run_id"]
        for event in c.subscribe(run_id):
            if event["seq"] == 3:
                assert subscriptions(server) == 1
                break
        assert c._call(other_tasks()) == ["Client._read_loop", "Connection.keepalive"]  # no pump left behind
        assert wait_until(lambda: subscriptions(server) == 0), "the server was not told to unsubscribe"
        assert c._client._feeds == {}
        c.cancel(run_id)
        rest = list(c.subscribe(run_id, after=3))  # a new subscription still works
        assert_log(rest, first=4)
        assert rest[-1]["event"] == "run_cancelled"


# ---- 6. rate limits are waited out ---------------------------------------------------------


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real server that accepts 50 starts per second per connection."""
    proc = ServerProcess(tmp_path / "runcast.db", "--starts-per-second", "50").start()
    yield proc
    proc.stop()


async def test_starts_in_a_loop_wait_out_the_rate_limit(limited_server: ServerProcess) -> None:
    async with Client(limited_server.url) as c:
        began = time.monotonic()
        runs = [await c.start("echo", i, subscribe=False) for i in range(300)]
        took = time.monotonic() - began
        assert len({r["run_id"] for r in runs}) == 300
        assert took >= (300 - 50) / 50 - 1.0  # the client waited as told, it did not hammer
        listed, _ = await c.list_runs(workflow="echo", limit=500)
        assert len(listed) == 300


async def test_rate_limit_patience_is_bounded(limited_server: ServerProcess) -> None:
    async with Client(limited_server.url, rate_limit_patience=0) as c:
        with pytest.raises(RateLimited, match="still refused") as info:
            for i in range(100):
                await c.start("echo", i)
        assert 0 < info.value.retry_after <= 1
