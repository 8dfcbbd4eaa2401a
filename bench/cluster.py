"""Cluster mode on PostgreSQL: each figure next to a baseline measured in the same run, on one
throwaway PostgreSQL (tests/pg.py: initdb + pg_ctl, fsync off) and a fresh database per
measurement.

    .venv/bin/python bench/cluster.py [--quick] [--json PATH]

c1. One node on PostgreSQL against SQLite: chain3 runs/s over /ws (bench/runs.py `ws_runs`:
    4 sockets pipeline `start`, subscribed, reading every event), and live events/s of one
    `count` run to one subscriber (bench/stream.py `live`).
c2. Two nodes against one node, both on PostgreSQL: the same /ws load, the 4 sockets spread
    over both nodes (each node runs the runs started through it while it has free slots).
c3. runcast against Agno 3.1, both on PostgreSQL: bench/runs.py's Python-API driver
    (`arun(background=True)` in chunks of 100, then `get_run` polling), runcast's PostgresDb
    against Agno's PostgresDb (SQLAlchemy, psycopg 3); and runcast polling with `aget_run`.
c4. Cross-node delivery: an `emit` run (bench/flows.py) started through node A sends progress
    events at a fixed rate, each carrying `t`, the time it was due (node A's clock); one socket
    on A and one on B are subscribed before it starts. Latency = receive time (bench/wsclient.py,
    when the bytes arrive) - `t`: the same events, seen through B (figure) and A (baseline).
c5. Takeover: nodes A and B with --takeover-seconds T; a `sleep` run owned by A, followed
    through B; `kill -9` of A; seconds from the kill to `run_resumed` (reason takeover) on B's
    socket. The baseline is T itself, for T = 2 and the default 10.

The machine has 2 cores: PostgreSQL, every node and the client share them, so two nodes cannot
show two machines' worth of throughput here; c2 shows what coordination costs, not scale-out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from common import TERMINAL, HttpServer, Report, Row, env_note, over_budget, parser, run_script, start_runcast
from runs import measure, ws_runs
from stream import live
from wsclient import WsConn

from tests import pg


@dataclass(frozen=True)
class Sizes:
    rounds: int  # of c1-c4, each round measures figure and baseline back to back
    ws_runs: int
    sockets: int
    live_events: int
    api_runs: int
    rate: float  # c4: events/s of the emit run
    emit_seconds: float
    takeovers: tuple[tuple[float, int], ...]  # (--takeover-seconds, rounds)


FULL = Sizes(3, 1000, 4, 20_000, 300, 200, 5, ((2, 3), (10, 2)))
QUICK = Sizes(1, 200, 4, 5_000, 30, 200, 3, ((2, 1), (10, 1)))
BUDGET = 90.0  # seconds for the rounds of one figure; the first round always runs


class Nodes:
    """A throwaway PostgreSQL, and runcast nodes on fresh databases of it."""

    def __init__(self, workdir: Path, postgres: pg.Postgres) -> None:
        self.workdir = workdir
        self.postgres = postgres
        self.k = 0
        self.url = ""

    async def start(self, count: int, *flags: str) -> list[HttpServer]:
        """`count` nodes (a, b, ...) on one new database."""
        url = self.url = self.postgres.new_database()
        self.k += 1
        names = [f"{chr(ord('a') + i)}{self.k}" for i in range(count)]
        return [await start_runcast(self.workdir, n, "--node-id", n, *flags, db=url) for n in names]

    def connections(self) -> int:
        """Client connections to the newest database now (pg_stat_activity)."""
        psql = pg.pg_bin("psql") or "psql"
        name = self.url.rsplit("/", 1)[1]
        sql = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"
        argv = [psql, "-h", "127.0.0.1", "-p", str(self.postgres.port), "-U", "postgres", "-tAc", sql, "postgres"]
        return int(subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout.strip())


def commits(servers: list[HttpServer]) -> float:
    """Store transactions the nodes committed so far (/metrics); each sends one NOTIFY."""
    total = 0.0
    for server in servers:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            lines = response.read().decode().splitlines()
        total += sum(float(line.split()[1]) for line in lines if line.startswith("runcast_store_batches_total "))
    return total


async def ws_load(servers: list[HttpServer], sizes: Sizes) -> tuple[float, float]:
    """bench/runs.py's /ws load on these nodes: (runs/s, store commits/s of all nodes together)."""
    before = await asyncio.to_thread(commits, servers)
    seconds = await ws_runs(servers, sizes.ws_runs, sizes.sockets)
    return sizes.ws_runs / seconds, (await asyncio.to_thread(commits, servers) - before) / seconds


