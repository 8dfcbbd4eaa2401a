"""Throughput of runcast, each figure next to a baseline measured in the same run.

    .venv/bin/python bench/runs.py            # full sizes, about a minute on 2 cores
    .venv/bin/python bench/runs.py --quick    # small sizes, a few seconds (a smoke check)

1. chain runs/s through the Python API (in-process Runtime) vs. a naive stdlib sqlite3 loop
   that commits every event in its own transaction.
2. chain runs/s through /ws (real server process, several sockets, `subscribe: false`)
   vs. the same naive loop (and, for reference, figure 1).
3. events/s delivered to one /ws subscriber of `count` (per-event frames, then `batch: true`)
   vs. a bare Starlette WebSocket endpoint in its own uvicorn process that pushes the same
   number of pre-encoded frames of the same shape.

The machine is shared and noisy, so each figure is measured right next to its baseline, in
`--repeats` rounds; the table gives medians, and the ratio is the median of the per-round
ratios: that is the figure to look at. Everything talks to 127.0.0.1 only; subprocesses and
temp files are removed even on error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import orjson
import websockets

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from server.examples import BUILT_IN  # noqa: E402
from server.protocol import dumps, event_frame, utc_now  # noqa: E402
from server.runtime import Runtime  # noqa: E402
from server.store import _UPSERT_RUN, MIGRATIONS, BatchStats, _run_params  # noqa: E402
from tests.harness import ServerProcess, free_port, http  # noqa: E402

TERMINAL = frozenset({"run_completed", "run_failed", "run_cancelled"})
CHAIN_INPUT: dict[str, Any] = {"n": 3, "delay": 0}
# A short close_timeout: after an interruption the server may still be working through pipelined
# starts ahead of the close frame, and the default (10 s per socket) would hold up the teardown.
WS_KW: dict[str, Any] = {"max_size": None, "ping_interval": None, "open_timeout": 10, "close_timeout": 2}
CHILDREN: list[ServerProcess | BareProcess] = []  # every server started; main() stops what is left


@dataclass(frozen=True)
class Sizes:
    runs: int  # chain runs for figures 1 and 2
    chunk: int  # runs started concurrently at a time through the Python API
    connections: int  # sockets for figure 2
    events: int  # `count` n for figure 3
    repeats: int  # rounds; each figure is measured right next to its baseline in every round


# Seconds a figure may take before its remaining rounds are skipped (the first always runs), so
# that a full run stays within about two minutes even when other work loads the machine.
BUDGET = {1: 30.0, 2: 30.0, 3: 40.0}

FULL = Sizes(runs=2000, chunk=250, connections=4, events=50_000, repeats=3)
QUICK = Sizes(runs=200, chunk=100, connections=4, events=5_000, repeats=1)


# ---- figure 1: Python API vs. one transaction per event ----------------------------------


@dataclass
class ApiResult:
    seconds: float
    stats: BatchStats
    events_per_run: int
    sample: list[tuple[str, str | None, Any]]  # (event, step, data) of one run, for the baseline
    stale: int  # wait() answers that were not `completed` although the run had completed
    run_row: dict[str, Any]  # the final snapshot of one run: the row the baseline writes


async def bench_api(db: Path, runs: int, chunk: int) -> ApiResult:
    """Start `runs` chain runs in concurrent chunks, wait until every one has finished."""
    runtime = Runtime(str(db), BUILT_IN)
    opening = asyncio.ensure_future(runtime.open())
    try:
        await asyncio.shield(opening)  # interrupted or not, the runtime is fully opened, then closed
        engine = runtime.engine
        ids: list[str] = []
        started = time.perf_counter()
        for first in range(0, runs, chunk):
            batch = await asyncio.gather(*(engine.start("chain", CHAIN_INPUT) for _ in range(min(chunk, runs - first))))
            ids.extend(run["run_id"] for run, _ in batch)
        finals = await asyncio.gather(*(engine.wait(run_id) for run_id in ids))
        seconds = time.perf_counter() - started
        stats = dataclasses.replace(runtime.store.stats)
        # Outside the timed part: wait() may hand back a stale snapshot (the store's shared reader
        # connection keeps an old read transaction open under concurrent reads; see RESULTS.md),
        # so every non-completed answer is read again, alone, before calling it a failure.
        stale = [f["run_id"] for f in finals if f["status"] != "completed"]
        for run_id in stale:
            again = await runtime.store.get_run(run_id, steps=False)
            if again is None or again["status"] != "completed":
                raise RuntimeError(f"chain run {run_id} did not complete: {again}")
        run_row = await runtime.store.get_run(ids[0])
        assert run_row is not None
        events = await runtime.store.read_events(ids[0], 0, 1000)
        sample = []
        for stored in events:
            frame = orjson.loads(stored.frame)
            sample.append((frame["event"], frame["step"], frame["data"]))
        if stats.events != runs * len(sample):
            raise RuntimeError(f"store wrote {stats.events} events, expected {runs} x {len(sample)}")
        return ApiResult(seconds, stats, len(sample), sample, len(stale), run_row)
    finally:
        await asyncio.gather(opening, return_exceptions=True)
        await runtime.close()


def bench_naive(db: Path, runs: int, api: ApiResult) -> float:
    """The naive store: same schema, same rows, same frames, but one committed transaction per write.

    Per run: insert the run row (one transaction), then for each event insert it and upsert the
    run's row (status, steps, last_seq...) with the store's own statement, in one transaction per
    event: what the engine asks the store to write for a chain run. Plain synchronous sqlite3,
    WAL, synchronous=NORMAL, as the server's store uses. No engine, no asyncio, no threads.
    """
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for script in MIGRATIONS:  # the store's schema, indexes included
            conn.executescript(script)
        sample = api.sample
        started = time.perf_counter()
        for i in range(runs):
            run_id = f"naive-{i:08d}"
            row = {**api.run_row, "run_id": run_id, "status": "pending", "created_at": utc_now()}
            conn.execute("BEGIN")
            conn.execute(_UPSERT_RUN, _run_params(row, 0))
            conn.execute("COMMIT")
            for seq, (event, step, data) in enumerate(sample, start=1):
                frame = event_frame(run_id, seq, event, step, utc_now(), data)
                row["status"] = "completed" if event in TERMINAL else "running"
                conn.execute("BEGIN")
                conn.execute(
                    "INSERT INTO events (run_id, seq, event, frame) VALUES (?, ?, ?, ?)", (run_id, seq, event, frame)
                )
                conn.execute(_UPSERT_RUN, _run_params(row, seq))
                conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
        if count != runs * len(sample):
            raise RuntimeError(f"naive loop stored {count} events, expected {runs * len(sample)}")
        return seconds
    finally:
        conn.close()


# ---- figure 2: runs through /ws ---------------------------------------------------------


async def connect(url: str) -> Any:
    ws = await websockets.connect(url, **WS_KW)
    welcome = orjson.loads(await ws.recv())
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"expected welcome, got {welcome}")
    return ws


async def _start_many(ws: Any, frames: list[str]) -> None:
    """Pipeline every start on this socket and read the `started` replies as they come."""

    async def send_all() -> None:
        for frame in frames:
            await ws.send(frame)

    sender = asyncio.create_task(send_all())
    try:
        got = 0
        while got < len(frames):
            msg = orjson.loads(await ws.recv())
            if msg["type"] == "started":
                got += 1
            elif msg["type"] == "error":
                raise RuntimeError(f"start failed: {msg}")
        await sender
    finally:
        sender.cancel()


async def _until_idle(ws: Any, interval: float = 0.005) -> None:
    """Return once no run is pending or running.

    Chosen so as not to distort the figure: one socket asks `list_runs` with a status filter
    and limit 1 (an index lookup on runs_by_status) every 5 ms, only after every `started`
    reply is in, so it costs the server two tiny reads per 5 ms and adds at most ~5 ms to a
    figure of a second or more. Subscribing to every run would instead add a subscription,
    a store read and several frames per run to the very thing being measured. Pending is
    asked before running: a run only moves pending -> running -> finished, so two empty
    answers in that order mean every acknowledged run has finished.
    """
    n = 0
    while True:
        busy = False
        for status in ("pending", "running"):
            n += 1
            await ws.send(dumps({"type": "list_runs", "id": f"idle{n}", "status": status, "limit": 1}))
            reply = orjson.loads(await ws.recv())
            if reply.get("type") != "runs":
                raise RuntimeError(f"list_runs failed: {reply}")
            if reply["runs"]:
                busy = True
                break
        if not busy:
            return
        await asyncio.sleep(interval)


async def bench_ws_runs(server: ServerProcess, runs: int, connections: int) -> tuple[float, float]:
    """(seconds until every run finished, seconds until every start was acknowledged)."""
    sockets: list[Any] = []
    try:
        for _ in range(connections):
            sockets.append(await connect(server.url))
        frames: list[list[str]] = [[] for _ in sockets]
        for i in range(runs):
            start = {"type": "start", "id": i, "workflow": "chain", "input": CHAIN_INPUT, "subscribe": False}
            frames[i % connections].append(dumps(start))
        started = time.perf_counter()
        await asyncio.gather(*(_start_many(ws, mine) for ws, mine in zip(sockets, frames, strict=True)))
        acknowledged = time.perf_counter() - started
        await _until_idle(sockets[0])
        return time.perf_counter() - started, acknowledged
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def check_server_db(db: Path, runs: int, events_per_run: int) -> None:
    """After the server has stopped: every run completed, with all its events."""
    conn = sqlite3.connect(db)
    try:
        statuses = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    if statuses != {"completed": runs} or events != runs * events_per_run:
        raise RuntimeError(f"/ws runs: statuses {statuses}, {events} events; expected {runs} completed")


def server_flags() -> list[str]:
    """Flags for `python -m server`: quiet logs and, if this server has a per-connection start
    rate limit, one high enough that figure 2 measures the server, not the limiter."""
    usage = subprocess.run(
        [sys.executable, "-m", "server", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    flags = ["--log-level", "warning"]
    if "--starts-per-second" in usage:
        flags += ["--starts-per-second", "1000000"]
    return flags


# ---- figure 3: events to one subscriber, and the bare endpoint ---------------------------


async def drain(ws: Any) -> int:
    """Read frames as fast as possible until the terminal event; returns the events seen.

    The same loop reads runcast and the bare endpoint: orjson per frame, seq checked.
    """
    events = 0
    expected = 1
    while True:
        msg = orjson.loads(await ws.recv())
        kind = msg["type"]
        if kind == "event":
            batch = [msg]
        elif kind == "events":
            batch = msg["events"]
        elif kind == "error":
            raise RuntimeError(f"server error: {msg}")
        else:
            continue  # `started`
        for event in batch:
            if event["seq"] != expected:
                raise RuntimeError(f"seq {event['seq']} where {expected} was expected")
            expected += 1
        events += len(batch)
        if batch[-1]["event"] in TERMINAL:
            return events


async def bench_stream(url: str, n: int, batch: bool) -> tuple[int, float]:
    """Start `count` n with delay 0, subscribed; time from the start message to run_completed."""
    ws = await connect(url)
    try:
        start = dumps({"type": "start", "id": 1, "workflow": "count", "input": {"n": n, "delay": 0}, "batch": batch})
        began = time.perf_counter()
        await ws.send(start)
        events = await drain(ws)
        return events, time.perf_counter() - began
    finally:
        await ws.close()


async def bench_bare(url: str) -> tuple[int, float]:
    ws = await websockets.connect(url, **WS_KW)
    try:
        began = time.perf_counter()
        await ws.send("go")
        events = await drain(ws)
        return events, time.perf_counter() - began
    finally:
        await ws.close()


def bare_frames(n: int) -> list[str]:
    """What runcast sends for `count` n, pre-encoded: same fields, same sizes, same count."""
    run_id = "019a0b1c2d3e0000a1b2c3"  # the length of a server-made id
    ts = utc_now()
    frames = [
        event_frame(run_id, 1, "run_started", None, ts, {"workflow": "count", "input": {"n": n, "delay": 0}}),
        event_frame(run_id, 2, "step_started", "count", ts, {"index": 0, "attempt": 1}),
    ]
    frames += [event_frame(run_id, 2 + i, "progress", "count", ts, {"current": i, "total": n}) for i in range(1, n + 1)]
    frames.append(event_frame(run_id, n + 3, "step_completed", "count", ts, {"output": {"count": n}}))
    frames.append(event_frame(run_id, n + 4, "run_completed", None, ts, {"output": {"count": n}}))
    return frames


def serve_bare(port: int, n: int) -> None:
    """The baseline server: Starlette + uvicorn, configured as runcast's, no store, no engine.

    On any message it pushes the pre-encoded frames as fast as the socket takes them.
    """
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    frames = bare_frames(n)

    async def push(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            for frame in frames:
                await websocket.send_text(frame)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[WebSocketRoute("/ws", push), Route("/healthz", healthz)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_max_size=1024 * 1024,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        lifespan="off",
    )
    uvicorn.Server(config).run()


class BareProcess:
    """`python bench/runs.py --bare-server PORT --events N` as a child process."""

    def __init__(self, workdir: Path, n: int) -> None:
        self.port = free_port()
        self.n = n
        self.log_path = workdir / "bare.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 20) -> BareProcess:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-server", str(self.port), "--events", str(self.n)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bare server exited with {self.proc.returncode}: {self.tail()}")
            try:
                if http("GET", f"http://127.0.0.1:{self.port}/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("bare server did not become healthy: " + self.tail())

    def tail(self) -> str:
        return self.log_path.read_bytes()[-3000:].decode(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# ---- running it all ----------------------------------------------------------------------


@dataclass
class Row:
    """One figure: a value per round and the baseline measured right next to it in that round."""

    figure: str
    unit: str
    values: list[float]
    baseline_name: str
    baselines: list[float]
    note: str = ""

    @property
    def ratios(self) -> list[float]:
        return [v / b for v, b in zip(self.values, self.baselines, strict=True)]

    def cells(self) -> tuple[str, ...]:
        return (
            self.figure,
            f"{median(self.values):,.0f} {self.unit}",
            self.baseline_name,
            f"{median(self.baselines):,.0f} {self.unit}",
            f"{median(self.ratios):.2f}x",
            " ".join(f"{r:.2f}" for r in self.ratios),
            self.note,
        )


async def run_all(sizes: Sizes, workdir: Path) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []

    # Figure 1: per round the Python API, then the naive loop right after, each on a fresh file.
    api_rates: list[float] = []
    naive_rates: list[float] = []
    results: list[ApiResult] = []
    began = time.perf_counter()
    for r in range(sizes.repeats):
        if r and time.perf_counter() - began > BUDGET[1]:
            break
        result = await bench_api(workdir / f"api{r}.db", sizes.runs, sizes.chunk)
        results.append(result)
        api_rates.append(sizes.runs / result.seconds)
        naive_rates.append(sizes.runs / bench_naive(workdir / f"naive{r}.db", sizes.runs, result))
        print(
            f"  fig 1 round {r + 1}: api {api_rates[-1]:7.0f} runs/s   naive {naive_rates[-1]:7.0f} runs/s", flush=True
        )
    api = results[0]
    per_run = api.events_per_run
    naive_name = f"naive: 1 commit per write ({per_run + 1}/run)"
    rows.append(Row("1 chain runs/s, Python API", "runs/s", api_rates, naive_name, naive_rates))
    notes.append(f"events per chain n=3 run: {per_run} ({', '.join(e for e, _, _ in api.sample)})")
    for r, result in enumerate(results, start=1):
        st = result.stats
        notes.append(
            f"fig 1 round {r} group commit: {st.events} events + {st.ops - st.events} run creations in {st.batches} "
            f"commits = {st.events / max(st.batches, 1):.1f} events/commit ({st.ops / max(st.batches, 1):.1f} ops), "
            f"largest batch {st.largest_batch} ops, writer busy {st.commit_seconds:.2f} of {result.seconds:.2f} s; "
            f"stale engine.wait() answers: {result.stale}"
        )
    notes.append(f"naive loop: {sizes.runs * (per_run + 1)} commits per round")

    flags = await asyncio.to_thread(server_flags)
    notes.append(f"server flags: {' '.join(flags)}")

    # Figure 2: per round a fresh server, then the naive loop right after.
    ws_rates: list[float] = []
    ack_rates: list[float] = []
    naive2_rates: list[float] = []
    began = time.perf_counter()
    for r in range(sizes.repeats):
        if r and time.perf_counter() - began > BUDGET[2]:
            break
        db = workdir / f"ws{r}.db"
        server = ServerProcess(db, *flags)
        CHILDREN.append(server)
        try:
            await asyncio.to_thread(server.start)
            seconds, acknowledged = await bench_ws_runs(server, sizes.runs, sizes.connections)
        except BaseException:
            print(server.tail(), file=sys.stderr)
            raise
        finally:
            server.stop()
        check_server_db(db, sizes.runs, per_run)
        ws_rates.append(sizes.runs / seconds)
        ack_rates.append(sizes.runs / acknowledged)
        naive2_rates.append(sizes.runs / bench_naive(workdir / f"naive-ws{r}.db", sizes.runs, api))
        print(
            f"  fig 2 round {r + 1}: /ws {ws_rates[-1]:7.0f} runs/s   naive {naive2_rates[-1]:7.0f} runs/s", flush=True
        )
    note = f"{median(ws_rates) / median(api_rates):.2f}x of fig 1; starts acked at {median(ack_rates):.0f}/s"
    rows.append(
        Row(f"2 chain runs/s, /ws ({sizes.connections} sockets)", "runs/s", ws_rates, naive_name, naive2_rates, note)
    )

    # Figure 3: one server, one bare endpoint; per round bare, runcast, runcast batched.
    server = ServerProcess(workdir / "stream.db", *flags)
    bare = BareProcess(workdir, sizes.events)
    CHILDREN.extend((server, bare))
    plain_rates: list[float] = []
    batch_rates: list[float] = []
    bare_rates: list[float] = []
    try:
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(bare.start)
        began = time.perf_counter()
        for r in range(sizes.repeats):
            if r and time.perf_counter() - began > BUDGET[3]:
                break
            n, seconds = await bench_bare(bare.url)
            bare_rates.append(n / seconds)
            n, seconds = await bench_stream(server.url, sizes.events, batch=False)
            plain_rates.append(n / seconds)
            n, seconds = await bench_stream(server.url, sizes.events, batch=True)
            batch_rates.append(n / seconds)
            print(
                f"  fig 3 round {r + 1}: bare {bare_rates[-1]:7.0f}   runcast {plain_rates[-1]:7.0f}   "
                f"batched {batch_rates[-1]:7.0f} events/s ({n} events)",
                flush=True,
            )
    except BaseException:
        print(server.tail(), bare.tail(), sep="\n", file=sys.stderr)
        raise
    finally:
        bare.stop()
        server.stop()
    bare_name = f"bare Starlette push ({sizes.events + 4} frames)"
    rows.append(Row("3a events/s to 1 subscriber", "events/s", plain_rates, bare_name, bare_rates))
    rows.append(Row("3b same, batch: true", "events/s", batch_rates, bare_name, bare_rates))
    return rows, notes


def print_table(rows: list[Row], notes: list[str], sizes: Sizes, seconds: float) -> None:
    header = ("figure", "runcast", "baseline", "baseline value", "ratio", "per round", "note")
    table = [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    print()
    for line in [header, tuple("-" * w for w in widths), *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    print()
    print(
        "values are medians over the rounds listed under 'per round' (up to "
        f"{sizes.repeats}; later rounds are skipped past a time budget); ratio is the median of the "
        "per-round ratios (figure / its baseline, measured back to back)"
    )
    for note in notes:
        print(note)
    print(
        f"sizes: {sizes.runs} runs, {sizes.events} count events, {sizes.connections} sockets; "
        f"total {seconds:.1f} s; nproc {os.cpu_count()}, python {sys.version.split()[0]}"
    )


async def run_cancellable(sizes: Sizes, workdir: Path) -> tuple[list[Row], list[str]]:
    """run_all, with SIGTERM cancelling it as Ctrl-C does: every `finally` runs in order
    (raising from the signal handler instead would let asyncio cancel the store's writer
    before the runtime is closed, and the close would then wait forever)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_all(sizes, workdir)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per figure (medians are reported)")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=FULL.events, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server is not None:
        serve_bare(args.bare_server, args.events)
        return 0
    sizes = QUICK if args.quick else FULL
    if args.repeats is not None:
        sizes = dataclasses.replace(sizes, repeats=max(1, args.repeats))
    workdir = Path(tempfile.mkdtemp(prefix="runcast-bench-"))
    began = time.perf_counter()
    try:
        rows, notes = asyncio.run(run_cancellable(sizes, workdir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: stopping servers, removing temp files", file=sys.stderr)
        return 130
    finally:
        # A server whose start was still going on in a thread when the run was interrupted is
        # only stopped here, once asyncio.run has waited for that thread.
        for child in CHILDREN:
            child.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, notes, sizes, time.perf_counter() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
