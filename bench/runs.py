"""Figure 1: background runs per second of a 3-step workflow of plain function steps on SQLite,
runcast against Agno 3.1 in the same run; and its scaling curve (100 / 1,000 / 10,000 runs).

    .venv/bin/python bench/runs.py [--quick] [--json PATH] [--profile DIR]

The workflow: steps s1, s2, s3, each a plain (sync) function returning a number (bench/flows.py;
Agno's steps return StepOutput(content=number)). Each measurement runs in a fresh Python process
on a fresh SQLite file, after one untimed warm-up run, and counts from the first start to the
moment every run is known to be finished:

- agno: `await wf.arun(input=..., background=True, session_id=<new uuid>)` (one session per
  run, as Agno users do), started in concurrent chunks of 100 (asyncio.gather), then
  `wf.get_run(run_id, session_id=...)` polled oldest run first, every 5 ms, until
  `has_completed()` for every run. Agno's own defaults otherwise (its SqliteDb, at most 32
  background runs executing at once).
- runcast API: the same driver with runcast's `Workflow`/`Step`/`SqliteDb`:
  `await wf.arun(input, background=True)`, then `wf.get_run(run_id).has_completed()`.
- runcast API, sequential: the same, but one `await wf.arun(...)` after the other (figure 1c,
  against Agno's concurrent chunks as the goal of issue 21 states it; figure 1e, against Agno
  driven the same way, one awaited `arun` after the other). Both print each start's p50.
- runcast engine: `server.runtime.Runtime` and `engine.start` in concurrent chunks of 250,
  then `engine.wait` for every run (no polling at all).
- runcast /ws: a `python -m server` process with `--workflows bench/flows.py`; 4 sockets
  pipeline `start` messages with `subscribe: true` and read every event of every run; the
  timer stops at the last terminal event.
Rows give each runcast rate next to Agno's rate measured in the same round. If Agno cannot be
imported, the baseline is a naive loop on stdlib sqlite3 that commits each write alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import orjson
import websockets
from common import (
    PYTHON,
    TERMINAL,
    WS_KW,
    HttpServer,
    Profile,
    Report,
    Row,
    Scale,
    _die_with_parent,
    env_note,
    fmt,
    growth,
    parser,
    run_script,
    slope,
    start_runcast,
)

GOAL_RATIO = 20.0


@dataclass(frozen=True)
class Sizes:
    runs: tuple[int, ...]  # one round per size: runcast engine and API at every size
    agno: tuple[int, ...]  # sizes at which Agno (and runcast's /ws and sequential rows) run too
    sockets: int


# Agno does ~20-70 runs/s here: 10,000 of its runs would take minutes, so it stops at 1,000.
FULL = Sizes(runs=(100, 300, 1000, 10_000), agno=(100, 300, 1000), sockets=4)
QUICK = Sizes(runs=(20, 200), agno=(20,), sockets=4)


# ---- one measurement, in its own process (`runs.py --one KIND --runs N --db PATH`) ----------


async def drive(start: Any, finished: Any, runs: int, chunk: int, acks: list[float] | None = None) -> float:
    """Start `runs` runs (`chunk` at a time concurrently; 1 = one after the other), then poll the
    oldest unfinished run until every one has finished. Returns the seconds it took. With
    `acks` and a chunk of 1, each awaited start's own time is added to it."""
    began = time.perf_counter()
    keys: list[Any] = []
    for first in range(0, runs, chunk):
        if chunk == 1:
            asked = time.perf_counter()
            keys.append(await start())
            if acks is not None:
                acks.append(time.perf_counter() - asked)
        else:
            keys += await asyncio.gather(*(start() for _ in range(min(chunk, runs - first))))
    i = 0
    while i < len(keys):
        done = finished(keys[i])
        if done if isinstance(done, bool) else await done:  # `finished` may be async (aget_run)
            i += 1
        else:
            await asyncio.sleep(0.005)
    return time.perf_counter() - began


