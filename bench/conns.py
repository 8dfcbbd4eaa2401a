"""Figure 4: idle subscribed connections on one server process, and the server memory each costs.

    .venv/bin/python bench/conns.py [--quick] [--json PATH] [--connections N]

runcast: a server with 10 `sleep` runs (3600 s); 15,000 sockets, opened from 3 client processes
(bench/clients.py, 5,000 each, 64 handshakes in flight per process), each subscribed to one of
the runs and holding its `subscribed` reply and the two replayed events (run_started,
step_started); then they sit idle. The server's VmRSS (/proc/PID/status) is read before the
first socket and again once all are in (after a second to settle); growth / connections is
the figure. Baseline: the same sockets, the same messages, on bench/bare.py's /ws (a bare
Starlette endpoint that answers `subscribed` and the same two frames), in the same run.

The process file limit here is 20,000 (ulimit -n): the server needs one fd per socket plus a
few; each client process holds 5,000. Nothing raises a limit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import websockets
from common import (
    WS_KW,
    HttpServer,
    Report,
    Row,
    env_note,
    parser,
    rss_kb,
    run_script,
    start_bare,
    start_runcast,
    start_workers,
)

GOAL_KB = 32.0


@dataclass
class Held:
    connections: int
    failed: int
    failures: list[str]
    seconds: float
    rss_before_kb: int
    rss_after_kb: int
    fds: int

    @property
    def per_connection_kb(self) -> float:
        return (self.rss_after_kb - self.rss_before_kb) / max(self.connections, 1)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def sleep_runs(server: HttpServer, count: int) -> list[str]:
    ws = await websockets.connect(server.ws_url(), **WS_KW)
    try:
        await ws.recv()  # welcome
        ids = []
        for i in range(count):
            start = {"type": "start", "id": i, "workflow": "sleep", "input": {"seconds": 3600}, "subscribe": False}
            await ws.send(orjson.dumps(start).decode())
            msg = orjson.loads(await ws.recv())
            if msg["type"] != "started":
                raise RuntimeError(f"start failed: {msg}")
            ids.append(msg["run"]["run_id"])
        return ids
    finally:
        await ws.close()


async def hold(workdir: Path, server: HttpServer, run_ids: list[str], total: int, processes: int) -> Held:
    workers = start_workers(workdir, f"idle-{server.name}-", processes)
    try:
        await asyncio.sleep(1.0)  # the client processes start
        before = rss_kb(server.pid)
        share = [total // processes + (i < total % processes) for i in range(processes)]
        for w, k in zip(workers, share, strict=True):
            w.send({"cmd": "open", "port": server.port, "path": "/ws", "run_ids": run_ids, "count": k, "parallel": 64})
        outs = [await w.recv(timeout=600) for w in workers]
        await asyncio.sleep(1.0)
        after = rss_kb(server.pid)
        fds = fd_count(server.pid)
        for w in workers:
            w.send({"cmd": "close"})
        for w in workers:
            await w.recv(timeout=120)
        return Held(
            sum(o["ready"] for o in outs),
            sum(o["failed"] for o in outs),
            sorted({f for o in outs for f in o["failures"]})[:5],
            max(o["seconds"] for o in outs),
            before,
            after,
            fds,
        )
    finally:
        for w in workers:
            w.stop()


def describe(name: str, h: Held) -> str:
    return (
        f"{name}: {h.connections:,} held ({h.failed} failed) in {h.seconds:.1f} s, "
        f"RSS {h.rss_before_kb / 1024:.1f} -> {h.rss_after_kb / 1024:.1f} MiB = {h.per_connection_kb:.1f} KB each, "
        f"{h.fds:,} fds open"
    )


async def main(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    total = args.connections or (300 if args.quick else 15_000)
    processes = 3 if total > 1000 else 1
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if total + 100 > soft:
        raise SystemExit(f"{total} connections need more than the file limit {soft} of the server process")

    server = await start_runcast(workdir, "conns", workflows=False)
    run_ids = await sleep_runs(server, 10)
    rc = await hold(workdir, server, run_ids, total, processes)
    print("  " + describe("runcast", rc), flush=True)
    server.stop()

    bare = await start_bare(workdir)
    bb = await hold(workdir, bare, [f"idle-{i}" for i in range(10)], total, processes)
    print("  " + describe("bare", bb), flush=True)
    bare.stop()

    reached = rc.connections >= total
    met = reached and rc.per_connection_kb < GOAL_KB
    why = ""
    if not reached:
        why = f"only {rc.connections:,} of {total:,} connections held: {rc.failures}"
    elif not met:
        why = f"{rc.per_connection_kb:.1f} KB per connection (bare: {bb.per_connection_kb:.1f} KB)"
    report.rows.append(
        Row(
            "4",
            f"server RSS growth per idle subscribed connection ({rc.connections:,} held)",
            "KB",
            [rc.per_connection_kb],
            f"bare Starlette /ws, {bb.connections:,} held",
            [bb.per_connection_kb],
            goal=f"< {GOAL_KB:g} KB each at {total:,}",
            met=met,
            why=why,
            note=f"runcast RSS {rc.rss_before_kb / 1024:.0f} -> {rc.rss_after_kb / 1024:.0f} MiB, opened in "
            f"{rc.seconds:.1f} s ({rc.connections / rc.seconds:,.0f}/s); bare {bb.rss_before_kb / 1024:.0f} -> "
            f"{bb.rss_after_kb / 1024:.0f} MiB in {bb.seconds:.1f} s",
            lower_is_better=True,
        )
    )
    report.notes.append(
        f"{total:,} sockets from {processes} client processes, each subscribed to one of 10 runs; {env_note()}; "
        f"measured at {time.strftime('%H:%M:%S')}"
    )


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--connections", type=int, default=0, help="how many sockets (default 15,000; 300 with --quick)")
    raise SystemExit(run_script("conns", p.parse_args(), main))
