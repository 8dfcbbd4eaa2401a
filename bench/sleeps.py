"""Time and order (issue 24): durable sleep, schedules and the claim query, each figure
beside a baseline measured in the same run.

    .venv/bin/python bench/sleeps.py [--quick] [--runs N]      # ~60 s; --quick (1,000 runs) ~15 s

In one process, on `server.runtime.Runtime` over a fresh SQLite file each:
- S1 wake-up lateness: N runs each sleep (`ctx.sleep_until`) until a time of their own,
  spread evenly over W seconds (N/W wakes a second); each `sleep_ended`'s ts against its
  `until`: p50 / p99 / max. Baseline: the same N times as bare `loop.call_at` timers in the
  same process, their lateness measured the same way (what an in-memory timer achieves).
  S1b: the same N runs all due at the same instant (lateness is then the time to wake them all).
- S2 memory: RSS grown by N sleeping runs, per run, against N runs waiting for an answer
  (both suspended: neither holds a task, a thread or a slot).
- S3 throughput: runs/s of 2,000 short runs (started and awaited through the engine) while
  N runs sleep, against the same with none sleeping. Goal >= 0.9x.
- S4 schedules: M schedules ticking every second for T seconds; each tick's run created_at
  against its tick: p50 / p99, and ticks with no run. Baseline: M bare `loop.call_at`
  timers a second, measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from datetime import datetime
from pathlib import Path
from statistics import quantiles
from typing import Any

import orjson
from common import ROOT  # noqa: F401 - puts this checkout first on sys.path

from server import Runtime, Schedule, Settings, Step, StepContext, StepInput, Workflow


async def _nap(step_input: StepInput, ctx: StepContext) -> int:
    await ctx.sleep_until(step_input.input["until"])
    return 1


async def _ask(step_input: StepInput, ctx: StepContext) -> Any:
    return await ctx.ask("?")


NAP = Workflow("nap", [Step("nap", _nap)])
ASK = Workflow("ask", [Step("ask", _ask)])
ECHO = Workflow("echo", [Step("echo", lambda si: si.input)])


def pcts(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max, in ms."""
    if len(values) < 2:
        return (values[0] * 1000, values[0] * 1000, values[0] * 1000) if values else (0.0, 0.0, 0.0)
    q = quantiles(values, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000, max(values) * 1000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def open_runtime(folder: Path, name: str, workflows: list[Workflow]) -> Runtime:
    runtime = Runtime(str(folder / f"{name}.db"), workflows, Settings(max_running=64))
    await runtime.open()
    return runtime


async def start_all(runtime: Runtime, workflow: str, inputs: list[Any]) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(inputs), 500):
        started = await asyncio.gather(*(runtime.engine.start(workflow, x) for x in inputs[i : i + 500]))
        ids += [run["run_id"] for run, _ in started]
    return ids


async def until_status(runtime: Runtime, status: str, count: int, timeout: float = 120) -> None:
    """Wait until `count` runs have `status` (read from the file, not the engine)."""
    deadline = time.monotonic() + timeout
    path = runtime.store.backend.path  # type: ignore[attr-defined]
    while time.monotonic() < deadline:
        await runtime.store.flush()
        with sqlite3.connect(path) as db:
            (n,) = db.execute("SELECT count(*) FROM runs WHERE status = ?", (status,)).fetchone()
        if n >= count:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{count} runs did not become {status}")


