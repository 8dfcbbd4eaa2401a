"""Contract 8.2, starting later and in order: `delay` / `start_at` and `priority` on `start`,
HTTP and `arun`, on both databases; a delayed run survives kill -9 and starts no earlier."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from .harness import BACKENDS, Client, ServerProcess, http

both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


def _epoch(wire_time: str) -> float:
    return datetime.fromisoformat(wire_time).timestamp()


@both_backends
async def test_a_delayed_run_waits_says_when_and_survives_a_kill(new_server: Callable[..., ServerProcess]) -> None:
    server = new_server("--takeover-seconds", "1").start()
    try:
        c = await Client.connect(server.url)
        asked_at = time.time()
        reply = await c.request({"type": "start", "workflow": "echo", "input": 1, "delay": 1.5, "subscribe": False})
        run = reply["run"]
        assert run["status"] == "pending" and run["priority"] == 0
        assert abs(_epoch(run["scheduled_for"]) - (asked_at + 1.5)) < 0.5
        await asyncio.sleep(0.5)
        polled = (await c.request({"type": "poll", "run_id": run["run_id"]}))["run"]
        assert polled["status"] == "pending" and polled["last_seq"] == 0  # not started, nothing stored
        await c.close()
        server.kill()  # kill -9 while it waits: the start is stored, and so is when
        server.start()
        c = await Client.connect(server.url)
        await c.request({"type": "subscribe", "run_id": run["run_id"]})
        done = await c.wait(lambda m: m.get("event") == "run_completed", timeout=15)
        final = (await c.request({"type": "poll", "run_id": run["run_id"]}))["run"]
        assert final["status"] == "completed" and final["scheduled_for"] == run["scheduled_for"]
        started = [m for m in c.inbox if m.get("event") == "run_started"]
        assert len(started) == 1 and started[0]["seq"] == 1 and done["seq"] > 1
        assert _epoch(final["started_at"]) >= _epoch(run["scheduled_for"])  # no earlier
        assert _epoch(final["started_at"]) < _epoch(run["scheduled_for"]) + 3  # and not much later
    finally:
        server.stop()


@both_backends
async def test_due_pending_runs_start_highest_priority_first(new_server: Callable[..., ServerProcess]) -> None:
    server = new_server("--max-running", "1").start()
    try:
        c = await Client.connect(server.url)
        blocker = await c.request({"type": "start", "workflow": "sleep", "input": {"seconds": 0.8}, "subscribe": False})
        ids = {}
        for priority in (-5, 0, 10, 0):  # created in this order; the two 0s keep theirs
            reply = await c.request(
                {"type": "start", "workflow": "echo", "input": priority, "priority": priority, "subscribe": False}
            )
            assert reply["run"]["status"] == "pending" and reply["run"]["priority"] == priority
            ids.setdefault(priority, []).append(reply["run"]["run_id"])
        order = [ids[10][0], ids[0][0], ids[0][1], ids[-5][0]]
        finals = []
        for run_id in [blocker["run"]["run_id"], *order]:
            await c.request({"type": "subscribe", "run_id": run_id})
            await c.wait(lambda m, r=run_id: m.get("run_id") == r and m.get("event") == "run_completed", timeout=20)
            finals.append((await c.request({"type": "poll", "run_id": run_id}))["run"])
        starts = [run["started_at"] for run in finals]
        assert starts == sorted(starts), finals
    finally:
        server.stop()


async def test_when_and_order_are_checked_the_same_over_websocket_and_http(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    bad = [
        ({"delay": -1}, "field 'delay' must be a number of seconds"),
        ({"delay": "soon"}, "field 'delay' must be a number of seconds"),
        ({"delay": 1, "start_at": "2030-01-01T00:00:00Z"}, "give 'delay' or 'start_at', not both"),
        ({"start_at": "tomorrow"}, "field 'start_at' must be an ISO 8601 time"),
        ({"priority": 101}, "field 'priority' must be from -100 to 100"),
        ({"priority": 1.5}, "field 'priority' must be an integer"),
    ]
    for fields, message in bad:
        reply = await c.request({"type": "start", "workflow": "echo", **fields})
        assert reply["type"] == "error" and reply["code"] == "bad_request", reply
        assert reply["message"].startswith(message), reply
        status, body = await asyncio.to_thread(
            http, "POST", server.http_url + "/api/runs", {"workflow": "echo", **fields}
        )
        assert status == 400 and body["error"] == {"code": "bad_request", "message": reply["message"]}
    # A start_at in the past starts at once; an offset is taken into account.
    past = (datetime.now(UTC) - timedelta(hours=1)).astimezone(timezone(timedelta(hours=2))).isoformat()
    reply = await c.request({"type": "start", "workflow": "echo", "input": 1, "start_at": past})
    assert _epoch(reply["run"]["scheduled_for"]) == pytest.approx(_epoch(past), abs=0.001)
    await c.wait(lambda m: m.get("event") == "run_completed", timeout=5)
    status, body = await asyncio.to_thread(
        http, "POST", server.http_url + "/api/runs", {"workflow": "echo", "delay": 30, "priority": -3}
    )
    assert status == 202 and body["status"] == "pending" and body["priority"] == -3 and body["scheduled_for"]


async def test_arun_takes_delay_start_at_and_priority(tmp_path: Path) -> None:
    from server import SqliteDb, Step, Workflow

    wf = Workflow("w", [Step("s", lambda step_input: step_input.input)], db=SqliteDb(db_file=str(tmp_path / "a.db")))
    began = time.time()
    later = await wf.arun(1, background=True, delay=0.8, priority=7)
    assert later.status == "pending"
    at = await wf.arun(2, background=True, start_at=datetime.now(UTC) + timedelta(seconds=0.8))
    with pytest.raises(Exception, match="priority"):
        await wf.arun(3, background=True, priority=500)
    for run in (later, at):
        while (now := wf.get_run(run.run_id)) is None or now.status != "completed":
            await asyncio.sleep(0.05)
    assert time.time() - began >= 0.8
    assert wf.db is not None
    await wf.db.close()


FLOWS = str(Path(__file__).with_name("flows.py"))


def _overlaps(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of runs whose [started_at, finished_at] overlap."""
    spans = sorted((_epoch(r["started_at"]), _epoch(r["finished_at"]), r["run_id"]) for r in runs)
    return [(a[2], b[2]) for a, b in itertools.pairwise(spans) if b[0] < a[1]]


