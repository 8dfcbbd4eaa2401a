"""A cluster under faults: nodes killed or frozen mid-run, PostgreSQL restarting, cancels
of runs nobody has room for, pending runs shared out. Real processes on a real
PostgreSQL (tests/pg.py); every delivered log is checked against the stored one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from server.store.postgres import PostgresBackend

from .harness import Client, ServerProcess, assert_log, events_over_http, http
from .pg import Postgres

TAKEOVER = "2"  # --takeover-seconds: small, to keep the tests fast


@contextlib.contextmanager
def nodes(pg_url: str, folder: Path, names: str, *flags: str) -> Iterator[list[ServerProcess]]:
    """One started node per letter of `names`, all stopped (and woken, if frozen) afterwards."""
    started: list[ServerProcess] = []
    try:
        for name in names:
            started.append(ServerProcess.node(pg_url, folder, name, *flags).start())
        yield started
    finally:
        for node in started:
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.proc.pid, signal.SIGCONT)
            node.stop()


async def stored_log(node: ServerProcess, run_id: str) -> list[dict[str, Any]]:
    """The run's events as stored, read page by page over HTTP."""
    return await asyncio.to_thread(events_over_http, node.http_url, run_id)


async def get_run(node: ServerProcess, run_id: str) -> dict[str, Any]:
    status, body = await asyncio.to_thread(http, "GET", f"{node.http_url}/api/runs/{run_id}")
    assert status == 200, body
    return dict(body)


async def healthz(node: ServerProcess) -> int:
    try:
        status, _ = await asyncio.to_thread(http, "GET", node.http_url + "/healthz")
    except OSError:
        return 0
    return status


async def until_healthy(node: ServerProcess, timeout: float) -> float:
    """Seconds until /healthz says 200 (fails after `timeout`)."""
    started = time.monotonic()
    while await healthz(node) != 200:
        assert time.monotonic() - started < timeout, f"node not healthy after {timeout} s: {node.tail()}"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def subscribe(client: Client, run_id: str) -> None:
    assert (await client.request({"type": "subscribe", "run_id": run_id}))["type"] == "subscribed"


async def pipelined(client: Client, messages: list[dict[str, Any]], timeout: float = 20) -> list[dict[str, Any]]:
    """Send every message at once, then wait for each reply (in order)."""
    ids = [f"p{len(client.inbox)}-{i}" for i in range(len(messages))]
    for mid, message in zip(ids, messages, strict=True):
        await client.send({**message, "id": mid})
    replies = [await client.wait(lambda m, mid=mid: m.get("id") == mid, timeout) for mid in ids]
    assert all(r["type"] in ("started", "subscribed") for r in replies), replies
    return replies


def is_event(kind: str, **data: Any) -> Any:
    """A predicate for a received frame holding an event of this kind (and data)."""

    def match(event: dict[str, Any]) -> bool:
        return event.get("event") == kind and all(event.get("data", {}).get(k) == v for k, v in data.items())

    def pred(msg: dict[str, Any]) -> bool:
        if msg.get("type") == "events":
            return any(match(e) for e in msg["events"])
        return msg.get("type") == "event" and match(msg)

    return pred


def steps_completed_once(events: list[dict[str, Any]]) -> None:
    done = [e["step"] for e in events if e["event"] == "step_completed"]
    assert len(done) == len(set(done)), f"a completed step ran again: {done}"


def takeovers(events: list[dict[str, Any]]) -> int:
    """How many times the run resumed; every one must be a takeover."""
    resumed = [e for e in events if e["event"] == "run_resumed"]
    assert all(e["data"]["reason"] == "takeover" for e in resumed), resumed
    return len(resumed)


def finished_by(node: ServerProcess) -> set[str]:
    """The runs this node ended (from its log lines `run_id=... status=...`)."""
    return set(re.findall(r"run_id=(\w+) workflow=\w+ status=(?:completed|failed|cancelled)", node.tail(10**7)))


def ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


# ---- 1. kill -9 ------------------------------------------------------------------------


