"""Faults at the transport: bad upgrades, big headers, secrets in URLs, stopping while busy,
huge bodies, and the plain ASGI path. Real servers, raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from server.web.serving import Server, WebSocketProtocol, missing_hooks, serving_classes

from .harness import Client, ServerProcess, assert_log, events_over_http, http

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(method: str = "GET", path: str = "/ws", extra: str = "", key: bool = True, version: str = "13") -> bytes:
    """A WebSocket upgrade request, as bytes, with the parts a test wants wrong."""
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    head += f"Sec-WebSocket-Key: {KEY}\r\n" if key else ""
    head += f"Sec-WebSocket-Version: {version}\r\n" if version else ""
    return (head + extra + "\r\n").encode()


BAD_UPGRADES = {
    "no key": upgrade(key=False),
    "wrong version": upgrade(version="8"),
    "POST": upgrade(method="POST", extra="Content-Length: 0\r\n"),
    "garbage": b"\x16\x03\x01\x00\xa5garbage\r\n\r\n",
    "bad request line": b"HELLO /ws what\r\n\r\n",
}


def exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send `data` on a fresh socket and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), f"no HTTP answer: {answer[:80]!r}"
    return int(answer.split(b" ", 2)[1])


def sigterm(proc: ServerProcess, timeout: float = 10) -> tuple[int, float]:
    """SIGTERM the server; its exit code and the seconds from the signal to the exit."""
    assert proc.proc is not None
    t0 = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    try:
        code = proc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"no exit {timeout} s after SIGTERM") from None
    return code, time.monotonic() - t0


def log_errors(proc: ServerProcess) -> list[str]:
    return [line for line in proc.log_path.read_text().splitlines() if "ERROR" in line or "Traceback" in line]


# ---- 1. the upgrade path ---------------------------------------------------------


def test_bad_upgrades_get_4xx_log_nothing_leak_nothing_and_stop_promptly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "x.db").start()
    try:
        for name, data in BAD_UPGRADES.items():
            assert 400 <= status_of(exchange(server.port, data)) < 500, name
        requests = list(BAD_UPGRADES.values())
        for data in requests * 100:  # warm-up: allocator pools, caches
            exchange(server.port, data)
        before = server.rss_kb()
        for data in requests * 600:
            exchange(server.port, data)
        growth = (server.rss_kb() - before) / 1024
        print(f"RSS growth over {len(requests) * 600} bad upgrades: {growth:.1f} MiB")
        assert growth < 10, f"RSS grew {growth:.1f} MiB"
        code, seconds = sigterm(server)
        print(f"SIGTERM after bad upgrades: exit {code} in {seconds:.2f} s")
        assert code == 0 and seconds < 2, (code, seconds)
        assert log_errors(server) == [], log_errors(server)[:5]
    finally:
        server.stop()


def test_oversized_header_gets_431(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "x.db").start()
    try:
        big = "Authorization: Bearer " + "a" * 16384 + "\r\n"
        assert status_of(exchange(server.port, upgrade(extra=big))) == 431
        head = f"GET /api/runs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{big}\r\n"
        answer = exchange(server.port, head.encode())
        assert status_of(answer) == 431
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "bad_request"
        assert log_errors(server) == []
    finally:
        server.stop()


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_tokens_in_query_strings_never_reach_the_log(tmp_path: Path, level: str) -> None:
    server = ServerProcess(tmp_path / "x.db", "--log-level", level).start()
    try:
        ws = await websockets.connect(
            server.url + "?token=qs-secret-1", additional_headers={"Authorization": "Bearer hdr-secret-2"}
        )
        await ws.recv()
        await ws.close()
        await asyncio.to_thread(http, "GET", server.http_url + "/api/runs?token=qs-secret-3&limit=5")
        await asyncio.to_thread(http, "GET", server.http_url + "/api/runs?limit=5&access_token=qs-secret-4")
    finally:
        server.stop()
    text = server.log_path.read_text()
    assert "token=***" in text, "the access lines are there, with the value blanked"
    for secret in ("qs-secret-1", "hdr-secret-2", "qs-secret-3", "qs-secret-4"):
        assert secret not in text, secret


# ---- 3. a prompt stop --------------------------------------------------------------


async def _read_until_closed(ws: websockets.ClientConnection, pause: float = 0) -> int | None:
    """Read every frame (waiting `pause` after each); the close code the server sent."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in ws:
            json.loads(message)  # as a real client would
            if pause:
                await asyncio.sleep(pause)
    return ws.close_code


