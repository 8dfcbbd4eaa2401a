"""Figure 3: fan-out of one run to many subscribers, and its scaling curve (1/10/100 subscribers).

    .venv/bin/python bench/fanout.py [--quick] [--json PATH] [--profile DIR]

One run of the `emit` workflow (bench/flows.py) sends progress events, each carrying `t`, the
server's time.time() when the step emitted it; the subscribers are spread over 4 client
processes (bench/clients.py, ~25 sockets each), which take the receive time as the bytes
arrive. Latency = receipt - t: the store's group commit, the broker, the connection's queue,
uvicorn and the socket, and the client's loop.

1. Peak: the run emits as fast as the store takes events (rate 0); deliveries/s at the clients.
2. Half of that: the run emits at (peak events/s) / 2; deliveries/s and p50/p99 latency.
Baseline: bench/bare.py's /emit, the same frames sent straight to the same subscribers with one
`send_text` each, no store, at the same rate, in the same round.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import orjson
import websockets
from common import (
    WS_KW,
    HttpServer,
    Profile,
    Report,
    Row,
    Scale,
    Worker,
    cpu_seconds,
    env_note,
    fmt,
    parser,
    run_script,
    slope,
    start_bare,
    start_runcast,
    start_workers,
)

GOAL_P99_MS = 5.0


@dataclass(frozen=True)
class Sizes:
    subscribers: int
    processes: int
    peak_deliveries: int  # deliveries (events x subscribers) of a peak run, at most
    seconds: float  # length of a run at a fixed rate
    rounds: int
    scale: tuple[int, ...]


FULL = Sizes(subscribers=100, processes=4, peak_deliveries=100_000, seconds=3.0, rounds=2, scale=(1, 10, 100))
QUICK = Sizes(subscribers=20, processes=2, peak_deliveries=20_000, seconds=1.0, rounds=1, scale=(1, 20))
LOADS = (0.125, 0.25)  # fractions of the peak for the latency-vs-load curve (besides 0.5); full run only


@dataclass
class Result:
    subscribers: int
    events: int  # progress events per subscriber
    rate: float  # events/s asked of the run (0: as fast as possible)
    deliveries: int
    seconds: float  # from go to the last receipt
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu: float  # CPU seconds the server used from go to the last receipt
    client_cpu: float  # the same for the client processes, together

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


class Fanout:
    """Runs one fan-out measurement against runcast or the bare endpoint."""

    def __init__(self, workdir: Path, workers: list[Worker], runcast: HttpServer, bare: HttpServer) -> None:
        self.workdir = workdir
        self.workers = workers
        self.runcast = runcast
        self.bare = bare
        self.control: Any = None  # a socket to runcast, for `start`
        self.bare_control: Any = None
        self.k = 0

    async def open(self) -> None:
        self.control = await websockets.connect(self.runcast.ws_url(), **WS_KW)
        await self.control.recv()  # welcome
        self.bare_control = await websockets.connect(self.bare.ws_url("/emit"), **WS_KW)

    async def close(self) -> None:
        for ws in (self.control, self.bare_control):
            if ws is not None:
                await ws.close()

    async def _start_run(self, n: int, rate: float, go: Path) -> str:
        start = {"type": "start", "id": self.k, "workflow": "emit", "subscribe": False}
        start["input"] = {"n": n, "rate": rate, "go": str(go)}
        await self.control.send(orjson.dumps(start).decode())
        while True:
            msg = orjson.loads(await self.control.recv())
            if msg.get("id") == self.k:
                if msg["type"] != "started":
                    raise RuntimeError(f"start failed: {msg}")
                return str(msg["run"]["run_id"])

    async def measure(self, target: str, subscribers: int, n: int, rate: float) -> Result:
        self.k += 1
        go = self.workdir / f"go-{self.k}"
        server = self.runcast if target == "runcast" else self.bare
        if target == "runcast":
            run_id = await self._start_run(n, rate, go)
        else:
            run_id = f"bare-{self.k}"
        share = [
            subscribers // len(self.workers) + (i < subscribers % len(self.workers)) for i in range(len(self.workers))
        ]
        busy = [(w, k) for w, k in zip(self.workers, share, strict=True) if k]
        for w, k in busy:
            w.send({"cmd": "subscribe", "port": server.port, "path": "/ws", "run_id": run_id, "sockets": k})
        ready = [await w.recv() for w, _ in busy]
        if target == "bare":
            await self.bare_control.send(orjson.dumps({"run_id": run_id, "n": n, "rate": rate, "go": str(go)}).decode())
        server_cpu = cpu_seconds(server.pid)
        began = time.time()
        go.touch()
        files = []
        for i, (w, _) in enumerate(busy):
            files.append(self.workdir / f"lat-{self.k}-{i}.bin")
            w.send({"cmd": "collect", "file": str(files[-1]), "timeout": 300})
        outs = [await w.recv(timeout=330) for w, _ in busy]
        server_cpu = cpu_seconds(server.pid) - server_cpu
        if target == "bare":
            await asyncio.wait_for(self.bare_control.recv(), 30)
        errors = [e for o in outs for e in o["errors"]]
        if errors:
            raise RuntimeError(f"{target}: subscribers saw {errors[:3]}")
        lat = array.array("f")
        for f in files:
            lat.frombytes(f.read_bytes())
            f.unlink()
        if len(lat) != n * subscribers:
            raise RuntimeError(f"{target}: {len(lat)} timed deliveries, expected {n} x {subscribers}")
        values = sorted(lat)
        last = max(o["last"] for o in outs)
        return Result(
            subscribers,
            n,
            rate,
            len(values),
            last - began,
            percentile(values, 0.5) / 1000,
            percentile(values, 0.99) / 1000,
            values[-1] / 1000,
            server_cpu,
            sum(o["cpu"] - r["cpu"] for o, r in zip(outs, ready, strict=True)),
        )


def cores(results: list[Result]) -> str:
    """How much of the machine the server and the measuring clients kept busy (mean of rounds)."""
    server = sum(r.server_cpu / r.seconds for r in results) / len(results)
    clients = sum(r.client_cpu / r.seconds for r in results) / len(results)
    return f"server {server:.2f} + clients {clients:.2f} cores"


def busy_reason(rounds: list[Result], bare: list[Result]) -> str:
    """Why the latency is what it is, in measured terms: how busy the machine was, beside the
    median p99 the row reports."""
    return (
        f"p99 {median(r.p99_ms for r in rounds):.1f} ms (bare {median(r.p99_ms for r in bare):.1f} ms at the same "
        f"rate). Each commit is one socket write per subscriber; with the {rounds[0].subscribers} subscribers' "
        f"reads, that kept {cores(rounds)} busy of the {os.cpu_count()} this machine has (bare: {cores(bare)})"
    )


def describe(r: Result) -> str:
    return (
        f"{r.subscribers} subs x {r.events} events @ {r.rate:.0f}/s: {r.per_second:,.0f} deliveries/s, "
        f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, max {r.max_ms:.1f} ms, {r.seconds:.2f} s; {cores([r])}"
    )


async def main(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    sizes = QUICK if args.quick else FULL
    workers = start_workers(workdir, "fan", sizes.processes)
    runcast = await start_runcast(workdir, "fanout")
    bare = await start_bare(workdir)
    fan = Fanout(workdir, workers, runcast, bare)
    await fan.open()
    try:
        subs = sizes.subscribers
        # Peak: as fast as the store takes events.
        n_peak = max(100, sizes.peak_deliveries // subs)
        peak = await fan.measure("runcast", subs, n_peak, 0)
        bare_peak = await fan.measure("bare", subs, n_peak, 0)
        print(f"  peak   runcast {describe(peak)}", flush=True)
        print(f"  peak   bare    {describe(bare_peak)}", flush=True)
        rate = round(peak.per_second / subs / 2)
        n = max(20, int(rate * sizes.seconds))
        rc: list[Result] = []
        bb: list[Result] = []
        for r in range(sizes.rounds):
            rc.append(await fan.measure("runcast", subs, n, rate))
            bb.append(await fan.measure("bare", subs, n, rate))
            print(f"  half {r + 1} runcast {describe(rc[-1])}", flush=True)
            print(f"  half {r + 1} bare    {describe(bb[-1])}", flush=True)

        p99 = median(x.p99_ms for x in rc)
        report.rows.append(
            Row(
                "3a",
                f"fan-out peak: deliveries/s, 1 run to {subs} subscribers",
                "deliveries/s",
                [peak.per_second],
                "bare fan-out, same frames, no store",
                [bare_peak.per_second],
                note=f"peak event rate of the run: {peak.per_second / subs:,.0f} events/s; "
                f"client CPU {peak.client_cpu:.1f} s (runcast) vs {bare_peak.client_cpu:.1f} s (bare)",
            )
        )
        report.rows.append(
            Row(
                "3b",
                f"fan-out at half peak ({rate} events/s x {subs}): deliveries/s",
                "deliveries/s",
                [x.per_second for x in rc],
                "bare fan-out, same rate",
                [x.per_second for x in bb],
            )
        )
        report.rows.append(
            Row(
                "3c",
                f"fan-out at half peak: p50 latency emit -> receipt ({subs} subs)",
                "ms",
                [x.p50_ms for x in rc],
                "bare fan-out, same rate",
                [x.p50_ms for x in bb],
                lower_is_better=True,
            )
        )
        met = p99 < GOAL_P99_MS
        report.rows.append(
            Row(
                "3d",
                f"fan-out at half peak: p99 latency emit -> receipt ({subs} subs)",
                "ms",
                [x.p99_ms for x in rc],
                "bare fan-out, same rate",
                [x.p99_ms for x in bb],
                goal=f"p99 < {GOAL_P99_MS:g} ms",
                met=met,
                why="" if met else busy_reason(rc, bb),
                note=(
                    f"this load ({rate * subs:,} deliveries/s) is above the bare endpoint's own peak "
                    f"({bare_peak.per_second:,.0f}/s): it falls behind, hence its latency"
                    if bare_peak.per_second < 0.95 * rate * subs
                    else ""
                ),
                lower_is_better=True,
            )
        )

        # Latency against load: an eighth and a quarter of the peak, besides the half above.
        curve = Scale(
            f"Figure 3 latency against load: {subs} subscribers, fractions of runcast's peak",
            "load",
            [
                "events/s x subs",
                "runcast deliveries/s",
                "runcast p50 / p99 ms",
                "bare deliveries/s",
                "bare p50 / p99 ms",
            ],
        )
        under_goal = []
        light: tuple[Result, Result] | None = None
        for fraction in (*(() if args.quick else LOADS), 0.5):
            if fraction == 0.5:
                h, bh, r_ = rc[0], bb[0], rate
            else:
                r_ = max(1, round(peak.per_second / subs * fraction))
                n_ = max(20, int(r_ * sizes.seconds))
                h = await fan.measure("runcast", subs, n_, r_)
                bh = await fan.measure("bare", subs, n_, r_)
                print(f"  load {fraction:g} runcast {describe(h)}", flush=True)
                print(f"  load {fraction:g} bare    {describe(bh)}", flush=True)
            if h.p99_ms < GOAL_P99_MS:
                under_goal.append(fraction)
            if light is None:
                light = (h, bh)
            curve.lines.append(
                [
                    f"{fraction:g} of peak",
                    f"{r_} x {subs}",
                    fmt(h.per_second),
                    f"{h.p50_ms:.2f} / {h.p99_ms:.2f}",
                    fmt(bh.per_second),
                    f"{bh.p50_ms:.2f} / {bh.p99_ms:.2f}",
                ]
            )
        curve.verdict = (
            f"runcast's p99 is under {GOAL_P99_MS:g} ms up to {max(under_goal):g} of its peak"
            if under_goal
            else f"runcast's p99 is over {GOAL_P99_MS:g} ms at every load measured"
        )
        report.scales.append(curve)
        if light is not None and light[0] is not rc[0]:
            h, bh = light
            ok = h.p99_ms < GOAL_P99_MS
            report.rows.append(
                Row(
                    "3e",
                    f"fan-out at {LOADS[0]:g} of peak ({h.rate:.0f} events/s x {subs}): p99 latency",
                    "ms",
                    [h.p99_ms],
                    "bare fan-out, same rate",
                    [bh.p99_ms],
                    goal=f"p99 < {GOAL_P99_MS:g} ms",
                    met=ok,
                    why="" if ok else busy_reason([h], [bh]),
                    note=f"p50 {h.p50_ms:.2f} ms (bare {bh.p50_ms:.2f} ms); both keep up at this load "
                    f"({h.per_second:,.0f} vs {bh.per_second:,.0f} deliveries/s)",
                    lower_is_better=True,
                )
            )

        # Scaling: 1 / 10 / 100 subscribers; peak deliveries/s, and latency at the same event rate.
        scale = Scale(
            f"Figure 3 scaling: subscribers of one run (latency at {rate} events/s for every size)",
            "subscribers",
            [
                "runcast peak deliveries/s",
                "bare peak",
                "ratio",
                "cost per delivery vs previous (1 = linear)",
                "runcast p50 / p99 ms",
                "bare p50 / p99 ms",
            ],
        )
        previous: float | None = None
        costs: list[float] = []
        for count in sizes.scale:
            if count == subs:
                p, bp, h, bh = peak, bare_peak, rc[0], bb[0]
            else:
                n_peak_s = min(20_000, max(100, sizes.peak_deliveries // count))
                p = await fan.measure("runcast", count, n_peak_s, 0)
                bp = await fan.measure("bare", count, n_peak_s, 0)
                h = await fan.measure("runcast", count, n, rate)
                bh = await fan.measure("bare", count, n, rate)
            per = 1 / p.per_second
            step = per / previous if previous else float("nan")
            previous = per
            costs.append(count / p.per_second)  # seconds of delivery per event of the run
            print(f"  scale {count}: runcast {describe(p)} | {describe(h)}", flush=True)
            scale.lines.append(
                [
                    str(count),
                    fmt(p.per_second),
                    fmt(bp.per_second),
                    fmt(p.per_second / bp.per_second, "x"),
                    "-" if step != step else f"{step:.2f}",
                    f"{h.p50_ms:.2f} / {h.p99_ms:.2f}",
                    f"{bh.p50_ms:.2f} / {bh.p99_ms:.2f}",
                ]
            )
        k = slope(list(sizes.scale), costs)
        scale.judge("delivery time per event against subscribers (at peak)", k)
        report.scales.append(scale)
        if args.profile:  # once more under py-spy, after the measured rounds
            with Profile(args.profile, "fanout-peak-runcast", runcast.pid):
                await fan.measure("runcast", subs, n_peak, 0)
            with Profile(args.profile, "fanout-half-runcast", runcast.pid):
                await fan.measure("runcast", subs, n, rate)
            with Profile(args.profile, "fanout-half-bare", bare.pid):
                await fan.measure("bare", subs, n, rate)
            with Profile(args.profile, "fanout-idle-1sub-runcast", runcast.pid):
                await fan.measure("runcast", 1, n, rate)
        report.notes.append(
            f"{subs} subscribers over {len(workers)} client processes; half-peak runs of {n} events "
            f"({sizes.seconds:g} s); {env_note()}"
        )
    finally:
        await fan.close()
        for w in workers:
            with contextlib.suppress(OSError):  # a worker that already ended
                w.send({"cmd": "exit"})


if __name__ == "__main__":
    raise SystemExit(run_script("fanout", parser(__doc__).parse_args(), main))