def stop(servers: list[HttpServer]) -> None:
    for server in servers:
        server.stop()


class Watcher:
    """One socket: its replies, the progress events' latencies, the first event of each kind."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.latencies: list[float] = []
        self.first: dict[str, tuple[float, dict[str, Any]]] = {}
        self.seen = asyncio.Event()

    def on_text(self, conn: WsConn, data: bytes, now: float) -> None:
        msg = orjson.loads(data)
        if msg.get("type") != "event":
            self.replies.put_nowait(msg)
            return
        event = msg["event"]
        if event == "progress" and "t" in (msg.get("data") or {}):
            self.latencies.append(now - msg["data"]["t"])
        self.first.setdefault(event, (now, msg))
        self.seen.set()

    async def reply(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        while True:
            msg = await asyncio.wait_for(self.replies.get(), timeout)
            if msg["type"] == "error":
                raise RuntimeError(f"server error: {msg}")
            if msg["type"] == kind:
                return msg

    async def until(self, event: str, timeout: float) -> tuple[float, dict[str, Any]]:
        """(receive time, frame) of the first `event` on this socket."""
        deadline = time.monotonic() + timeout
        while event not in self.first:
            self.seen.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {event} within {timeout:.0f} s (saw {sorted(self.first)})")
            # asyncio.timeout, not wait_for: under 3.11 wait_for can swallow a cancel at its timeout
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self.seen.wait()
        return self.first[event]

    def terminal(self) -> bool:
        return any(e in self.first for e in TERMINAL)


async def watch(server: HttpServer) -> tuple[WsConn, Watcher]:
    watcher = Watcher()
    conn = await WsConn.open(server.port, "/ws", watcher.on_text)
    await watcher.reply("welcome")
    return conn, watcher


async def start_run(conn: WsConn, watcher: Watcher, workflow: str, data: dict[str, Any], subscribe: bool) -> str:
    conn.send(orjson.dumps({"type": "start", "id": 1, "workflow": workflow, "input": data, "subscribe": subscribe}))
    return str((await watcher.reply("started"))["run"]["run_id"])


async def subscribe(conn: WsConn, watcher: Watcher, run_id: str) -> None:
    conn.send(orjson.dumps({"type": "subscribe", "id": 2, "run_id": run_id, "after": 0}))
    await watcher.reply("subscribed")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- the figures ----------------------------------------------------------------------------


@dataclass
class Pairs:
    """Per round: the figure and its baseline, measured back to back."""

    values: list[float] = field(default_factory=list)
    baselines: list[float] = field(default_factory=list)


async def rounds(count: int, one: Callable[[int], Awaitable[None]]) -> None:
    began = time.perf_counter()
    for r in range(count):
        if r and over_budget(began, BUDGET):
            break
        await one(r)


async def c1_c2(sizes: Sizes, workdir: Path, nodes: Nodes, report: Report) -> None:
    runs_pg, live_pg, two = Pairs(), Pairs(), Pairs()
    notes: list[str] = []

    async def one(r: int) -> None:
        sqlite = await start_runcast(workdir, f"sqlite{r}")
        try:
            sqlite_rate = sizes.ws_runs / await ws_runs(sqlite, sizes.ws_runs, sizes.sockets)
            sqlite_live = await live(sqlite, sizes.live_events, batch=False)
        finally:
            sqlite.stop()
        single = await nodes.start(1)
        try:
            pg_rate, pg_commits = await ws_load(single, sizes)
            pg_conns = await asyncio.to_thread(nodes.connections)
            pg_live = await live(single[0], sizes.live_events, batch=False)
        finally:
            stop(single)
        pair = await nodes.start(2)
        try:
            two_rate, two_commits = await ws_load(pair, sizes)
            two_conns = await asyncio.to_thread(nodes.connections)
        finally:
            stop(pair)
        runs_pg.values.append(pg_rate)
        runs_pg.baselines.append(sqlite_rate)
        live_pg.values.append(pg_live)
        live_pg.baselines.append(sqlite_live)
        two.values.append(two_rate)
        two.baselines.append(pg_rate)
        print(
            f"  round {r + 1}: /ws runs/s sqlite {sqlite_rate:,.0f}  postgres 1 node {pg_rate:,.0f}  "
            f"2 nodes {two_rate:,.0f}; live events/s sqlite {sqlite_live:,.0f}  postgres {pg_live:,.0f}",
            flush=True,
        )
        notes.append(
            f"round {r + 1}: commits (= NOTIFYs)/s 1 node {pg_commits:,.0f} ({8 * pg_rate / pg_commits:.1f} events "
            f"each), 2 nodes {two_commits:,.0f} in all; connections after the load: 1 node {pg_conns}, "
            f"2 nodes {two_conns}"
        )

    await rounds(sizes.rounds, one)
    report.notes.append("c1a/c2: " + "; ".join(notes))
    load = f"{sizes.ws_runs:,} chain3 runs, {sizes.sockets} sockets"
    report.rows.append(
        Row("c1a", f"runs/s over /ws, 1 node on PostgreSQL ({load})", "runs/s", *_pair(runs_pg, "SQLite, same load"))
    )
    report.rows.append(
        Row(
            "c1b",
            f"events/s over /ws of those runs (8 per run), PostgreSQL ({load})",
            "events/s",
            [v * 8 for v in runs_pg.values],
            "SQLite, same load",
            [b * 8 for b in runs_pg.baselines],
        )
    )
    report.rows.append(
        Row(
            "c1c",
            f"live events/s to 1 subscriber, count n={sizes.live_events:,}, PostgreSQL",
            "events/s",
            *_pair(live_pg, "SQLite, same run"),
        )
    )
    report.rows.append(
        Row(
            "c2",
            f"runs/s over /ws, 2 nodes on one PostgreSQL, sockets spread over both ({load})",
            "runs/s",
            *_pair(two, "1 node on PostgreSQL, same load"),
        )
    )


def _pair(pairs: Pairs, baseline: str) -> tuple[list[float], str, list[float]]:
    return pairs.values, baseline, pairs.baselines


async def c3(sizes: Sizes, workdir: Path, nodes: Nodes, report: Report) -> None:
    kinds = ("agno", "api", "api-aget")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    version = ""

    async def one(r: int) -> None:
        nonlocal version
        for kind in kinds:
            answer = await measure(workdir, kind, sizes.api_runs, url=nodes.postgres.new_database())
            rates[kind].append(answer["rate"])
            version = answer.get("version", version)
        print(f"  round {r + 1}: " + "  ".join(f"{k} {rates[k][-1]:,.1f}" for k in kinds) + " runs/s", flush=True)

    await rounds(sizes.rounds, one)
    base = f"Agno {version} PostgresDb, same workflow and driver"
    what = f"chain3 runs/s on PostgreSQL, {sizes.api_runs} runs: runcast arun(background) +"
    report.rows.append(Row("c3a", f"{what} get_run polling", "runs/s", rates["api"], base, rates["agno"]))
    report.rows.append(Row("c3b", f"{what} aget_run polling", "runs/s", rates["api-aget"], base, rates["agno"]))


async def c4(sizes: Sizes, workdir: Path, nodes: Nodes, report: Report) -> None:
    p50, p99 = Pairs(), Pairs()
    n = int(sizes.rate * sizes.emit_seconds)

    async def one(r: int) -> None:
        a, b = servers = await nodes.start(2)
        conns: list[WsConn] = []
        try:
            ca, wa = await watch(a)
            cb, wb = await watch(b)
            conns += [ca, cb]
            go = workdir / f"go-{r}"
            run_id = await start_run(ca, wa, "emit", {"n": n, "rate": sizes.rate, "go": str(go)}, subscribe=True)
            await subscribe(cb, wb, run_id)
            await wb.until("step_started", 30)  # B follows the run: the feed has caught up
            go.touch()
            for w in (wa, wb):
                await w.until("run_completed", sizes.emit_seconds * 3 + 30)
            if len(wa.latencies) != n or len(wb.latencies) != n:
                raise RuntimeError(f"c4: {len(wa.latencies)} / {len(wb.latencies)} progress events, expected {n}")
        finally:
            for conn in conns:
                conn.close()
            stop(servers)
        ms = [[x * 1000 for x in w.latencies] for w in (wb, wa)]
        p50.values.append(percentile(ms[0], 0.5))
        p50.baselines.append(percentile(ms[1], 0.5))
        p99.values.append(percentile(ms[0], 0.99))
        p99.baselines.append(percentile(ms[1], 0.99))
        print(
            f"  round {r + 1}: cross-node p50 {p50.values[-1]:.1f} ms p99 {p99.values[-1]:.1f} ms; "
            f"same node p50 {p50.baselines[-1]:.1f} ms p99 {p99.baselines[-1]:.1f} ms",
            flush=True,
        )

    await rounds(sizes.rounds, one)
    what = f"delivery latency, run on node A -> subscriber on node B, {n:,} events at {sizes.rate:g}/s"
    base = "subscriber on node A, same events"
    for fig, q, pairs in (("c4a", "p50", p50), ("c4b", "p99", p99)):
        report.rows.append(Row(fig, f"{q} {what}", "ms", *_pair(pairs, base), lower_is_better=True))


async def c5(sizes: Sizes, nodes: Nodes, report: Report) -> None:
    for k, (takeover, count) in enumerate(sizes.takeovers):
        seconds: list[float] = []

        async def one(r: int, takeover: float = takeover, seconds: list[float] = seconds) -> None:
            a, b = servers = await nodes.start(2, "--takeover-seconds", f"{takeover:g}")
            conns: list[WsConn] = []
            try:
                ca, wa = await watch(a)
                cb, wb = await watch(b)
                conns += [ca, cb]
                run_id = await start_run(ca, wa, "sleep", {"seconds": 3600}, subscribe=False)
                await subscribe(cb, wb, run_id)
                await wb.until("step_started", 30)  # A runs it, B follows it
                a.proc.kill()
                killed = time.time()
                at, frame = await wb.until("run_resumed", takeover * 3 + 30)
                if frame["data"].get("reason") != "takeover":
                    raise RuntimeError(f"c5: run_resumed {frame['data']}")
                seconds.append(at - killed)
            finally:
                for conn in conns:
                    conn.close()
                stop(servers)
            print(f"  --takeover-seconds {takeover:g}, round {r + 1}: run_resumed {seconds[-1]:.2f} s after kill -9")

        await rounds(count, one)
        report.rows.append(
            Row(
                f"c5{'ab'[k] if k < 2 else k}",
                f"takeover: kill -9 of the owner -> run_resumed through another node, --takeover-seconds {takeover:g}",
                "s",
                seconds,
                "--takeover-seconds itself",
                [takeover] * len(seconds),
                lower_is_better=True,
            )
        )


async def main(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    sizes = QUICK if args.quick else FULL
    if not pg.available():
        report.notes.append("PostgreSQL is not installed (initdb/pg_ctl; make postgres installs it): nothing measured")
        return
    if args.profile:
        report.notes.append("--profile: not supported by cluster.py (the figures are taken without it)")
    # Its own folder (pg.Postgres hands it to the postgres user): never under a root-only one.
    base = Path(tempfile.mkdtemp(prefix="runcast-bench-pg-"))
    postgres = pg.Postgres(base)
    started = False
    try:
        postgres.start()
        started = True
        nodes = Nodes(workdir, postgres)
        print("c1, c2: PostgreSQL against SQLite, 2 nodes against 1", flush=True)
        await c1_c2(sizes, workdir, nodes, report)
        print("c3: runcast against Agno on PostgreSQL", flush=True)
        await c3(sizes, workdir, nodes, report)
        print("c4: cross-node delivery latency", flush=True)
        await c4(sizes, workdir, nodes, report)
        print("c5: takeover", flush=True)
        await c5(sizes, nodes, report)
    finally:
        try:
            if started:
                postgres.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
    rounds_note = f"{len(report.rows[0].values)} rounds" if report.rows else "no rounds"
    report.notes.append(f"{rounds_note}; PostgreSQL {pg.pg_bin('initdb')}, fsync off; {env_note()}")


if __name__ == "__main__":
    raise SystemExit(run_script("cluster", parser(__doc__).parse_args(), main))