async def test_kill_9_of_a_node_with_runs_in_flight_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    with nodes(pg_url, tmp_path, "abc", "--takeover-seconds", TAKEOVER) as (a, b, c):
        ca, cb, cc = await Client.connect(a.url), await Client.connect(b.url), await Client.connect(c.url)
        inputs = [
            ("chain", {"n": 4, "delay": 0.3}) if i % 2 else ("count", {"n": 200, "delay": 0.01}) for i in range(30)
        ]
        replies = await pipelined(
            ca, [{"type": "start", "workflow": w, "input": i, "subscribe": False} for w, i in inputs]
        )
        runs = {r["run"]["run_id"]: w for r, (w, _) in zip(replies, inputs, strict=True)}
        await pipelined(cb, [{"type": "subscribe", "run_id": r} for r in runs])
        # Killed at once, with every run in flight; C's client subscribes only afterwards.
        a.kill()
        killed = time.monotonic()
        await pipelined(cc, [{"type": "subscribe", "run_id": r} for r in runs])
        await cb.wait(is_event("run_resumed", reason="takeover"), 20)
        first_resumed = time.monotonic() - killed
        print(f"kill -9 to the first run_resumed seen through another node: {first_resumed:.2f} s")

        taken = 0
        for run_id, workflow in runs.items():
            seen_b = await cb.until_terminal(run_id, 40)
            seen_c = await cc.until_terminal(run_id, 40)
            stored = await stored_log(b, run_id)
            for events in (seen_b, seen_c):
                assert_log(events)
                assert events == stored, f"{run_id}: delivered log differs from the stored one"
            assert stored[-1]["event"] == "run_completed", stored[-1]
            steps_completed_once(stored)
            expected = ["s1", "s2", "s3", "s4"] if workflow == "chain" else ["count"]
            assert sorted({e["step"] for e in stored if e["event"] == "step_completed"}) == expected
            resumed = takeovers(stored)
            assert resumed <= 1, f"{run_id} resumed {resumed} times"
            taken += resumed
        print(f"{taken} of 30 runs taken over")
        assert taken >= 10, f"only {taken} of 30 runs were in flight at the kill"
        assert first_resumed < 2 + 3, f"takeover took {first_resumed:.2f} s with --takeover-seconds 2"


# ---- 2. a frozen node comes back ---------------------------------------------------------


async def test_a_frozen_node_woken_after_a_takeover_never_writes_to_the_run(pg_url: str, tmp_path: Path) -> None:
    with nodes(pg_url, tmp_path, "ab", "--takeover-seconds", TAKEOVER) as (a, b):
        assert a.proc is not None
        ca, cb = await Client.connect(a.url), await Client.connect(b.url)
        run_ids = [await ca.start("count", {"n": 400, "delay": 0.01}, subscribe=False) for _ in range(4)]
        for run_id in run_ids:
            await subscribe(cb, run_id)
        await cb.wait(lambda m: m.get("event") == "progress" and m["data"]["current"] >= 50, 10)
        os.kill(a.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            for _ in run_ids:
                await cb.wait(is_event("run_resumed", reason="takeover"), 20)
            print(f"SIGSTOP to the last run_resumed seen through B: {time.monotonic() - stopped:.2f} s")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)

        for run_id in run_ids:
            seen = await cb.until_terminal(run_id, 40)
            assert_log(seen)
            assert takeovers(seen) == 1
            assert seen[-1]["event"] == "run_completed"
            assert await stored_log(b, run_id) == seen
            assert await stored_log(a, run_id) == seen
        deadline = time.monotonic() + 10
        while "owned by another node" not in a.tail(10**6):
            assert time.monotonic() < deadline, "A never said it lost its runs: " + a.tail()
            await asyncio.sleep(0.2)
        assert await healthz(a) == 200
        # A still serves: a new run through it completes.
        ca2 = await Client.connect(a.url)
        assert_log(await ca2.until_terminal(await ca2.start("echo", {"x": 1}), 20))


# ---- 3. PostgreSQL restarts --------------------------------------------------------------