async def one_agno(db: str, runs: int, chunk: int = 100) -> dict[str, Any]:
    os.environ["AGNO_TELEMETRY"] = "false"
    from agno.db.sqlite import SqliteDb
    from agno.workflow import Step, Workflow
    from agno.workflow.types import StepInput, StepOutput

    def s1(step_input: StepInput) -> StepOutput:
        return StepOutput(content=1)

    def s2(step_input: StepInput) -> StepOutput:
        return StepOutput(content=2)

    def s3(step_input: StepInput) -> StepOutput:
        return StepOutput(content=3)

    steps: list[Any] = [Step(name="s1", executor=s1), Step(name="s2", executor=s2), Step(name="s3", executor=s3)]
    if db.startswith("postgresql://"):  # bench/cluster.py: Agno's PostgresDb (SQLAlchemy on psycopg 3)
        from agno.db.postgres import PostgresDb

        store: Any = PostgresDb(db_url=db.replace("postgresql://", "postgresql+psycopg://", 1))
    else:
        store = SqliteDb(db_file=db)
    wf = Workflow(name="chain3", steps=steps, db=store, telemetry=False)

    async def start() -> tuple[str, str]:
        session = str(uuid.uuid4())
        out = await wf.arun(input="go", background=True, session_id=session)
        return str(out.run_id), session

    def finished(key: tuple[str, str]) -> bool:
        run = wf.get_run(key[0], session_id=key[1])
        return run is not None and run.has_completed()

    await drive(start, finished, 1, 1)  # warm-up: tables created, code paths loaded
    keys: list[tuple[str, str]] = []
    acks: list[float] = []

    async def recorded() -> tuple[str, str]:
        keys.append(await start())
        return keys[-1]

    seconds = await drive(recorded, finished, runs, chunk, acks)
    statuses: dict[Any, int] = {}
    for run_id, session in keys:
        run = wf.get_run(run_id, session_id=session)
        status = getattr(run.status, "value", run.status) if run is not None else None
        statuses[status] = statuses.get(status, 0) + 1
    if statuses != {"COMPLETED": runs}:
        raise RuntimeError(f"agno runs ended {statuses}")
    import agno

    return {"seconds": seconds, "version": getattr(agno, "__version__", ""), "ack_p50": median(acks or [0.0])}


async def one_runcast_api(db: str, runs: int, chunk: int, poll: str = "get_run") -> dict[str, Any]:
    """runcast's Python API; `poll` "aget_run" polls with the async twin (on PostgresDb it reads
    through the open pool instead of one new connection per get_run)."""
    from flows import CHAIN3_STEPS

    from server import PostgresDb, SqliteDb, Step, Workflow

    store = PostgresDb(db) if db.startswith("postgresql://") else SqliteDb(db_file=db)
    wf = Workflow("chain3", [Step(name, fn) for name, fn in CHAIN3_STEPS], db=store)

    async def start() -> str:
        return (await wf.arun(input="go", background=True)).run_id

    def finished(run_id: str) -> bool:
        run = wf.get_run(run_id)
        return run is not None and run.has_completed()

    async def afinished(run_id: str) -> bool:
        run = await wf.aget_run(run_id)
        return run is not None and run.has_completed()

    check: Any = afinished if poll == "aget_run" else finished
    await drive(start, check, 1, 1)
    ids: list[str] = []
    acks: list[float] = []

    async def recorded() -> str:
        ids.append(await start())
        return ids[-1]

    seconds = await drive(recorded, check, runs, chunk, acks)
    bad = [r for r in ids if (run := wf.get_run(r)) is None or run.status != "completed"]
    if bad:
        raise RuntimeError(f"{len(bad)} runcast runs did not complete")
    assert wf.db is not None
    try:
        await asyncio.wait_for(wf.db.close(), 15)
    except TimeoutError:
        # On PostgreSQL under Python 3.11, Cluster.stop() can wait for ever: the claim loop's
        # wait_for(timeout) swallows the cancel when both come at once (see bench/RESULTS.md).
        # The figure is taken and checked; this throwaway process ends without its cleanup.
        print(json.dumps({"seconds": seconds, "close": "hung"}), flush=True)
        os._exit(0)
    return {"seconds": seconds, "ack_p50": median(acks or [0.0])}


