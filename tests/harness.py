"""Real servers and real sockets for end-to-end tests: `python -m server` on a free port."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import websockets

from . import frames

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"run_completed", "run_failed", "run_cancelled"}
BACKENDS = ["sqlite", "postgres"]  # the `backend` fixture's values (tests/conftest.py)


def run_row(run_id: str, workflow: str = "wf", status: str = "pending", **extra: Any) -> dict[str, Any]:
    """A run's stored state, for tests that write runs to a store directly."""
    row = {
        "run_id": run_id,
        "workflow": workflow,
        "status": status,
        "input": None,
        "output": None,
        "error": None,
        "created_at": "2026-11-24T10:00:00.000Z",
        "started_at": None,
        "finished_at": None,
        "last_seq": 0,
        "steps": [],
        "waiting_for": [],
        "owner": None,
        "scheduled_for": None,
        "priority": 0,
        "concurrency_key": None,
        "concurrency_limit": None,
        "wake_at": None,
    }
    row.update(extra)
    return row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """A blocking HTTP call (run it with asyncio.to_thread from async tests)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


class ServerProcess:
    """`python -m server` as a child process with its own SQLite file."""

    def __init__(self, db: Path | str, *args: str, log_path: Path | None = None) -> None:
        self.db = db  # a SQLite file, or a postgresql:// URL (then give log_path)
        self.args = list(args)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or Path(db).with_suffix(".log")

    @classmethod
    def node(cls, db_url: str, folder: Path, name: str, *args: str) -> ServerProcess:
        """One node of a cluster on the PostgreSQL database at `db_url`, named `name`."""
        return cls(db_url, "--node-id", name, *args, log_path=folder / f"{name}.log")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> ServerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it
        cmd = [sys.executable, "-m", "server", "--port", str(self.port), "--db", str(self.db), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                status, _ = http("GET", self.http_url + "/healthz")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not become healthy: " + self.tail())

    def __enter__(self) -> ServerProcess:
        """`with ServerProcess(...) as server:` starts it (unless it runs) and stops it after."""
        return self if self.proc is not None and self.proc.poll() is None else self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def restart(self) -> ServerProcess:
        """Start again on the same port and database (after kill or stop)."""
        assert self.proc is None or self.proc.poll() is not None, "stop or kill the server first"
        return self.start()

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def rss_kb(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


OPEN_CLIENTS: list[Client] = []


class Client:
    """A websockets client that keeps every message it receives, in order."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self.used: set[int] = set()
        self._n = 0

    @classmethod
    async def connect(cls, url: str, **kw: Any) -> Client:
        kw.setdefault("close_timeout", 1)  # a gone server's socket closes at once, not after 10 s
        ws = await websockets.connect(url, max_size=None, open_timeout=10, ping_interval=None, **kw)
        client = cls(ws)
        OPEN_CLIENTS.append(client)
        welcome = await client.next()
        assert welcome["type"] == "welcome" and welcome["protocol"] == 1, welcome
        return client

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, msg: Any) -> None:
        await self.ws.send(msg if isinstance(msg, str | bytes) else json.dumps(msg))

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        frames.check(msg)  # every frame the suite receives is one docs/asyncapi.yaml describes
        self.inbox.append(msg)
        return msg

    async def wait(self, pred: Any, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.inbox):
                if i not in self.used and pred(m):
                    self.used.add(i)
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; last messages: {self.inbox[-3:]}")
            await self.next(left)

    async def request(self, msg: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        self._n += 1
        rid = f"r{self._n}"
        await self.send({**msg, "id": rid})
        return await self.wait(lambda m: m.get("id") == rid, timeout)

    async def start(self, workflow: str, input: Any = None, **kw: Any) -> str:
        reply = await self.request({"type": "start", "workflow": workflow, "input": input, **kw})
        assert reply["type"] == "started", reply
        return str(reply["run"]["run_id"])

    def events(self, run_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in self.inbox:
            if m.get("type") == "event" and m.get("run_id") == run_id:
                out.append(m)
            elif m.get("type") == "events" and m.get("run_id") == run_id:
                out.extend(m["events"])
        return out

    async def until_terminal(self, run_id: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        done = any(e["event"] in TERMINAL for e in self.events(run_id))
        while not done:
            left = deadline - time.monotonic()
            if left <= 0:
                kinds = [e["event"] for e in self.events(run_id)][-5:]
                raise AssertionError(f"run {run_id} did not end; last events {kinds}")
            msg = await self.next(left)
            if msg.get("run_id") == run_id:
                batch = msg["events"] if msg.get("type") == "events" else [msg] if msg.get("type") == "event" else []
                done = any(e["event"] in TERMINAL for e in batch)
        return self.events(run_id)


class StoredEvents:
    """The events a server's database holds, read behind its back: `async with StoredEvents(db)`
    on a SQLite file or a postgresql:// URL."""

    def __init__(self, db: Path | str) -> None:
        self.db = db
        self._pg: Any = None
        self._sqlite: sqlite3.Connection | None = None

    @property
    def on_postgres(self) -> bool:
        return str(self.db).startswith(("postgresql://", "postgres://"))

    async def __aenter__(self) -> StoredEvents:
        if self.on_postgres:
            import asyncpg  # an extra: only the PostgreSQL tests need it

            self._pg = await asyncpg.connect(str(self.db), timeout=10)
        else:
            self._sqlite = sqlite3.connect(self.db)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()

    async def frame(self, run_id: str, seq: int) -> str | None:
        """The stored frame of one event, or None."""
        sql = "SELECT frame FROM events WHERE run_id = {} AND seq = {}"
        if self._pg is not None:
            return await self._pg.fetchval(sql.format("$1", "$2"), run_id, seq)  # type: ignore[no-any-return]
        assert self._sqlite is not None
        row = self._sqlite.execute(sql.format("?", "?"), (run_id, seq)).fetchone()
        return row[0] if row else None

    async def last_seq(self, run_id: str) -> int | None:
        """The run's stored last_seq, or None."""
        sql = "SELECT last_seq FROM runs WHERE run_id = {}"
        if self._pg is not None:
            return await self._pg.fetchval(sql.format("$1"), run_id)  # type: ignore[no-any-return]
        assert self._sqlite is not None
        row = self._sqlite.execute(sql.format("?"), (run_id,)).fetchone()
        return row[0] if row else None

    async def frames(self, run_id: str) -> list[str]:
        """Every stored frame of a run, in seq order."""
        sql = "SELECT frame FROM events WHERE run_id = {} ORDER BY seq"
        if self._pg is not None:
            return [row[0] for row in await self._pg.fetch(sql.format("$1"), run_id)]
        assert self._sqlite is not None
        return [row[0] for row in self._sqlite.execute(sql.format("?"), (run_id,))]


def stored_log(db: Path | str, run_id: str) -> list[str]:
    """A run's stored frames in seq order, read behind the server's back (blocking; from sync
    or async tests alike: it reads on a thread with its own event loop)."""

    async def read() -> list[str]:
        async with StoredEvents(db) as stored:
            return await stored.frames(run_id)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


def events_over_http(http_url: str, run_id: str) -> list[dict[str, Any]]:
    """Every stored event of a run through `GET /api/runs/{id}/events`, page by page until
    an empty page (a page may end early at 1 MiB). Blocking: use asyncio.to_thread."""
    events: list[dict[str, Any]] = []
    while True:
        after = events[-1]["seq"] if events else 0
        status, page = http("GET", f"{http_url}/api/runs/{run_id}/events?after={after}")
        assert status == 200, page
        if not page["events"]:
            return events
        events.extend(page["events"])


def assert_log(events: list[dict[str, Any]], first: int = 1) -> None:
    """Seq contiguous from `first`, exactly one terminal event, and it is last."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first, first + len(seqs))), f"seq not contiguous from {first}: {seqs[:50]}"
    kinds = [e["event"] for e in events]
    assert sum(k in TERMINAL for k in kinds) == 1 and kinds[-1] in TERMINAL, kinds[-5:]


class StalledClient:
    """A WebSocket client that reads only when told to: a small socket buffer, no eager library.

    Built on the websockets sans-I/O protocol over a raw asyncio stream, so that when it
    stops reading, the server really cannot write to it."""

    def __init__(self, url: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.url = url
        self.messages: list[dict[str, Any]] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, port: int) -> StalledClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        self._reader, self._writer = await asyncio.open_connection(sock=sock, limit=4096)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while not self.messages:  # the handshake, then the welcome
            await self.read_some(10)
        return self

    def _flush(self) -> None:
        assert self._writer is not None
        for chunk in self.protocol.data_to_send():
            if chunk:
                self._writer.write(chunk)

    def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    async def send_raw(self, data: bytes, timeout: float) -> bool:
        """Write bytes as they are (hand-made frames); False if the server took none of
        them for `timeout` seconds (it stopped reading). Raises once the server has closed."""
        assert self._writer is not None
        self._writer.write(data)
        try:
            await asyncio.wait_for(self._writer.drain(), timeout)
        except TimeoutError:
            return False
        return True

    async def read_some(self, timeout: float) -> bool:
        """Read what the socket has (waiting up to `timeout` for something); False at its end."""
        assert self._reader is not None
        data = await asyncio.wait_for(self._reader.read(65536), timeout)
        if not data:
            self.protocol.receive_eof()
            return False
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if getattr(event, "opcode", None) is not None and event.opcode.name == "TEXT":
                self.messages.append(json.loads(event.data))
        self._flush()  # answers pings and the closing handshake
        return True

    async def read_until_closed(self, timeout: float = 30) -> int | None:
        """Read everything; the close code the server sent (None if it sent none)."""
        deadline = time.monotonic() + timeout
        while self.protocol.close_rcvd is None:
            left = deadline - time.monotonic()
            if left <= 0 or not await self.read_some(left):
                break
        return self.protocol.close_rcvd.code if self.protocol.close_rcvd else None

    async def read_until_terminal(self, run_id: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Read until the run's terminal event; its events, in the order received."""
        deadline = time.monotonic() + timeout

        def events() -> list[dict[str, Any]]:
            return [m for m in self.messages if m.get("type") == "event" and m.get("run_id") == run_id]

        while not any(e["event"] in TERMINAL for e in events()):
            left = deadline - time.monotonic()
            if left <= 0 or not await self.read_some(left):
                raise AssertionError(f"run {run_id} did not end for the stalled client")
        return events()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