def sleep_lateness(path: str) -> list[float]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT run_id, event, frame FROM events WHERE event IN ('sleep_started', 'sleep_ended')"
        ).fetchall()
    until: dict[str, float] = {}
    ended: dict[str, float] = {}
    for run_id, event, frame in rows:
        e = orjson.loads(frame)
        if event == "sleep_started":
            until[run_id] = _epoch(e["data"]["until"])
        else:
            ended[run_id] = _epoch(e["ts"])
    return [ended[r] - until[r] for r in ended]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def timers_lateness(times: list[float]) -> list[float]:
    """The baseline: bare loop timers at these wall-clock times, their lateness."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    done = asyncio.Event()

    def fire(at: float) -> None:
        late.append(time.time() - at)
        if len(late) == len(times):
            done.set()

    for at in times:
        loop.call_at(loop.time() + (at - time.time()), fire, at)
    await done.wait()
    return late


async def s1(folder: Path, n: int, window: float, together: bool = False) -> list[float]:
    runtime = await open_runtime(folder, f"s1{'b' if together else ''}", [NAP])
    try:
        t0 = time.time() + 3 + n / 2000
        times = [t0 if together else t0 + window * i / n for i in range(n)]
        await start_all(runtime, "nap", [{"until": t} for t in times])
        await until_status(runtime, "completed", n, timeout=window + 120)
    finally:
        await runtime.close()
    return sleep_lateness(str(folder / f"s1{'b' if together else ''}.db"))


async def s2(folder: Path, n: int) -> tuple[float, float]:
    """RSS grown per run (KiB): by N sleeping runs, by N waiting runs."""
    grown = []
    for name, workflow, inputs, status in (
        ("s2-sleep", NAP, [{"until": time.time() + 3600}] * n, "sleeping"),
        ("s2-ask", ASK, [None] * n, "waiting"),
    ):
        runtime = await open_runtime(folder, name, [workflow])
        try:
            await start_all(runtime, workflow.name, inputs[:50])  # warm
            await until_status(runtime, status, 50)
            before = rss_mb()
            await start_all(runtime, workflow.name, inputs)
            await until_status(runtime, status, n + 50)
            await asyncio.sleep(0.5)
            grown.append((rss_mb() - before) * 1024 / n)
        finally:
            await runtime.close()
    return grown[0], grown[1]


async def s3(folder: Path, n: int, short: int) -> tuple[float, float]:
    """Short runs/s with N sleeping runs, and with none."""
    rates = []
    for name, sleeping in (("s3-none", 0), ("s3-sleeping", n)):
        runtime = await open_runtime(folder, name, [NAP, ECHO])
        try:
            if sleeping:
                await start_all(runtime, "nap", [{"until": time.time() + 3600}] * sleeping)
                await until_status(runtime, "sleeping", sleeping)
            await asyncio.gather(*(runtime.engine.start("echo", i) for i in range(50)))  # warm
            began = time.perf_counter()
            ids = await start_all(runtime, "echo", list(range(short)))
            await asyncio.gather(*(runtime.engine.wait(r) for r in ids))
            rates.append(short / (time.perf_counter() - began))
        finally:
            await runtime.close()
    return rates[1], rates[0]


async def s4(folder: Path, m: int, seconds: float) -> tuple[list[float], int]:
    schedules = [Schedule(f"s{i}", every=1, input=i, catchup="skip") for i in range(m)]
    ticking = Workflow("tick", [Step("tick", lambda si: si.input)], schedules=schedules)
    runtime = await open_runtime(folder, "s4", [ticking])
    began = time.time()
    await asyncio.sleep(seconds)
    ended = time.time()
    await runtime.close()
    with sqlite3.connect(folder / "s4.db") as db:
        rows = db.execute("SELECT run_id, created_at FROM runs").fetchall()
    late = []
    for run_id, created in rows:
        tick = time.mktime(time.strptime(run_id.rsplit(":", 1)[1], "%Y%m%dT%H%M%SZ")) - time.timezone
        if began + 1.5 < tick < ended - 1.5:
            late.append(_epoch(created) - tick)
    whole = int(ended - 1.5) - int(began + 1.5)
    missing = whole * m - len(late) if whole > 0 else 0
    return late, missing


def row(name: str, ours: tuple[float, float, float], base: tuple[float, float, float]) -> str:
    runcast = f"{ours[0]:.1f} / {ours[1]:.1f} / {ours[2]:.1f} ms"
    return f"| {name} | {runcast} | {base[0]:.2f} / {base[1]:.2f} / {base[2]:.2f} ms |"


async def main(args: argparse.Namespace) -> None:
    n = args.runs or (1000 if args.quick else 10_000)
    window = 5.0 if args.quick else 10.0
    m = 200 if args.quick else 1000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"S1 wake-up lateness, {n} sleeping runs waking over {window:g} s ({n / window:.0f}/s)", flush=True)
        late = await s1(folder, n, window)
        t0 = time.time() + 1
        base = await timers_lateness([t0 + window * i / n for i in range(n)])
        print("| figure | runcast p50 / p99 / max | bare loop timers p50 / p99 / max |")
        print("|---|---|---|")
        print(row(f"S1 {n} sleeps, spread", pcts(late), pcts(base)), flush=True)
        late = await s1(folder, n, window, together=True)
        base = await timers_lateness([time.time() + 1] * n)
        print(row(f"S1b {n} sleeps, all due at once", pcts(late), pcts(base)), flush=True)
        sleeping, waiting = await s2(folder, n)
        print(f"| S2 RSS grown per suspended run ({n}) | sleeping {sleeping:.2f} KiB | waiting {waiting:.2f} KiB |")
        with_sleepers, alone = await s3(folder, n, 2000)
        ratio = with_sleepers / alone
        print(
            f"| S3 short runs/s, {n} sleeping | {with_sleepers:.0f}/s ({ratio:.2f}x) | none sleeping: {alone:.0f}/s |"
        )
        late, missing = await s4(folder, m, 6 if args.quick else 12)
        t0 = time.time() + 1
        base = await timers_lateness([t0 + s for s in range(3) for _ in range(m)])
        print(row(f"S4 {m} schedules every 1 s ({missing} ticks without a run)", pcts(late), pcts(base)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    asyncio.run(main(parser.parse_args()))