async def one_runcast_engine(db: str, runs: int) -> dict[str, Any]:
    from flows import chain3

    from server.runtime import Runtime

    runtime = Runtime(db, [chain3])
    await runtime.open()
    try:
        engine = runtime.engine
        await engine.wait((await engine.start("chain3", "go"))[0]["run_id"])  # warm-up
        before = runtime.store.stats.batches
        busy_before = runtime.store.stats.commit_seconds
        cpu_before = time.process_time()
        began = time.perf_counter()
        ids: list[str] = []
        for first in range(0, runs, 250):
            batch = await asyncio.gather(*(engine.start("chain3", "go") for _ in range(min(250, runs - first))))
            ids += [run["run_id"] for run, _ in batch]
        finals = await asyncio.gather(*(engine.wait(run_id) for run_id in ids))
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu_before
        stats = runtime.store.stats
        if any(f["status"] != "completed" for f in finals):
            raise RuntimeError(f"runcast runs ended {sorted({f['status'] for f in finals})}")
        return {
            "seconds": seconds,
            "commits": stats.batches - before,
            "writer_busy": stats.commit_seconds - busy_before,
            "cpu": cpu,
        }
    finally:
        await runtime.close()


def one_naive(db: str, runs: int) -> dict[str, Any]:
    """The fallback baseline: stdlib sqlite3, runcast's schema, WAL, synchronous=NORMAL, and one
    committed transaction per write (the run row, then each of the 8 events with the run row)."""
    from server.store.base import run_params as _run_params
    from server.store.sqlite import MIGRATIONS
    from server.store.sqlite import UPSERT_RUN as _UPSERT_RUN
    from server.wire import event_frame, utc_now

    sample = [("run_started", None), ("step_started", "s1"), ("step_completed", "s1"), ("step_started", "s2")]
    sample += [("step_completed", "s2"), ("step_started", "s3"), ("step_completed", "s3"), ("run_completed", None)]
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for script in MIGRATIONS:
            conn.executescript(script)
        began = time.perf_counter()
        for i in range(runs):
            row: dict[str, Any] = {"run_id": f"naive-{i}", "workflow": "chain3", "status": "pending", "input": "go"}
            row["created_at"] = utc_now()
            row["steps"] = [{"name": f"s{k}", "status": "pending"} for k in (1, 2, 3)]
            conn.execute("BEGIN")
            conn.execute(_UPSERT_RUN, _run_params(row, 0))
            conn.execute("COMMIT")
            for seq, (event, step) in enumerate(sample, start=1):
                frame = event_frame(row["run_id"], seq, event, step, utc_now(), {"output": 1})
                row["status"] = "completed" if event in TERMINAL else "running"
                conn.execute("BEGIN")
                conn.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (row["run_id"], seq, event, frame))
                conn.execute(_UPSERT_RUN, _run_params(row, seq))
                conn.execute("COMMIT")
        return {"seconds": time.perf_counter() - began}
    finally:
        conn.close()


def one(kind: str, db: str, runs: int) -> dict[str, Any]:
    if kind == "agno":
        return asyncio.run(one_agno(db, runs))
    if kind == "agno-seq":
        return asyncio.run(one_agno(db, runs, 1))
    if kind == "api":
        return asyncio.run(one_runcast_api(db, runs, 100))
    if kind == "api-aget":
        return asyncio.run(one_runcast_api(db, runs, 100, "aget_run"))
    if kind == "api-seq":
        return asyncio.run(one_runcast_api(db, runs, 1))
    if kind == "engine":
        return asyncio.run(one_runcast_engine(db, runs))
    if kind == "naive":
        return one_naive(db, runs)
    raise SystemExit(f"unknown kind {kind}")


async def measure(
    workdir: Path, kind: str, runs: int, profile: str | None = None, url: str | None = None
) -> dict[str, Any]:
    """`runs.py --one KIND` in a fresh process on a fresh file (or on the database at `url`, which
    the caller makes fresh); returns its JSON answer + runs/s."""
    if url:
        db = url
    else:
        fd, db = tempfile.mkstemp(prefix=f"{kind}-", suffix=".db", dir=workdir)
        os.close(fd)
        os.unlink(db)
    cmd = [PYTHON, str(Path(__file__).resolve()), "--one", kind, "--runs", str(runs), "--db", db]
    if profile:
        spy = Path(PYTHON).parent / "py-spy"
        out = Path(profile) / f"runs-{kind}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        spy_args = ["record", "--format", "raw", "--function", "--threads", "--rate", "200", "--output", str(out)]
        cmd = [str(spy), *spy_args, "--", *cmd]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "AGNO_TELEMETRY": "false"},
        preexec_fn=_die_with_parent,
    )
    try:
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 900)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} ({runs} runs) failed: {err_b.decode(errors='replace')[-2000:]}")
    if profile:
        from common import summarize_profile

        path = Path(profile) / f"runs-{kind}.txt"
        if path.exists():
            path.with_suffix(".top.txt").write_text(summarize_profile(path))
    answer = [line for line in out_b.decode().splitlines() if line.startswith("{")]  # py-spy may print too
    result: dict[str, Any] = json.loads(answer[-1])
    result["rate"] = runs / result["seconds"]
    for suffix in ("", "-wal", "-shm", ".lock") if not url else ():
        Path(db + suffix).unlink(missing_ok=True)
    return result


