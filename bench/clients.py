"""A client process of the benchmarks: many sockets in one process, driven by JSON lines on stdin.

    python bench/clients.py NAME    # started by bench/fanout.py and bench/conns.py

One Python process reading 100 sockets would be the bottleneck (and on this machine it
shares 2 cores with the server), so the fan-out and connection figures spread their sockets
over several of these. Commands, one JSON object per line; each is answered with one line:

- `{"cmd": "subscribe", "port", "path", "run_id", "sockets"}`: open that many sockets and
  subscribe each to run_id (from seq 0, per-event frames); answers `{"ready": n}` once every
  `subscribed` reply is in. Then, in the background, reads until each socket has the terminal
  event, checking seq order, and keeps for every progress event carrying `t` (the server's
  time.time() at emission) the latency receipt - t. `{"cmd": "collect", "file"}` waits for
  that, writes the latencies (float32, microseconds) to `file` and answers with the counts.
- `{"cmd": "open", "port", "path", "run_ids", "count", "parallel"}`: open `count` sockets, each
  subscribed to one of run_ids in turn, `parallel` handshakes in flight; answers once each has
  its `subscribed` reply and the first two events: `{"ready": n, "seconds": s}`.
- `{"cmd": "close"}`: close every socket; `{"cmd": "exit"}`.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from common import cpu_seconds
from wsclient import WsConn

TERMINAL = frozenset({"run_completed", "run_failed", "run_cancelled"})


@dataclass
class Sub:
    subscribed: asyncio.Future[None]
    finished: asyncio.Future[None]
    expected: int = 1
    events: int = 0
    errors: list[str] = field(default_factory=list)


class Fleet:
    """The sockets of this process and what they received."""

    def __init__(self) -> None:
        self.conns: list[WsConn] = []
        self.latencies = array.array("f")
        self.events = 0
        self.first = 0.0
        self.last = 0.0

    def on_text(self, conn: WsConn, data: bytes, now: float) -> None:
        msg = orjson.loads(data)
        sub: Sub = conn.state
        kind = msg.get("type")
        if kind == "event":
            self._event(sub, msg, now)
        elif kind == "events":
            for event in msg["events"]:
                self._event(sub, event, now)
        elif kind == "subscribed":
            if not sub.subscribed.done():
                sub.subscribed.set_result(None)
        elif kind == "error":
            sub.errors.append(str(msg))
            for fut in (sub.subscribed, sub.finished):
                if not fut.done():
                    fut.set_exception(RuntimeError(f"server error: {msg}"))

    def _event(self, sub: Sub, event: dict[str, Any], now: float) -> None:
        seq = event["seq"]
        if seq != sub.expected and len(sub.errors) < 5:
            sub.errors.append(f"seq {seq} where {sub.expected} was expected")
        sub.expected = seq + 1
        sub.events += 1
        self.events += 1
        if not self.first:
            self.first = now
        self.last = now
        if event["event"] == "progress":
            t = event["data"].get("t")
            if t is not None:
                self.latencies.append((now - t) * 1e6)
        elif event["event"] in TERMINAL and not sub.finished.done():
            sub.finished.set_result(None)

    async def connect(self, port: int, path: str) -> WsConn:
        loop = asyncio.get_running_loop()
        conn = await WsConn.open(port, path, self.on_text)
        conn.state = Sub(loop.create_future(), loop.create_future())
        self.conns.append(conn)
        return conn

    def close(self) -> int:
        n = len(self.conns)
        for conn in self.conns:
            conn.close()
        self.conns = []
        self.latencies = array.array("f")
        self.events = 0
        self.first = self.last = 0.0
        return n


def _subscribe(conn: WsConn, run_id: str, n: int) -> None:
    conn.send(orjson.dumps({"type": "subscribe", "id": n, "run_id": run_id, "after": 0}))


async def cmd_subscribe(fleet: Fleet, cmd: dict[str, Any]) -> dict[str, Any]:
    fleet.close()
    conns = [await fleet.connect(cmd["port"], cmd["path"]) for _ in range(cmd["sockets"])]
    for i, conn in enumerate(conns):
        _subscribe(conn, cmd["run_id"], i)
    await asyncio.wait_for(asyncio.gather(*(c.state.subscribed for c in conns)), 30)
    return {"ready": len(conns), "cpu": cpu_seconds(os.getpid())}


async def cmd_collect(fleet: Fleet, cmd: dict[str, Any]) -> dict[str, Any]:
    await asyncio.wait_for(asyncio.gather(*(c.state.finished for c in fleet.conns)), cmd.get("timeout", 120))
    errors = [e for c in fleet.conns for e in c.state.errors]
    with open(cmd["file"], "wb") as f:
        fleet.latencies.tofile(f)
    out = {
        "events": fleet.events,
        "latencies": len(fleet.latencies),
        "first": fleet.first,
        "last": fleet.last,
        "errors": errors[:5],
        "cpu": cpu_seconds(os.getpid()),
    }
    fleet.close()
    return out


async def cmd_open(fleet: Fleet, cmd: dict[str, Any]) -> dict[str, Any]:
    fleet.close()
    run_ids: list[str] = cmd["run_ids"]
    gate = asyncio.Semaphore(cmd.get("parallel", 64))
    failures: list[str] = []
    began = time.perf_counter()

    async def one(i: int) -> None:
        async with gate:
            try:
                conn = await fleet.connect(cmd["port"], cmd["path"])
                _subscribe(conn, run_ids[i % len(run_ids)], i)
                sub: Sub = conn.state
                await asyncio.wait_for(sub.subscribed, 60)
                deadline = time.monotonic() + 60
                while sub.events < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                if sub.events < 2:
                    raise TimeoutError("no replayed events")
            except Exception as exc:
                if len(failures) < 1000:
                    failures.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(i) for i in range(cmd["count"])))
    return {
        "ready": cmd["count"] - len(failures),
        "failed": len(failures),
        "failures": sorted(set(failures))[:5],
        "seconds": time.perf_counter() - began,
    }


async def main() -> None:
    fleet = Fleet()
    while True:
        line = await asyncio.to_thread(sys.stdin.buffer.readline)
        if not line:
            break
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "exit":
                break
            elif cmd["cmd"] == "subscribe":
                out = await cmd_subscribe(fleet, cmd)
            elif cmd["cmd"] == "collect":
                out = await cmd_collect(fleet, cmd)
            elif cmd["cmd"] == "open":
                out = await cmd_open(fleet, cmd)
            elif cmd["cmd"] == "close":
                out = {"closed": fleet.close()}
                await asyncio.sleep(0.5)  # let the close frames go out
            else:
                out = {"error": f"unknown command {cmd['cmd']}"}
        except Exception as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    fleet.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        try:  # the lightest loop there is, so that the measuring clients take little of the machine
            import uvloop

            uvloop.run(main())
        except ImportError:
            asyncio.run(main())
