"""Where requests may come from (contract 7.1): a foreign `Origin` is refused on /ws and on
HTTP requests that change things, a foreign `Host` on every path while on loopback; both
with 403 `forbidden`, before anything is done."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from server.settings import Settings
from server.web.origins import Sources, refusal, wrong_sources

from .harness import Client, ServerProcess, http

EVIL = "http://evil.example.com"
APP = "https://app.example.com"

# (settings, scope type, method, headers, allowed)
CASES: list[tuple[dict[str, Any], str, str, dict[str, str], bool]] = [
    # the server's own origin, and what is not exactly it
    ({}, "websocket", "GET", {"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"}, True),
    ({}, "http", "POST", {"host": "127.0.0.1:8000", "origin": "https://127.0.0.1:8000"}, True),
    ({}, "http", "POST", {"host": "LOCALHOST:8000", "origin": "HTTP://localhost:8000"}, True),
    ({}, "websocket", "GET", {"host": "127.0.0.1:8000", "origin": "http://localhost:8000"}, False),
    ({}, "websocket", "GET", {"host": "localhost:8000", "origin": "http://127.0.0.1:8000"}, False),
    ({}, "websocket", "GET", {"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8001"}, False),
    ({}, "websocket", "GET", {"host": "127.0.0.1:8000", "origin": "http://127.0.0.1"}, False),
    ({}, "websocket", "GET", {"host": "127.0.0.1:8000", "origin": "ws://127.0.0.1:8000"}, False),
    ({}, "websocket", "GET", {"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000/"}, False),
    ({}, "websocket", "GET", {"host": "[::1]:8000", "origin": "http://[::1]:8000"}, True),
    # default ports: a Host without one is the origin scheme's default
    ({}, "http", "POST", {"host": "localhost", "origin": "http://localhost"}, True),
    ({}, "http", "POST", {"host": "localhost", "origin": "http://localhost:80"}, True),
    ({}, "http", "POST", {"host": "localhost:80", "origin": "http://localhost"}, True),
    ({}, "http", "POST", {"host": "localhost", "origin": "https://localhost"}, True),
    ({}, "http", "POST", {"host": "localhost:443", "origin": "https://localhost"}, True),
    ({}, "http", "POST", {"host": "localhost:80", "origin": "https://localhost"}, False),
    ({}, "http", "POST", {"host": "localhost", "origin": "http://localhost:8000"}, False),
    # foreign origins, null, several values; GET/HEAD/OPTIONS and no Origin unaffected
    ({}, "websocket", "GET", {"host": "127.0.0.1:8000", "origin": EVIL}, False),
    ({}, "http", "POST", {"host": "127.0.0.1:8000", "origin": EVIL}, False),
    ({}, "http", "DELETE", {"host": "127.0.0.1:8000", "origin": EVIL}, False),
    ({}, "http", "POST", {"host": "127.0.0.1:8000", "origin": "null"}, False),
    ({}, "http", "POST", {"host": "127.0.0.1:8000", "origin": "garbage"}, False),
    ({}, "http", "GET", {"host": "127.0.0.1:8000", "origin": EVIL}, True),
    ({}, "http", "HEAD", {"host": "127.0.0.1:8000", "origin": "null"}, True),
    ({}, "http", "OPTIONS", {"host": "127.0.0.1:8000", "origin": EVIL}, True),
    ({}, "http", "POST", {"host": "127.0.0.1:8000"}, True),
    ({}, "websocket", "GET", {"host": "127.0.0.1:8000"}, True),
    # --allow-origin
    ({"allow_origin": (EVIL,)}, "websocket", "GET", {"host": "127.0.0.1:8000", "origin": EVIL}, True),
    ({"allow_origin": ("HTTPS://App.Example.com:443",)}, "http", "POST", {"host": "127.0.0.1:1", "origin": APP}, True),
    ({"allow_origin": (APP,)}, "http", "POST", {"host": "127.0.0.1:1", "origin": "http://app.example.com"}, False),
    ({"allow_origin": (APP,)}, "http", "POST", {"host": "127.0.0.1:1", "origin": "null"}, False),
    ({"allow_origin": ("null",)}, "http", "POST", {"host": "127.0.0.1:1", "origin": "null"}, True),
    ({"allow_origin": ("*",)}, "http", "POST", {"host": "127.0.0.1:1", "origin": "null"}, True),
    ({"allow_origin": ("*",)}, "websocket", "GET", {"host": "127.0.0.1:1", "origin": EVIL}, True),
    # the Host, while on loopback: any path and method, any port
    ({}, "http", "GET", {"host": "localhost"}, True),
    ({}, "http", "GET", {"host": "127.0.0.5:9"}, True),
    ({}, "http", "GET", {"host": "[::1]"}, True),
    ({}, "http", "GET", {"host": "[0:0::1]:8000"}, True),
    ({}, "http", "GET", {"host": "evil.example.com"}, False),
    ({}, "http", "GET", {"host": "evil.example.com:8000"}, False),
    ({}, "websocket", "GET", {"host": "evil.example.com:8000", "origin": "http://evil.example.com:8000"}, False),
    ({}, "http", "GET", {"host": "128.0.0.1"}, False),
    ({}, "http", "GET", {"host": "localhost.evil.example.com"}, False),
    ({}, "http", "GET", {"host": "localhost:80@evil"}, False),
    ({}, "http", "GET", {"host": "::1"}, False),
    ({}, "http", "GET", {}, False),
    ({"host": "localhost"}, "http", "GET", {"host": "evil.example.com"}, False),
    ({"host": "::1"}, "http", "GET", {"host": "evil.example.com"}, False),
    ({"allow_host": ("App.Example.com",)}, "http", "GET", {"host": "app.example.com:8443"}, True),
    ({"allow_host": ("app.example.com",)}, "http", "POST", {"host": "app.example.com", "origin": APP}, True),
    # not on loopback only: no Host check; the Origin check still holds
    ({"host": "0.0.0.0"}, "http", "GET", {"host": "evil.example.com"}, True),
    ({"host": "::"}, "http", "GET", {}, True),
    ({"host": "10.0.0.1"}, "http", "POST", {"host": "runcast.internal", "origin": "http://runcast.internal"}, True),
    ({"host": "0.0.0.0"}, "http", "POST", {"host": "runcast.internal", "origin": EVIL}, False),
]  # fmt: skip


def test_refusal_decides_from_origin_host_method_and_settings() -> None:
    wrong = []
    for settings, kind, method, headers, allowed in CASES:
        scope = {"type": kind, "method": method, "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
        reason = refusal(scope, Sources.from_settings(Settings(**settings)))
        if (reason is None) != allowed:
            wrong.append((settings, kind, method, headers, reason))
    assert wrong == []
    several = [(b"host", b"127.0.0.1:1"), (b"origin", b"http://127.0.0.1:1"), (b"origin", EVIL.encode())]
    assert refusal({"type": "websocket", "headers": several}, Sources()) is not None
    assert wrong_sources(["https://a.example", "null", "*", "chrome-extension://abc"], ["a.example", "[::1]"]) is None
    for origins, hosts in ((["a.example"], []), (["https://a.example/app"], []), ([], ["a.example:443"])):
        assert wrong_sources(origins, hosts) is not None, (origins, hosts)
    with pytest.raises(ValueError, match="--allow-host"):
        Sources.from_settings(Settings(allow_host=("http://a.example",)))


# ---- against a real server -----------------------------------------------------------


def raw(port: int, request: str) -> tuple[bytes, dict[str, Any]]:
    """The status line and JSON body of the answer to a request written on a fresh socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