def _full_log(base: str, run_id: str) -> list[dict[str, Any]]:
    return events_over_http(base, run_id)


def _wait_finished(base: str, run_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, run = http("GET", f"{base}/api/runs/{run_id}")
        if status == 200 and run["status"] in ("completed", "failed", "cancelled"):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish after the restart")


async def test_sigterm_while_fast_runs_stream_closes_1001_exits_0_within_2s(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "x.db").start()
    # Four sockets follow five fast runs each; two read at once, two slowly, so
    # megabytes wait in their socket buffers ahead of their close frames: they must not hold the
    # stop up (and cannot see the 1001 in time, so their close codes are not checked).
    sockets = [
        # close_timeout: closing a socket of a server that is gone must not wait 10 s for its answer
        await websockets.connect(server.url, max_size=None, ping_interval=None, open_timeout=10, close_timeout=0.5)
        for _ in range(4)
    ]
    run_ids: list[str] = []
    try:
        for i, ws in enumerate(sockets):
            await ws.recv()  # welcome
            for j in range(5):
                n, delay = (10_000, 0) if (i + j) % 2 else (2_000, 0.001)
                await ws.send(json.dumps({"type": "start", "workflow": "count", "input": {"n": n, "delay": delay}}))
                while (reply := json.loads(await ws.recv()))["type"] != "started":
                    pass
                run_ids.append(reply["run"]["run_id"])
        readers = [asyncio.create_task(_read_until_closed(ws)) for ws in sockets[:2]]
        slow_readers = [asyncio.create_task(_read_until_closed(ws, pause=0.001)) for ws in sockets[2:]]
        await asyncio.sleep(1)  # let them stream, and the slow sockets' buffers fill
        code, seconds = await asyncio.to_thread(sigterm, server)
        print(f"SIGTERM while streaming: exit {code} in {seconds:.2f} s")
        assert code == 0, server.tail()
        assert seconds < 2, f"{seconds:.2f} s from SIGTERM to exit"
        assert await asyncio.wait_for(asyncio.gather(*readers), 10) == [1001] * len(readers)
    finally:
        for task in slow_readers:
            task.cancel()
        for ws in sockets:
            await ws.close()
        server.stop()
    server.restart()
    try:
        resumed = 0
        for run_id in run_ids:
            run = await asyncio.to_thread(_wait_finished, server.http_url, run_id)
            assert run["status"] == "completed", run
            events = await asyncio.to_thread(_full_log, server.http_url, run_id)
            assert_log(events)
            kinds = [e["event"] for e in events]
            assert kinds.count("run_resumed") <= 1
            resumed += kinds.count("run_resumed")
        assert resumed >= len(run_ids) // 2, f"only {resumed} of {len(run_ids)} runs were cut short by the stop"
        assert log_errors(server) == [], log_errors(server)[:5]
    finally:
        server.stop()


# ---- 4. HTTP bodies capped while they are read -------------------------------------


def post_streaming(port: int, head: bytes, body: bytes, step: int = 65536) -> bytes:
    """POST `head`, then `body` in pieces until the server answers; what it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        answer = b""
        for i in range(0, len(body), step):
            try:
                answer += sock.recv(65536)
                break  # it answered before the body was all sent
            except BlockingIOError:
                pass
            try:
                sock.sendall(body[i : i + step])
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            while not answer.endswith(b"}}") and (chunk := sock.recv(65536)):  # the JSON error, or a close
                answer += chunk
        return answer


def chunked(data: bytes, size: int = 16384) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in range(0, len(data), size))


def assert_413(answer: bytes, limit: int) -> None:
    assert status_of(answer) == 413, answer[:200]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "bad_request" and str(limit) in error["message"] and "--max-frame-bytes" in error["message"]


def test_post_bodies_over_the_limit_get_413_while_read(tmp_path: Path) -> None:
    limit = 65536
    server = ServerProcess(tmp_path / "x.db", "--max-frame-bytes", str(limit)).start()
    try:
        body = b'{"workflow": "echo", "input": "' + b"x" * (8 * 1024 * 1024) + b'"}'
        for path in ("/api/runs", "/api/runs/nope/cancel"):
            head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            # Content-Length says too much: answered at once, before any body.
            assert_413(post_streaming(server.port, f"{head}Content-Length: {len(body)}\r\n\r\n".encode(), b""), limit)
            # Chunked: answered once the bytes read pass the limit, long before the 8 MiB are sent.
            answer = post_streaming(server.port, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode(), chunked(body))
            assert_413(answer, limit)
        rss = server.rss_kb() / 1024
        assert rss < 200, f"the server holds {rss:.0f} MiB: bodies were buffered"
        # A lying small Content-Length beside chunked is refused as the request smuggling it is.
        head = b"POST /api/runs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert 400 <= status_of(post_streaming(server.port, head, chunked(body))) < 500
        # Under the limit, chunked or not, a body is read as usual.
        small = json.dumps({"workflow": "echo", "input": 1}).encode()
        head = "POST /api/runs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert status_of(exchange(server.port, head.encode() + chunked(small) + b"0\r\n\r\n")) == 202
        assert http("POST", server.http_url + "/api/runs", {"workflow": "echo", "input": 2})[0] == 202
        assert log_errors(server) == [], log_errors(server)[:5]
    finally:
        server.stop()


# ---- 2. the uvicorn coupling ---------------------------------------------------------


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    pass


def test_uvicorn_is_a_tested_version_with_every_hook() -> None:
    assert uvicorn.__version__.startswith("0.54."), uvicorn.__version__
    assert missing_hooks(_noop_app) == []
    assert serving_classes(_noop_app) == (WebSocketProtocol, Server)


def test_a_missing_hook_falls_back_to_plain_asgi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(WebSocketsSansIOProtocol, "handle_connect")
    assert missing_hooks(_noop_app) == ["WebSocketsSansIOProtocol.handle_connect"]
    assert serving_classes(_noop_app) == ("websockets-sansio", Server)
    monkeypatch.delattr(uvicorn.Server, "shutdown")
    assert serving_classes(_noop_app) == ("websockets-sansio", uvicorn.Server)


async def test_plain_asgi_path_streams_exactly_closes_1001_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNCAST_PLAIN_ASGI", "1")
    server = ServerProcess(tmp_path / "x.db").start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("count", {"n": 3000, "delay": 0})
        events = await c.until_terminal(run_id)
        assert_log(events)
        assert events[-1]["data"]["output"] == {"count": 3000}
        watcher = await Client.connect(server.url)
        await watcher.request({"type": "subscribe", "run_id": await c.start("count", {"n": 100, "delay": 1})})
        code, seconds = await asyncio.to_thread(sigterm, server)
        assert code == 0 and seconds < 2, (code, seconds)
        await asyncio.wait_for(watcher.ws.wait_closed(), 5)
        assert watcher.ws.close_code == 1001
    finally:
        server.stop()
    warnings = [line for line in server.log_path.read_text().splitlines() if "stock protocol" in line]
    assert len(warnings) == 1 and "RUNCAST_PLAIN_ASGI=1" in warnings[0] and "WARNING" in warnings[0], warnings
    assert log_errors(server) == []
