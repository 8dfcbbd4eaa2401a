"""Whatever one client does, the server and every other client carry on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import websockets

from .harness import Client, ServerProcess, StalledClient, assert_log, http

TOKEN = "s3cret-token"


@pytest.fixture
def secured(tmp_path: Path):
    proc = ServerProcess(tmp_path / "auth.db", "--token", TOKEN, "--auth-seconds", "1").start()
    yield proc
    proc.stop()


async def _closed_with(client: Client, timeout: float = 10) -> int | None:
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await client.next(timeout)
    return info.value.rcvd.code if info.value.rcvd else None


async def test_bearer_header_authenticates(secured: ServerProcess) -> None:
    c = await Client.connect(secured.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    run_id = await c.start("echo", 1)
    assert (await c.until_terminal(run_id))[-1]["data"]["output"] == 1


async def test_auth_message_and_wrong_tokens(secured: ServerProcess) -> None:
    c = await Client.connect(secured.url)
    denied = await c.request({"type": "start", "workflow": "echo"})
    assert denied["type"] == "error" and denied["code"] == "unauthorized"
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    wrong = await c.request({"type": "auth", "token": "nope"})
    assert wrong["type"] == "error" and wrong["code"] == "unauthorized"
    assert (await c.request({"type": "auth", "token": TOKEN}))["type"] == "authed"
    run_id = await c.start("echo", 2)
    await c.until_terminal(run_id)
    # Three wrong tokens close the socket with 1008.
    d = await Client.connect(secured.url)
    for _ in range(3):
        await d.send({"type": "auth", "token": "wrong"})
    assert await _closed_with(d) == 1008
    errors = [m["code"] for m in d.inbox if m["type"] == "error"]
    assert errors == ["unauthorized"] * 3, "each wrong token is answered before the close"


async def test_wrong_bearer_header_is_unauthorized(secured: ServerProcess) -> None:
    c = await Client.connect(secured.url, additional_headers={"Authorization": "Bearer nope"})
    assert (await c.next())["code"] == "unauthorized"
    assert (await c.request({"type": "list_runs"}))["code"] == "unauthorized"


async def test_no_token_in_time_closes_with_1008(secured: ServerProcess) -> None:
    c = await Client.connect(secured.url)
    t0 = time.monotonic()
    assert await _closed_with(c) == 1008
    assert 0.8 < time.monotonic() - t0 < 5


async def test_http_needs_the_bearer_token(secured: ServerProcess) -> None:
    base = secured.http_url
    status, body = await asyncio.to_thread(http, "GET", base + "/api/runs")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, _ = await asyncio.to_thread(http, "GET", base + "/api/runs", None, {"Authorization": "Bearer bad"})
    assert status == 401
    status, _ = await asyncio.to_thread(http, "GET", base + "/api/runs", None, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert (await asyncio.to_thread(http, "GET", base + "/healthz"))[0] == 200
    assert (await asyncio.to_thread(http, "GET", base + "/"))[0] == 200
    assert TOKEN not in secured.tail(100_000), "tokens are never logged"


async def test_connection_limit_closes_with_1013(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "c.db", "--max-connections", "2").start()
    try:
        a = await Client.connect(server.url)
        await Client.connect(server.url)
        ws = await websockets.connect(server.url, ping_interval=None)
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1013
        assert (await a.request({"type": "ping"}))["type"] == "pong"
    finally:
        server.stop()


async def test_rate_subscription_and_input_limits(tmp_path: Path) -> None:
    args = ("--starts-per-second", "5", "--max-subscriptions", "2", "--max-input-bytes", "100")
    server = ServerProcess(tmp_path / "l.db", *args).start()
    try:
        c = await Client.connect(server.url)
        replies = [
            await c.request({"type": "start", "workflow": "echo", "input": i, "subscribe": False}) for i in range(12)
        ]
        kinds = [r.get("code", r["type"]) for r in replies]
        assert kinds.count("started") >= 5 and kinds.count("rate_limited") >= 5, kinds
        refused = next(r for r in replies if r.get("code") == "rate_limited")
        assert 0 < refused["retry_after"] <= 0.2 + 1e-9, refused  # 5/s: one token every 0.2 s
        await asyncio.sleep(refused["retry_after"])
        again = await c.request({"type": "start", "workflow": "echo", "input": 0, "subscribe": False})
        assert again["type"] == "started", again
        d = await Client.connect(server.url)
        for _ in range(2):
            await d.start("sleep", {"seconds": 5})
        extra = await d.request({"type": "start", "workflow": "sleep", "input": {"seconds": 5}})
        assert extra["type"] == "error" and extra["code"] == "overloaded"
        e = await Client.connect(server.url)
        big = await e.request({"type": "start", "workflow": "echo", "input": "x" * 200})
        assert big["type"] == "error" and big["code"] == "invalid_input" and "limit" in big["message"]
    finally:
        server.stop()


async def test_slow_subscriber_slows_no_one_and_still_gets_everything(server: ServerProcess) -> None:
    fast = await Client.connect(server.url)
    slow = await StalledClient(server.url).open(server.port)
    try:
        rss_before = server.rss_kb()
        run_id = await fast.start("count", {"n": 50000, "delay": 0}, subscribe=False)
        slow.send({"type": "subscribe", "run_id": run_id})
        t0 = time.monotonic()
        await fast.request({"type": "subscribe", "run_id": run_id, "batch": True})
        fast_log = await fast.until_terminal(run_id, timeout=60)
        fast_seconds = time.monotonic() - t0
        assert_log(fast_log)
        assert len(fast_log) == 50004
        rss_growth_mb = (server.rss_kb() - rss_before) / 1024
        # Now the slow one reads: it gets the exact same log, refilled from the store.
        slow_log = await slow.read_until_terminal(run_id)
        assert slow_log == fast_log
        assert fast_seconds < 20, f"the fast subscriber took {fast_seconds:.1f}s"
        assert rss_growth_mb < 64, f"server memory grew {rss_growth_mb:.0f} MB while a client did not read"
    finally:
        slow.close()


async def test_client_that_reads_nothing_is_closed_with_1008(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "s.db", "--stuck-seconds", "1").start()
    slow = StalledClient(server.url)
    try:
        await slow.open(server.port)
        other = await Client.connect(server.url)
        runs = [await other.start("count", {"n": 20000, "delay": 0}, subscribe=False) for _ in range(3)]
        for run_id in runs:
            slow.send({"type": "subscribe", "run_id": run_id})
        for run_id in runs:  # the runs end, whatever the slow client does
            while (await other.request({"type": "poll", "run_id": run_id}))["run"]["status"] != "completed":
                await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # the slow client has read nothing all this time
        assert await slow.read_until_closed() == 1008
        assert (await other.request({"type": "ping"}))["type"] == "pong"
        assert (await asyncio.to_thread(http, "GET", server.http_url + "/healthz"))[0] == 200
    finally:
        slow.close()
        server.stop()