def upgrade(port: int, host: str, origin: str) -> str:
    return (
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


def post(url: str, body: str, origin: str | None, **headers: str) -> tuple[int, Any]:
    """A POST as a cross-site form or fetch sends it: a text/plain body, no preflight."""
    headers = {"Content-Type": "text/plain", **({"Origin": origin} if origin else {}), **headers}
    request = urllib.request.Request(url, data=body.encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def forbidden(answer: tuple[int, Any]) -> bool:
    return answer[0] == 403 and answer[1]["error"]["code"] == "forbidden"


async def refused_handshake(url: str, **kw: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(url, open_timeout=10, **kw)
    assert refused.value.response.status_code == 403
    return refused.value


async def test_a_foreign_origin_gets_403_on_ws_and_its_own_origin_is_served(server: ServerProcess) -> None:
    exc = await refused_handshake(server.url, origin=EVIL)
    error = json.loads(exc.response.body)["error"]
    assert error["code"] == "forbidden" and f"--allow-origin {EVIL}" in error["message"], error
    await refused_handshake(server.url, origin=f"http://localhost:{server.port}")  # not 127.0.0.1
    status, body = await asyncio.to_thread(raw, server.port, upgrade(server.port, f"127.0.0.1:{server.port}", EVIL))
    assert status.startswith(b"HTTP/1.1 403") and body["error"]["code"] == "forbidden", (status, body)
    own = await Client.connect(server.url, origin=f"http://127.0.0.1:{server.port}")
    assert (await own.request({"type": "ping"}))["type"] == "pong"
    await Client.connect(server.url)  # no Origin: a program
    assert [line for line in server.tail(100_000).splitlines() if "ERROR" in line or "Traceback" in line] == []


async def test_a_cross_site_post_gets_403_and_does_nothing(server: ServerProcess) -> None:
    api = server.http_url + "/api/runs"
    start = json.dumps({"workflow": "sleep", "input": {"seconds": 60}})
    assert forbidden(await asyncio.to_thread(post, api, start, EVIL))
    assert forbidden(await asyncio.to_thread(post, api, start, "null"))
    assert (await asyncio.to_thread(http, "GET", api))[1]["runs"] == []  # nothing was started
    status, run = await asyncio.to_thread(post, api, start, server.http_url)  # the dashboard's own origin
    assert status == 202, run
    cancel, respond = f"{api}/{run['run_id']}/cancel", f"{api}/{run['run_id']}/respond"
    assert forbidden(await asyncio.to_thread(post, cancel, "{}", EVIL))
    assert forbidden(await asyncio.to_thread(post, respond, '{"request_id": "q", "value": 1}', EVIL))
    assert (await asyncio.to_thread(http, "GET", f"{api}/{run['run_id']}"))[1]["status"] in ("pending", "running")
    assert (await asyncio.to_thread(post, cancel, "{}", None))[0] == 202  # curl


async def test_a_rebound_host_gets_403_everywhere(server: ServerProcess) -> None:
    evil = {"Host": f"evil.example.com:{server.port}"}
    for path in ("/api/runs", "/", "/healthz"):
        answer = await asyncio.to_thread(http, "GET", server.http_url + path, headers=evil)
        assert forbidden(answer), (path, answer)
    assert "--allow-host evil.example.com" in answer[1]["error"]["message"]
    status, body = await asyncio.to_thread(
        raw, server.port, upgrade(server.port, evil["Host"], f"http://{evil['Host']}")
    )
    assert status.startswith(b"HTTP/1.1 403") and body["error"]["code"] == "forbidden", (status, body)
    for host in (f"localhost:{server.port}", f"127.0.0.9:{server.port}"):
        assert (await asyncio.to_thread(http, "GET", server.http_url + "/api/runs", headers={"Host": host}))[0] == 200


async def test_allowed_origins_and_hosts_are_served(new_server: Callable[..., ServerProcess]) -> None:
    app = "http://app.example.com"
    with new_server("--allow-origin", app, "--allow-host", "app.example.com") as server:
        await Client.connect(server.url, origin=app)
        start = json.dumps({"workflow": "echo", "input": 1})
        assert (await asyncio.to_thread(post, server.http_url + "/api/runs", start, app))[0] == 202
        named = {"Host": f"app.example.com:{server.port}"}
        assert (await asyncio.to_thread(http, "GET", server.http_url + "/api/runs", headers=named))[0] == 200
        await refused_handshake(server.url, origin=EVIL)
        bad = {"Host": "evil.example.com"}
        assert forbidden(await asyncio.to_thread(http, "GET", server.http_url + "/api/runs", headers=bad))


async def test_a_token_does_not_let_a_foreign_origin_in(new_server: Callable[..., ServerProcess]) -> None:
    with new_server("--token", "s3cret") as server:
        bearer = {"Authorization": "Bearer s3cret"}
        await refused_handshake(server.url, origin=EVIL, additional_headers=bearer)
        start = json.dumps({"workflow": "echo", "input": 1})
        assert forbidden(await asyncio.to_thread(post, server.http_url + "/api/runs", start, EVIL, **bearer))
        await Client.connect(server.url, origin=server.http_url, additional_headers=bearer)
        assert (await asyncio.to_thread(post, server.http_url + "/api/runs", start, None, **bearer))[0] == 202