async def _finals(c: Client, run_ids: list[str]) -> list[dict[str, Any]]:
    finals = []
    for run_id in run_ids:
        await c.request({"type": "subscribe", "run_id": run_id})
        await c.wait(lambda m, r=run_id: m.get("run_id") == r and m.get("event") == "run_completed", timeout=30)
        finals.append((await c.request({"type": "poll", "run_id": run_id}))["run"])
    return finals


@both_backends
async def test_one_run_per_concurrency_key_at_a_time_and_other_keys_go_on(
    new_server: Callable[..., ServerProcess],
) -> None:
    server = new_server("--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        a, b = [], []
        for customer in ("a", "a", "b", "a"):
            reply = await c.request({"type": "start", "workflow": "keyed", "input": {"customer": customer}})
            assert reply["run"]["concurrency_key"] == customer and reply["run"]["concurrency_limit"] == 1
            (a if customer == "a" else b).append(reply["run"]["run_id"])
        given = {"type": "start", "workflow": "keyed", "input": {"customer": "c"}, "concurrency_key": "a"}
        a.append((await c.request(given))["run"]["run_id"])  # a key given on start wins over the input's
        runs_a, runs_b = await _finals(c, a), await _finals(c, b)
        assert _overlaps(runs_a) == [], runs_a
        starts_a = sorted(_epoch(r["started_at"]) for r in runs_a)
        assert _epoch(runs_b[0]["started_at"]) < starts_a[1]  # b did not wait behind a's runs
        assert runs_a[-1]["concurrency_key"] == "a"
    finally:
        server.stop()


async def test_a_key_is_held_across_a_cluster(postgres: Any, tmp_path: Path) -> None:
    url = postgres.new_database()
    nodes = [ServerProcess.node(url, tmp_path, name, "--workflows", FLOWS).start() for name in ("n1", "n2")]
    try:
        clients = [await Client.connect(node.url) for node in nodes]
        ids = []
        for i in range(6):  # through both nodes, one key
            reply = await clients[i % 2].request(
                {"type": "start", "workflow": "keyed", "input": {"customer": "x", "seconds": 0.3}}
            )
            ids.append(reply["run"]["run_id"])
        runs = await _finals(clients[0], ids)
        assert _overlaps(runs) == [], runs
    finally:
        for node in nodes:
            node.stop()


async def test_a_key_stays_held_while_its_node_dies_and_is_taken_over(postgres: Any, tmp_path: Path) -> None:
    url = postgres.new_database()
    flags = ("--workflows", FLOWS, "--takeover-seconds", "1")
    nodes = [ServerProcess.node(url, tmp_path, name, *flags).start() for name in ("n1", "n2")]
    try:
        first = await Client.connect(nodes[0].url)
        held = await first.request({"type": "start", "workflow": "keyed", "input": {"customer": "y", "seconds": 2}})
        await first.request({"type": "subscribe", "run_id": held["run"]["run_id"]})
        await first.wait(lambda m: m.get("event") == "step_started", timeout=10)
        second = await Client.connect(nodes[1].url)
        later = {"type": "start", "workflow": "keyed", "input": {"customer": "y", "seconds": 0.2}}
        waiting = await second.request(later)
        nodes[0].kill()  # kill -9 while it holds the key: the key stays taken until its run ends elsewhere
        runs = await _finals(second, [held["run"]["run_id"], waiting["run"]["run_id"]])
        assert _epoch(runs[1]["started_at"]) >= _epoch(runs[0]["finished_at"]), runs
    finally:
        for node in nodes:
            node.stop()