@pytest.mark.parametrize("outage", [0.0, 4.0], ids=["restart", "down-4s"])
async def test_a_postgres_restart_mid_run_loses_nothing(
    postgres: Postgres, pg_url: str, tmp_path: Path, outage: float
) -> None:
    """A restart (pg_ctl restart -m fast), and an outage longer than --takeover-seconds:
    every node's heartbeat is then stale at once."""
    with nodes(pg_url, tmp_path, "ab", "--takeover-seconds", "3" if not outage else TAKEOVER) as (a, b):
        ca, cb = await Client.connect(a.url), await Client.connect(b.url)
        started: list[tuple[str, Client]] = []
        for i in range(12):
            client, watcher = (ca, cb) if i % 2 else (cb, ca)
            workflow, input = ("chain", {"n": 6, "delay": 0.4}) if i % 3 else ("count", {"n": 400, "delay": 0.01})
            run_id = await client.start(workflow, input, subscribe=False)
            await subscribe(watcher, run_id)
            started.append((run_id, watcher))
        await ca.wait(is_event("step_completed"), 10)

        degraded: set[int] = set()

        async def watch_health() -> None:
            while True:
                degraded.update({await healthz(a), await healthz(b)})
                await asyncio.sleep(0.05)

        watcher_task = asyncio.create_task(watch_health())
        if outage:
            await asyncio.to_thread(postgres.outage, outage)
        else:
            try:
                await asyncio.to_thread(postgres.restart)
            except BaseException:
                with contextlib.suppress(Exception):
                    postgres._ctl("start")  # never leave the session's server down
                raise
        restarted = time.monotonic()
        try:
            recovered = [await until_healthy(a, 10), await until_healthy(b, 10)]
        finally:
            watcher_task.cancel()
        print(f"healthz during the restart: {sorted(degraded)}; 200 again after {max(recovered):.2f} s")

        moved = 0
        for run_id, watcher in started:
            seen = await watcher.until_terminal(run_id, 45)
            assert_log(seen)
            steps_completed_once(seen)
            moved += takeovers(seen)
            assert seen[-1]["event"] == "run_completed", seen[-1]
            assert await stored_log(a, run_id) == seen
            assert (await get_run(b, run_id))["status"] == "completed"
        print(f"{moved} of {len(started)} runs moved to the other node")
        assert moved == 0, "both nodes were alive: the database was away, not a node"
        assert time.monotonic() - restarted < 50
        run_id = await ca.start("echo", {"after": "restart"})
        assert_log(await ca.until_terminal(run_id, 20))


# ---- 4. cancels --------------------------------------------------------------------------


async def test_cancel_of_a_pending_run_no_node_has_room_for(pg_url: str, tmp_path: Path) -> None:
    with nodes(pg_url, tmp_path, "ab", "--takeover-seconds", TAKEOVER, "--max-running", "1") as (a, b):
        ca, cb = await Client.connect(a.url), await Client.connect(b.url)
        run_ids = [await ca.start("sleep", {"seconds": 60}) for _ in range(3)]
        for run_id in run_ids[:2]:  # one on each node
            await ca.wait(lambda m, r=run_id: m.get("run_id") == r and m.get("event") == "step_started", 10)
        await asyncio.sleep(1.0)  # a few claim beats: nobody takes the third
        waiting = run_ids[2]
        assert (await get_run(a, waiting))["status"] == "pending"
        for client in (cb, ca):
            asked = time.monotonic()
            target = waiting if client is cb else run_ids[0]
            assert (await client.request({"type": "cancel", "run_id": target}))["type"] == "cancel_requested"
            events = await ca.until_terminal(target, 10)
            assert_log(events)
            assert events[-1]["event"] == "run_cancelled"
            assert time.monotonic() - asked < 1.5
        # The slot the cancelled runs freed is not given to the cancelled one: it stays cancelled.
        assert (await get_run(b, waiting))["status"] == "cancelled"
        assert (await get_run(b, run_ids[1]))["status"] == "running"


# ---- 5. pending runs are shared out ------------------------------------------------------


async def start_over_http(node: ServerProcess, workflow: str, input: Any) -> str:
    status, body = await asyncio.to_thread(
        http, "POST", node.http_url + "/api/runs", {"workflow": workflow, "input": input}
    )
    assert status == 202, body
    return str(body["run_id"])


