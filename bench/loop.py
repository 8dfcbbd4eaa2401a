"""People in the loop, the runs feed and agents with tools: each figure beside a baseline
measured in the same run, on real servers over /ws (workflows: bench/loopflows.py).

    .venv/bin/python bench/loop.py [--quick] [--json PATH] [--profile DIR]   # ~30-60 s; --quick ~5 s

- L1 answer latency: `respond` sent -> the run's `input_received`, and -> the `progress` event
  the step sends once its ask returned (the run goes on: the step runs again from its start
  and reads its stored answer), against `start` -> `run_started` and -> the same `progress`
  of `tells`, the same step without the ask. One message at a time on one socket, p50 / p99.
  L1e: one step asking many times in a row (`questions`): the time to answer its last asks
  against its first (each answer runs the step again past every ask answered so far).
- L2 waiting runs held: two servers with `--max-running 8`; on one, N runs wait for an answer.
  Its RSS with them against the same server idle just before; and runs/s of a load of short
  runs (chain3 over /ws, 4 sockets) on it against the server with none waiting: waiting runs
  hold no slot, so the load must not notice them.
- L3 runs feed: runs/s of the same load with 10 connections watching every run
  (`subscribe_runs`, no filter) against 0 watchers, and the `run_changed` frames each got.
- L4 agent tool calls: tool calls/s through agent steps (`tools`: one turn of 10 calls;
  `rounds`: 10 rounds of 1 call) against runs of a plain step that sends as many `progress`
  events as the agent step sends events: what a tool call costs beyond its events.
- L5 durable agent loop: an agent step with K stored rounds fails and is tried again; the time
  from the failure to the model's next turn (the try's events read back and its conversation
  rebuilt) against the time those K rounds took live.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median, quantiles
from typing import Any

import orjson
import websockets
from common import (
    BENCH,
    TERMINAL,
    WS_KW,
    HttpServer,
    Profile,
    Report,
    Row,
    env_note,
    parser,
    rss_kb,
    run_script,
    start_runcast,
)
from loopflows import OUTPUT_MARK, TOOLS
from wsclient import WsConn

LOOPFLOWS = str(BENCH / "loopflows.py")
IDS = itertools.count(1)


@dataclass(frozen=True)
class Sizes:
    rounds: int
    latency_samples: int  # L1: messages timed per kind and round
    waiting: int  # L2: runs left waiting
    load_runs: int  # L2/L3: chain3 runs per load
    watchers: int  # L3
    agent_runs: int  # L4: runs per load
    stored_rounds: tuple[int, ...]  # L5: K
    asks_in_a_row: int  # L1e


FULL = Sizes(
    rounds=5,
    latency_samples=200,
    waiting=2000,
    load_runs=500,
    watchers=10,
    agent_runs=100,
    stored_rounds=(100, 1000),
    asks_in_a_row=200,
)
QUICK = Sizes(
    rounds=1,
    latency_samples=30,
    waiting=200,
    load_runs=100,
    watchers=10,
    agent_runs=20,
    stored_rounds=(20,),
    asks_in_a_row=40,
)


async def start_loop_server(workdir: Path, name: str, *flags: str) -> HttpServer:
    return await start_runcast(workdir, name, "--workflows", LOOPFLOWS, *flags)


def pct(values: Sequence[float], p: int) -> float:
    """The p-th percentile (1..99) of values."""
    return quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


class Wire:
    """One socket: replies matched by id; for awaited (run_id, event) pairs, the time each
    event's frame was read (perf_counter) and its data."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: dict[tuple[str, str], asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: HttpServer) -> Wire:
        ws = await websockets.connect(server.ws_url(), **WS_KW)
        await ws.recv()  # welcome
        return cls(ws)

    async def _read(self) -> None:
        async for raw in self.ws:
            now = time.perf_counter()
            msg = orjson.loads(raw)
            if msg["type"] == "event":
                fut = self.events.pop((msg["run_id"], msg["event"]), None)
                if fut is not None and not fut.done():
                    fut.set_result((now, msg["data"]))
                elif msg["event"] in ("run_failed", "run_cancelled"):  # what was awaited will not come
                    self._fail(msg["run_id"], f"run {msg['run_id']} ended {msg['event']}: {msg['data']}")
            elif "id" in msg:
                reply = self.replies.pop(msg["id"], None)
                if msg["type"] == "error":
                    self._fail(None, f"server error: {msg}")
                    if reply is not None and not reply.done():
                        reply.set_exception(RuntimeError(f"server error: {msg}"))
                        reply.exception()  # seen here: a sender need not await its reply
                elif reply is not None and not reply.done():
                    reply.set_result(msg)

    def _fail(self, run_id: str | None, why: str) -> None:
        """Fail what is awaited (of one run, or all): an error should not wait for a timeout."""
        for key, fut in list(self.events.items()):
            if (run_id is None or key[0] == run_id) and not fut.done():
                fut.set_exception(RuntimeError(why))
                del self.events[key]

    def expect(self, run_id: str, event: str) -> asyncio.Future[tuple[float, dict[str, Any]]]:
        fut: asyncio.Future[tuple[float, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self.events[(run_id, event)] = fut
        return fut

    async def send(self, msg: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        msg_id = next(IDS)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[msg_id] = fut
        await self.ws.send(orjson.dumps({**msg, "id": msg_id}).decode())
        return fut

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def gather_timed(*futs: asyncio.Future[tuple[float, dict[str, Any]]]) -> list[tuple[float, dict[str, Any]]]:
    return list(await asyncio.wait_for(asyncio.gather(*futs), 30))


# ---- L1: answer latency -----------------------------------------------------------------


async def start_latency(wire: Wire, n: int, tag: str, out: dict[str, list[float]]) -> None:
    """n runs of `tells`, one after the other, timed from start (ms)."""
    for i in range(n):
        run_id = f"tells-{tag}-{i}"
        first, step, end = (wire.expect(run_id, e) for e in ("run_started", "progress", "run_completed"))
        began = time.perf_counter()
        await wire.send({"type": "start", "workflow": "tells", "input": i, "run_id": run_id})
        (t1, _), (t2, _), _ = await gather_timed(first, step, end)
        out.setdefault("start_first", []).append((t1 - began) * 1e3)
        out.setdefault("start_step", []).append((t2 - began) * 1e3)


async def answer_latency(wire: Wire, n: int, tag: str) -> dict[str, list[float]]:
    """n runs of `tells` timed from start, then n runs of `asks` timed from respond (ms)."""
    out: dict[str, list[float]] = {"respond_first": [], "respond_step": []}
    await start_latency(wire, n, tag, out)
    asked: list[tuple[str, str]] = []
    for i in range(n):  # every run waiting first, untimed
        run_id = f"asks-{tag}-{i}"
        requested = wire.expect(run_id, "input_requested")
        await wire.send({"type": "start", "workflow": "asks", "input": i, "run_id": run_id})
        ((_, data),) = await gather_timed(requested)
        asked.append((run_id, data["request_id"]))
    for run_id, request_id in asked:
        first, step, end = (wire.expect(run_id, e) for e in ("input_received", "progress", "run_completed"))
        began = time.perf_counter()
        await wire.send({"type": "respond", "run_id": run_id, "request_id": request_id, "value": True})
        (t1, _), (t2, _), _ = await gather_timed(first, step, end)
        out["respond_first"].append((t1 - began) * 1e3)
        out["respond_step"].append((t2 - began) * 1e3)
    return out


async def answer_growth(wire: Wire, n: int, tag: str) -> list[float]:
    """One `questions` run asking n times in a row, each answered as it comes: for each
    answer, respond -> the next input_requested (the last: run_completed) seen, in ms."""
    run_id = f"questions-{tag}"
    asked = wire.expect(run_id, "input_requested")
    await wire.send({"type": "start", "workflow": "questions", "input": {"n": n}, "run_id": run_id})
    ((_, data),) = await gather_timed(asked)
    out: list[float] = []
    for i in range(n):
        following = wire.expect(run_id, "input_requested" if i < n - 1 else "run_completed")
        began = time.perf_counter()
        await wire.send({"type": "respond", "run_id": run_id, "request_id": data["request_id"], "value": i})
        ((now, data),) = await gather_timed(following)
        out.append((now - began) * 1e3)
    return out


# ---- loads over /ws -----------------------------------------------------------------------


async def load(
    server: HttpServer, workflow: str, inputs: Sequence[Any], sockets: int = 4, ended: list[float] | None = None
) -> tuple[float, int]:
    """Start one run per input, pipelined over `sockets` sockets, each subscribed to its runs;
    (seconds to the last terminal event, events received). The perf_counter of that last
    event is appended to `ended`, when given."""
    conns = [await websockets.connect(server.ws_url(), **WS_KW) for _ in range(sockets)]
    try:
        for ws in conns:
            await ws.recv()  # welcome
        shares = [list(inputs[i::sockets]) for i in range(sockets)]

        async def one_socket(ws: Any, share: list[Any]) -> int:
            async def send_all() -> None:
                for i, value in enumerate(share):
                    await ws.send(
                        orjson.dumps({"type": "start", "id": i, "workflow": workflow, "input": value}).decode()
                    )

            sender = asyncio.create_task(send_all())
            ended = events = 0
            try:
                while ended < len(share):
                    msg = orjson.loads(await ws.recv())
                    if msg["type"] == "event":
                        events += 1
                        if msg["event"] in TERMINAL:
                            ended += 1
                            if msg["event"] != "run_completed":
                                raise RuntimeError(f"{workflow} run ended {msg}")
                    elif msg["type"] == "error":
                        raise RuntimeError(f"/ws start: {msg}")
                await sender
                return events
            finally:
                sender.cancel()

        began = time.perf_counter()
        counts = await asyncio.gather(*(one_socket(ws, s) for ws, s in zip(conns, shares, strict=True)))
        end = time.perf_counter()
        if ended is not None:
            ended.append(end)
        return end - began, sum(counts)
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


async def chain3_rate(server: HttpServer, runs: int, ended: list[float] | None = None) -> float:
    seconds, events = await load(server, "chain3", ["go"] * runs, ended=ended)
    if events != runs * 8:
        raise RuntimeError(f"chain3: {events} events for {runs} runs")
    return runs / seconds


# ---- L2: waiting runs held ----------------------------------------------------------------


def waiting_count(server: HttpServer) -> int:
    n, cursor = 0, ""
    while True:
        url = f"http://127.0.0.1:{server.port}/api/runs?workflow=asks&status=waiting&limit=500{cursor}"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = json.loads(response.read())
        n += len(page["runs"])
        if not page.get("next"):
            return n
        cursor = f"&before={page['next']}"


async def leave_waiting(server: HttpServer, n: int, sockets: int = 4) -> float:
    """Start n `asks` runs (not subscribed) and wait until all of them wait; seconds taken."""
    began = time.perf_counter()
    conns = [await websockets.connect(server.ws_url(), **WS_KW) for _ in range(sockets)]
    try:
        for ws in conns:
            await ws.recv()

        async def one_socket(ws: Any, count: int) -> None:
            for i in range(count):
                start = {"type": "start", "id": i, "workflow": "asks", "input": i, "subscribe": False}
                await ws.send(orjson.dumps(start).decode())
            for _ in range(count):
                msg = orjson.loads(await ws.recv())
                if msg["type"] != "started":
                    raise RuntimeError(f"asks start: {msg}")

        share = [n // sockets + (i < n % sockets) for i in range(sockets)]
        await asyncio.gather(*(one_socket(ws, k) for ws, k in zip(conns, share, strict=True)))
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    deadline = time.monotonic() + 60
    while (count := await asyncio.to_thread(waiting_count, server)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count} of {n} runs waiting after 60 s")
        await asyncio.sleep(0.2)
    return time.perf_counter() - began


# ---- L3: runs feed watchers ---------------------------------------------------------------


class Watchers:
    """Connections watching every run: frames counted, `"status":"completed"` frames counted
    without parsing (so that the watchers take little of the machine from the server)."""

    def __init__(self) -> None:
        self.conns: list[WsConn] = []
        self.frames: dict[WsConn, int] = {}
        self.completed: dict[WsConn, int] = {}

    def on_text(self, conn: WsConn, data: bytes, now: float) -> None:
        if data.startswith(b'{"type":"run_changed"'):
            self.frames[conn] += 1
            self.completed[conn] += b'"status":"completed"' in data
        elif b'"runs_subscribed"' in data:
            conn.state.set_result(None)

    async def open(self, server: HttpServer, n: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            conn = await WsConn.open(server.port, "/ws", self.on_text)
            conn.state = loop.create_future()
            self.frames[conn] = self.completed[conn] = 0
            conn.send(orjson.dumps({"type": "subscribe_runs", "id": 1}))
            self.conns.append(conn)
        await asyncio.wait_for(asyncio.gather(*(c.state for c in self.conns)), 30)

    async def all_completed(self, runs: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while any(c < runs for c in self.completed.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"watchers saw {sorted(self.completed.values())} of {runs} runs completed")
            await asyncio.sleep(0.005)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


# ---- L5: durable agent loop ---------------------------------------------------------------


async def resume_timings(wire: Wire, rounds: int, key: str) -> dict[str, float]:
    """One `rounds` run with `rounds` stored rounds and a failed first try; the model's timings."""
    run_id = f"rounds-{key}"
    end = wire.expect(run_id, "run_completed")
    cfg = {"rounds": rounds, "key": key, "fail": True}
    await wire.send({"type": "start", "workflow": "rounds", "input": json.dumps(cfg), "run_id": run_id})
    ((_, data),) = list(await asyncio.wait_for(asyncio.gather(end), 120))
    timings: dict[str, float] = json.loads(str(data["output"]).rsplit(OUTPUT_MARK, 1)[1])
    return timings


# ---- the figures --------------------------------------------------------------------------


async def main(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    sizes = QUICK if args.quick else FULL

    # L1, L3, L4, L5 on one server with the default settings.
    server = await start_loop_server(workdir, "loop")
    wire = await Wire.open(server)
    lat: dict[str, list[list[float]]] = {}
    feed: dict[str, list[float]] = {"none": [], "watched": [], "frames_min": [], "frames_max": [], "lag": []}
    agent: dict[str, list[float]] = {}
    growth: list[list[float]] = []
    resume: dict[int, list[dict[str, float]]] = {k: [] for k in (0, *sizes.stored_rounds)}
    watchers = Watchers()
    try:
        await chain3_rate(server, 50)  # warm-up: code paths loaded, tables created
        await answer_latency(wire, 5, "warm")
        await load(server, "tools", [None] * 5)
        await resume_timings(wire, 3, "warm")
        await watchers.open(server, sizes.watchers)
        watchers.close()  # opened once to warm up, closed: the 0-watcher rounds have none
        watchers = Watchers()
        events = {"tools": 2 * TOOLS + 1, "rounds": 3 * 10 + 1}  # events of one agent step, answer included
        for r in range(sizes.rounds):
            for kind, values in (await answer_latency(wire, sizes.latency_samples, str(r))).items():
                lat.setdefault(kind, []).append(values)
            growth.append(await answer_growth(wire, sizes.asks_in_a_row, str(r)))

            feed["none"].append(await chain3_rate(server, sizes.load_runs))
            await watchers.open(server, sizes.watchers)
            try:
                ended: list[float] = []
                feed["watched"].append(await chain3_rate(server, sizes.load_runs, ended))
                await watchers.all_completed(sizes.load_runs)
                feed["lag"].append(time.perf_counter() - ended[0])
                feed["frames_min"].append(min(watchers.frames.values()) / sizes.load_runs)
                feed["frames_max"].append(max(watchers.frames.values()) / sizes.load_runs)
            finally:
                watchers.close()
                watchers = Watchers()

            n = sizes.agent_runs
            for wf, inputs in (
                ("tools", [None] * n),
                ("rounds", [json.dumps({"rounds": 10, "key": f"l4-{r}-{i}"}) for i in range(n)]),
            ):
                calls = n * (TOOLS if wf == "tools" else 10)
                seconds, got = await load(server, wf, inputs)
                base_seconds, base_got = await load(server, "emits", [{"n": events[wf]}] * n)
                if got != base_got:
                    raise RuntimeError(f"{wf}: {got} events against {base_got} of emits")
                agent.setdefault(wf, []).append(calls / seconds)
                agent.setdefault(f"{wf}-base", []).append(calls / base_seconds)
                agent.setdefault(f"{wf}-events", []).append(got / n)

            for k in resume:
                resume[k].append(await resume_timings(wire, k, f"{r}-{k}"))
            print(
                f"  round {r + 1}: respond p50 {median(lat['respond_step'][-1]):.2f} ms, "
                f"feed {feed['watched'][-1]:,.0f} / {feed['none'][-1]:,.0f} runs/s, "
                f"tool calls/s {agent['tools'][-1]:,.0f}",
                flush=True,
            )
        if args.profile:  # once more under py-spy, after the measured rounds
            with Profile(args.profile, "loop-tools", server.pid):
                await load(server, "tools", [None] * sizes.agent_runs * 3)
            with Profile(args.profile, "loop-answers", server.pid):
                await answer_latency(wire, sizes.latency_samples, "profile")
    finally:
        watchers.close()
        await wire.close()
        server.stop()

    # L2 on two servers with a small --max-running.
    idle = await start_loop_server(workdir, "idle", "--max-running", "8")
    held = await start_loop_server(workdir, "held", "--max-running", "8")
    rates: dict[str, list[float]] = {"idle": [], "held": []}
    rss: dict[str, float] = {}
    starts: dict[str, list[list[float]]] = {}
    try:
        for s in (idle, held):
            await chain3_rate(s, 50)
        await asyncio.sleep(0.5)
        rss["before"] = rss_kb(held.pid)
        rss["idle_before"] = rss_kb(idle.pid)
        rss["seconds"] = await leave_waiting(held, sizes.waiting)
        await asyncio.sleep(0.5)
        rss["after"] = rss_kb(held.pid)
        rss["idle_after"] = rss_kb(idle.pid)
        wires = {"idle": await Wire.open(idle), "held": await Wire.open(held)}
        try:
            for r in range(sizes.rounds):
                rates["idle"].append(await chain3_rate(idle, sizes.load_runs))
                rates["held"].append(await chain3_rate(held, sizes.load_runs))
                for name, one in wires.items():
                    out: dict[str, list[float]] = {}
                    await start_latency(one, sizes.latency_samples // 2, f"l2-{r}", out)
                    starts.setdefault(name, []).append(out["start_first"])
        finally:
            for one in wires.values():
                await one.close()
        still = await asyncio.to_thread(waiting_count, held)
        if still != sizes.waiting:
            raise RuntimeError(f"{still} runs waiting after the loads, {sizes.waiting} expected")
    finally:
        idle.stop()
        held.stop()

    # ---- rows ----
    def ms_row(fig: str, what: str, kind: str, base: str, base_what: str, p: int) -> Row:
        values = [pct(v, p) for v in lat[kind]]
        bases = [pct(v, p) for v in lat[base]]
        return Row(fig, what, "ms", values, base_what, bases, lower_is_better=True)

    n = sizes.latency_samples
    report.rows.append(
        ms_row(
            "L1a",
            f"respond -> input_received seen, p50 ({n} answers)",
            "respond_first",
            "start_first",
            "start -> run_started of `tells`",
            50,
        )
    )
    report.rows.append(
        ms_row("L1b", "same, p99", "respond_first", "start_first", "start -> run_started of `tells`", 99)
    )
    report.rows.append(
        ms_row(
            "L1c",
            "respond -> the step's next event (it ran again past its ask), p50",
            "respond_step",
            "start_step",
            "start -> the same event of `tells` (no ask)",
            50,
        )
    )
    report.rows.append(
        ms_row("L1d", "same, p99", "respond_step", "start_step", "start -> the same event of `tells` (no ask)", 99)
    )
    q, tail = sizes.asks_in_a_row, 10
    report.rows.append(
        Row(
            "L1e",
            f"respond -> the next ask seen, answers {q - tail + 1}-{q} of one step asking {q} times (median)",
            "ms",
            [median(g[-tail:]) for g in growth],
            f"same, answers 1-{tail}",
            [median(g[:tail]) for g in growth],
            lower_is_better=True,
            note=f"all {q} answers of that step took {median(sum(g) for g in growth) / 1e3:.2f} s",
        )
    )
    w = sizes.waiting
    grown = (rss["after"] - rss["before"]) / w
    report.rows.append(
        Row(
            "L2a",
            f"server RSS with {w:,} runs waiting for an answer",
            "MB",
            [rss["after"] / 1024],
            "the same server idle, just before",
            [rss["before"] / 1024],
            lower_is_better=True,
            note=f"{grown:.1f} KB per waiting run; the other server, idle meanwhile: "
            f"{rss['idle_before'] / 1024:.1f} -> {rss['idle_after'] / 1024:.1f} MB; the {w:,} runs "
            f"were started and waiting within {rss['seconds']:.1f} s",
        )
    )
    report.rows.append(
        Row(
            "L2b",
            f"chain3 runs/s over /ws, --max-running 8, {w:,} runs waiting ({sizes.load_runs} runs, 4 sockets)",
            "runs/s",
            rates["held"],
            "same load, a server with none waiting",
            rates["idle"],
        )
    )
    report.rows.append(
        Row(
            "L2c",
            f"start -> run_started of one run at a time, p50, --max-running 8, {w:,} runs waiting",
            "ms",
            [median(v) for v in starts["held"]],
            "same, a server with none waiting",
            [median(v) for v in starts["idle"]],
            lower_is_better=True,
        )
    )
    watch = sizes.watchers
    report.rows.append(
        Row(
            "L3",
            f"chain3 runs/s over /ws, {watch} connections watching every run (subscribe_runs)",
            "runs/s",
            feed["watched"],
            "same load, 0 watchers",
            feed["none"],
            note=f"run_changed frames per run per watcher {median(feed['frames_min']):.2f}-"
            f"{median(feed['frames_max']):.2f} (fewest-most watchers, median of rounds); the last watcher had "
            f"every run's last frame {median(feed['lag']) * 1e3:.0f} ms after the load's last event",
        )
    )
    e_tools, e_rounds = median(agent["tools-events"]), median(agent["rounds-events"])
    report.rows.append(
        Row(
            "L4a",
            f"tool calls/s, agent steps of one turn of {TOOLS} calls ({sizes.agent_runs} runs)",
            "calls/s",
            agent["tools"],
            f"plain step, same events ({e_tools:.0f} per run), as calls/s",
            agent["tools-base"],
        )
    )
    report.rows.append(
        Row(
            "L4b",
            f"tool calls/s, agent steps of 10 rounds of 1 call ({sizes.agent_runs} runs)",
            "calls/s",
            agent["rounds"],
            f"plain step, same events ({e_rounds:.0f} per run), as calls/s",
            agent["rounds-base"],
        )
    )
    base0 = median(t["resume_ms"] for t in resume[0])
    for i, k in enumerate(sizes.stored_rounds):
        report.rows.append(
            Row(
                f"L5{'abc'[i]}",
                f"agent step tried again with {k:,} stored rounds: failure -> model asked again",
                "ms",
                [t["resume_ms"] for t in resume[k]],
                f"those {k:,} rounds made live",
                [t["live_ms"] for t in resume[k]],
                lower_is_better=True,
                note=f"with 0 stored rounds the same retry takes {base0:.2f} ms" if i == 0 else "",
            )
        )
    report.notes.append(f"{sizes.rounds} rounds; {env_note()}")


if __name__ == "__main__":
    raise SystemExit(run_script("loop", parser(__doc__).parse_args(), main))