# ---- runcast through /ws, subscribed to every run ------------------------------------------


async def ws_runs(servers: HttpServer | Sequence[HttpServer], runs: int, sockets: int) -> float:
    """`sockets` sockets (spread round-robin over `servers`) pipeline `start` (subscribe: true)
    and read all events; seconds to the last terminal event."""
    targets = [servers] if isinstance(servers, HttpServer) else list(servers)
    conns = [await websockets.connect(targets[i % len(targets)].ws_url(), **WS_KW) for i in range(sockets)]
    try:
        for ws in conns:
            await ws.recv()  # welcome
        share = [runs // sockets + (i < runs % sockets) for i in range(sockets)]

        async def one_socket(ws: Any, count: int) -> int:
            async def send_all() -> None:
                for i in range(count):
                    start = {"type": "start", "id": i, "workflow": "chain3", "input": "go", "subscribe": True}
                    await ws.send(orjson.dumps(start).decode())

            sender = asyncio.create_task(send_all())
            started = ended = events = 0
            try:
                while started < count or ended < count:
                    msg = orjson.loads(await ws.recv())
                    kind = msg["type"]
                    if kind == "started":
                        started += 1
                    elif kind == "event":
                        events += 1
                        ended += msg["event"] in TERMINAL
                    elif kind == "error":
                        raise RuntimeError(f"/ws start: {msg}")
                await sender
                return events
            finally:
                sender.cancel()

        began = time.perf_counter()
        counts = await asyncio.gather(*(one_socket(ws, k) for ws, k in zip(conns, share, strict=True)))
        seconds = time.perf_counter() - began
        if sum(counts) != runs * 8:
            raise RuntimeError(f"/ws: {sum(counts)} events for {runs} runs, expected {runs * 8}")
        return seconds
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


def agno_available() -> tuple[bool, str]:
    probe = subprocess.run(
        [PYTHON, "-c", "import agno.workflow, agno.db.sqlite, importlib.metadata as m; print(m.version('agno'))"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AGNO_TELEMETRY": "false"},
    )
    if probe.returncode != 0:
        return False, probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "import failed"
    return True, probe.stdout.strip()


# ---- the figure ---------------------------------------------------------------------------


async def main(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    sizes = QUICK if args.quick else FULL
    has_agno, version = await asyncio.to_thread(agno_available)
    base_kind = "agno" if has_agno else "naive"
    base_name = f"Agno {version}, same workflow and driver" if has_agno else "naive sqlite3 loop (Agno unavailable)"
    if not has_agno:
        report.notes.append(f"Agno could not be imported ({version}): the baseline falls back to the naive loop")

    kinds = ("base", "base-seq", "engine", "api", "api-seq", "ws")
    rates: dict[str, dict[int, float]] = {k: {} for k in kinds}
    acks: dict[str, list[float]] = {"api-seq": [], "base-seq": []}  # each awaited start's p50, per round
    commits: dict[int, int] = {}
    for size in sizes.runs:
        both = size in sizes.agno
        if both:
            rates["base"][size] = (await measure(workdir, base_kind, size))["rate"]
            if has_agno:
                seq = await measure(workdir, "agno-seq", size)
                rates["base-seq"][size] = seq["rate"]
                acks["base-seq"].append(seq["ack_p50"])
        engine = await measure(workdir, "engine", size)
        rates["engine"][size] = engine["rate"]
        commits[size] = engine["commits"]
        rates["api"][size] = (await measure(workdir, "api", size))["rate"]
        if both:
            seq = await measure(workdir, "api-seq", size)
            rates["api-seq"][size] = seq["rate"]
            acks["api-seq"].append(seq["ack_p50"])
            server = await start_runcast(workdir, f"runs{size}")
            try:
                rates["ws"][size] = size / await ws_runs(server, size, sizes.sockets)
            finally:
                server.stop()
        print(
            f"  {size} runs: " + "  ".join(f"{k} {rates[k][size]:,.1f}" for k in kinds if size in rates[k]), flush=True
        )

    if args.profile:  # once more under py-spy, after the measured rounds
        try:
            size = sizes.agno[-1]
            for kind in ("engine", "api", base_kind):
                await measure(workdir, kind, size, args.profile)
            server = await start_runcast(workdir, "runs-profile")
            try:
                with Profile(args.profile, "runs-ws-runcast", server.pid):
                    await ws_runs(server, size, sizes.sockets)
            finally:
                server.stop()
        except Exception as exc:  # a profile is extra: the figures stand without it
            report.notes.append(f"profiling failed: {exc!r}")

    rounds = list(sizes.agno)

    def row(fig: str, what: str, key: str, goal: bool = False, base: str = "base") -> Row:
        ratio = median(rates[key][n] / rates[base][n] for n in rounds)
        met = ratio >= GOAL_RATIO if goal else None
        return Row(
            fig,
            what,
            "runs/s",
            [rates[key][n] for n in rounds],
            base_name if base == "base" else f"Agno {version}, each arun awaited too",
            [rates[base][n] for n in rounds],
            goal=f">= {GOAL_RATIO:g}x Agno" if goal else "",
            met=met,
            why=f"{ratio:.1f}x" if met is False else "",
        )

    report.rows.append(row("1a", "chain3 runs/s: runcast engine.start + engine.wait (in-process)", "engine", True))
    report.rows.append(row("1b", "chain3 runs/s: runcast arun(background) + get_run polling", "api", True))
    report.rows.append(row("1c", "same, each arun awaited before the next", "api-seq"))
    report.rows.append(row("1d", f"chain3 runs/s over /ws, {sizes.sockets} sockets subscribed to every run", "ws"))
    if has_agno:
        report.rows.append(row("1e", "1c's runs/s, against Agno driven the same way", "api-seq", base="base-seq"))
        report.notes.append(
            "figures 1c/1e: an awaited start's p50, per round: runcast "
            + " ".join(f"{a * 1000:.2f}" for a in acks["api-seq"])
            + " ms; Agno "
            + " ".join(f"{a * 1000:.2f}" for a in acks["base-seq"])
            + " ms"
        )
    report.notes.append(
        f"figure 1: one round per size ({', '.join(f'{n:,}' for n in rounds)} runs), each system on the same "
        f"number of runs; engine commits per round: {commits}; {env_note()}"
    )

    # Scaling: runs per measurement.
    scale = Scale(
        "Figure 1 scaling: runs per measurement (runs/s; time vs linear: how the total time grew "
        "against the number of runs, 1.0 = linear)",
        "runs",
        ["runcast engine", "time vs linear", "runcast API", "time vs linear", base_kind, "time vs linear"],
    )
    growths: dict[str, dict[int, float]] = {}
    for key in ("engine", "api", "base"):
        ns = sorted(rates[key])
        growths[key] = dict(zip(ns, growth(ns, [n / rates[key][n] for n in ns]), strict=True))
    for size in sizes.runs:
        cells = [f"{size:,}"]
        for key in ("engine", "api", "base"):
            if size in rates[key]:
                g = growths[key][size]
                cells += [fmt(rates[key][size]), "-" if g != g else f"{g:.2f}"]
            else:
                eta = size / rates[key][max(rates[key])]
                cells += [f"not run (~{eta / 60:.0f} min)" if eta >= 90 else f"not run (~{eta:.0f} s)", "-"]
        scale.lines.append(cells)
    slopes = {key: slope(sorted(rates[key]), [n / rates[key][n] for n in sorted(rates[key])]) for key in growths}
    worst = max(slopes["engine"], slopes["api"])
    shown = f"runcast engine {slopes['engine']:.2f}, runcast API {slopes['api']:.2f}, {base_kind} {slopes['base']:.2f}"
    scale.judge("total time against runs", worst, shown)
    report.scales.append(scale)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--runs", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        print(json.dumps(one(a.one, a.db, a.runs)))
        raise SystemExit(0)
    raise SystemExit(run_script("runs", a, main))