@pytest.mark.parametrize("how", ["one-socket", "concurrent-http"])
async def test_pending_runs_are_shared_out_within_max_running(pg_url: str, tmp_path: Path, how: str) -> None:
    with nodes(pg_url, tmp_path, "ab", "--takeover-seconds", TAKEOVER, "--max-running", "2") as (a, b):
        ca = await Client.connect(a.url)
        if how == "one-socket":
            run_ids = [await ca.start("sleep", {"seconds": 1}, subscribe=False) for _ in range(8)]
        else:  # all at once: none of them may count a slot another one took
            run_ids = list(await asyncio.gather(*(start_over_http(a, "sleep", {"seconds": 1}) for _ in range(8))))
        await pipelined(ca, [{"type": "subscribe", "run_id": r} for r in run_ids])
        spans = []
        for run_id in run_ids:
            events = await ca.until_terminal(run_id, 30)
            assert_log(events)
            assert events[-1]["event"] == "run_completed"
            begun = next(e for e in events if e["event"] in ("run_started", "run_resumed"))
            spans.append((ts(begun), ts(events[-1])))
        busiest = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
        assert busiest <= 4, f"{busiest} runs at once with 2 nodes of --max-running 2"
        await asyncio.sleep(0.5)  # the log lines of the last runs
        by_a, by_b = finished_by(a) & set(run_ids), finished_by(b) & set(run_ids)
        print(f"node a ran {len(by_a)}, node b ran {len(by_b)}, at most {busiest} at once")
        assert by_a | by_b == set(run_ids) and not by_a & by_b
        assert len(by_a) >= 2 and len(by_b) >= 2, (len(by_a), len(by_b))


# ---- a node frozen inside a transaction ------------------------------------------------


async def test_a_node_frozen_inside_a_transaction_does_not_block_the_takeover(pg_url: str) -> None:
    """SIGSTOP can land while a node's write transaction holds its runs' rows: the claims
    of the others skip locked rows, so the server must end that transaction by itself."""
    frozen, live = PostgresBackend(pg_url, "frozen"), PostgresBackend(pg_url, "live")
    await frozen.open()
    await live.open()
    try:
        async with frozen._conn() as conn:
            await conn.execute(
                "INSERT INTO runs (run_id, workflow, status, created_at, owner, epoch)"
                " VALUES ('r1', 'sleep', 'running', '2026-01-01T00:00:00.000Z', 'frozen', 1)"
            )

        async def hold_the_lock() -> None:
            async with frozen._conn() as conn, conn.transaction():
                await conn.execute("SELECT 1 FROM runs WHERE run_id = 'r1' FOR UPDATE")
                await asyncio.sleep(8)  # frozen: the transaction stays open, idle

        holder = asyncio.create_task(hold_the_lock())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        taken: list[Any] = []
        while not taken and time.monotonic() - started < 6:
            taken = await live.cluster.claim(1, 0.5, ["sleep"])
            await asyncio.sleep(0.1)
        waited = time.monotonic() - started
        assert taken and taken[0][0]["run_id"] == "r1" and taken[0][1], f"not taken over in {waited:.1f} s"
        assert waited < 3, f"the frozen transaction held the run for {waited:.1f} s"
        holder.cancel()
        with contextlib.suppress(BaseException):
            await holder
    finally:
        await live.close()
        await frozen.close()


async def test_a_node_never_claims_the_runs_it_owns(pg_url: str) -> None:
    """Its own heartbeat may be late (the loop stalled, the database was away): taking its
    own run again would bump the epoch under the writes in flight and fence them off."""
    node = PostgresBackend(pg_url, "self")
    await node.open()
    try:
        async with node._conn() as conn:
            await conn.execute(
                "INSERT INTO runs (run_id, workflow, status, created_at, owner, epoch)"
                " VALUES ('r1', 'sleep', 'running', '2026-01-01T00:00:00.000Z', 'self', 1)"
            )
            await conn.execute("UPDATE nodes SET seen_at = now() - interval '1 hour'")
        node.cluster.owned["r1"] = 1
        assert await node.cluster.claim(5, 0.5, ["sleep"]) == []
        assert await node.cluster.claim_run("r1", 0.5) is None
        assert node.cluster.owned["r1"] == 1
    finally:
        await node.close()
