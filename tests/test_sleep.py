"""Contract 8.1, durable sleep: `ctx.sleep` and `ctx.sleep_until` in async and plain
function steps, on both databases; `sleep_started`/`sleep_ended` once each whatever
kill -9 happens between them; status `sleeping` with `wake_at`; no slot held; cancel at
once; a sleep that fell due while no server ran wakes at once; a cluster wakes it once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from .harness import BACKENDS, Client, ServerProcess, http

both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)
FLOWS = str(Path(__file__).with_name("flows.py"))


def _epoch(wire_time: str) -> float:
    return datetime.fromisoformat(wire_time).timestamp()


_ENDS = ("run_completed", "run_failed", "run_cancelled")


def _names(events: list[dict[str, Any]], run_id: str) -> list[str]:
    return [m["event"] for m in events if m.get("run_id") == run_id and m.get("type") == "event"]


async def _events(c: Client, run_id: str, timeout: float = 20) -> list[dict[str, Any]]:
    """Every event of a run from seq 1 until it ends, following it (once each: a start that
    subscribed already delivered some of them, which this subscription delivers again)."""
    await c.request({"type": "subscribe", "run_id": run_id, "after": 0})
    await c.wait(lambda m: m.get("run_id") == run_id and m.get("event") in _ENDS, timeout=timeout)
    by_seq: dict[int, dict[str, Any]] = {}
    for m in c.inbox:
        if m.get("run_id") == run_id and m.get("type") == "event":
            assert by_seq.setdefault(m["seq"], m) == m
    return [by_seq[seq] for seq in sorted(by_seq)]


@both_backends
async def test_a_sleep_survives_a_kill_and_ends_once(new_server: Callable[..., ServerProcess]) -> None:
    server = new_server("--workflows", FLOWS, "--max-running", "1").start()
    try:
        c = await Client.connect(server.url)
        began = time.time()
        reply = await c.request({"type": "start", "workflow": "nap", "input": {"seconds": 2.5}})
        run_id = reply["run"]["run_id"]
        started = await c.wait(lambda m: m.get("event") == "sleep_started")
        assert started["step"] == "nap" and abs(_epoch(started["data"]["until"]) - (began + 2.5)) < 1
        polled = (await c.request({"type": "poll", "run_id": run_id}))["run"]
        assert polled["status"] == "sleeping" and polled["wake_at"] == started["data"]["until"]
        assert polled["steps"][0]["status"] == "sleeping"
        # It holds no slot: with --max-running 1 another run goes through meanwhile.
        other = await c.request({"type": "start", "workflow": "echo", "input": "meanwhile"})
        await c.wait(lambda m: m.get("run_id") == other["run"]["run_id"] and m.get("event") == "run_completed")
        listed = (await c.request({"type": "list_runs", "status": "sleeping"}))["runs"]
        assert [r["run_id"] for r in listed] == [run_id] and listed[0]["wake_at"] == started["data"]["until"]
        await c.close()
        server.kill()  # kill -9 mid-sleep
        server.start()
        c = await Client.connect(server.url)
        events = await _events(c, run_id)
        names = _names(events, run_id)
        assert names.count("sleep_started") == 1 and names.count("sleep_ended") == 1, names
        assert names.index("sleep_started") < names.index("sleep_ended") < names.index("run_completed")
        assert [m["seq"] for m in events] == list(range(1, len(events) + 1))
        ended = next(m for m in events if m["event"] == "sleep_ended")
        assert _epoch(ended["ts"]) >= _epoch(started["data"]["until"])  # not before its time
        final = (await c.request({"type": "poll", "run_id": run_id}))["run"]
        assert final["status"] == "completed" and final["output"] == {"slept": 2.5} and final["wake_at"] is None
        assert final["steps"][0]["attempts"] == 1  # the same try went on
    finally:
        server.stop()


@both_backends
async def test_a_sleep_that_fell_due_while_down_wakes_at_once(new_server: Callable[..., ServerProcess]) -> None:
    server = new_server("--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        reply = await c.request({"type": "start", "workflow": "doze", "input": {"seconds": 1}})  # a plain function step
        run_id = reply["run"]["run_id"]
        await c.wait(lambda m: m.get("event") == "sleep_started")
        await c.close()
        server.kill()
        time.sleep(1.5)  # it falls due while no server runs
        server.start()
        restarted = time.time()
        c = await Client.connect(server.url)
        events = await _events(c, run_id, timeout=10)
        assert _names(events, run_id).count("sleep_ended") == 1
        ended = next(m for m in events if m["event"] == "sleep_ended")
        assert _epoch(ended["ts"]) - restarted < 3  # at once, not a minute later
        final = (await c.request({"type": "poll", "run_id": run_id}))["run"]
        assert final["output"] == "rested"
    finally:
        server.stop()


@pytest.fixture
def flows_server(new_server: Callable[..., ServerProcess]) -> Any:
    server = new_server("--workflows", FLOWS).start()
    yield server
    server.stop()


async def test_sleeps_in_sequence_each_once_and_cancel_ends_a_sleep_at_once(flows_server: ServerProcess) -> None:
    c = await Client.connect(flows_server.url)
    reply = await c.request({"type": "start", "workflow": "nap", "input": {"seconds": 0.3, "twice": True}})
    run_id = reply["run"]["run_id"]
    events = await _events(c, run_id)
    assert _names(events, run_id).count("sleep_started") == 2 and _names(events, run_id).count("sleep_ended") == 2
    assert (await c.request({"type": "poll", "run_id": run_id}))["run"]["status"] == "completed"

    reply = await c.request({"type": "start", "workflow": "nap", "input": {"seconds": 3600}})
    long_id = reply["run"]["run_id"]
    await c.wait(lambda m: m.get("run_id") == long_id and m.get("event") == "sleep_started")
    asked = time.monotonic()
    cancelled = await c.request({"type": "cancel", "run_id": long_id})
    assert time.monotonic() - asked < 2
    assert cancelled["run"]["status"] == "cancelled" and cancelled["run"]["wake_at"] is None
    events = await _events(c, long_id)
    names = _names(events, long_id)
    assert names[-1] == "run_cancelled" and "sleep_ended" not in names
    assert events[-1]["data"]["by"] is None or isinstance(events[-1]["data"]["by"], str)


async def test_a_run_with_a_branch_that_asks_is_waiting_until_answered(flows_server: ServerProcess) -> None:
    c = await Client.connect(flows_server.url)
    reply = await c.request({"type": "start", "workflow": "naps", "input": {"seconds": 0.5}})
    run_id = reply["run"]["run_id"]
    asked = await c.wait(lambda m: m.get("event") == "input_requested")
    await c.wait(lambda m: m.get("event") == "sleep_started")
    polled = (await c.request({"type": "poll", "run_id": run_id}))["run"]
    assert polled["status"] == "waiting" and polled["wake_at"] is None  # a branch asks: waiting
    await c.wait(lambda m: m.get("event") == "sleep_ended", timeout=5)
    assert (await c.request({"type": "poll", "run_id": run_id}))["run"]["status"] == "waiting"
    await c.request({"type": "respond", "run_id": run_id, "request_id": asked["data"]["request_id"], "value": "yes"})
    await c.wait(lambda m: m.get("run_id") == run_id and m.get("event") == "run_completed")
    final = (await c.request({"type": "poll", "run_id": run_id}))["run"]
    assert final["output"] == {"short": {"slept": 0.5}, "asks": "yes"}


async def test_sleeping_runs_are_listed_over_http(flows_server: ServerProcess) -> None:
    c = await Client.connect(flows_server.url)
    reply = await c.request({"type": "start", "workflow": "nap", "input": {"seconds": 30}, "subscribe": False})
    run_id = reply["run"]["run_id"]
    base = flows_server.http_url
    for _ in range(50):
        status, body = await asyncio.to_thread(http, "GET", f"{base}/api/runs/{run_id}")
        if body["status"] == "sleeping":
            break
        await asyncio.sleep(0.05)
    assert status == 200 and body["status"] == "sleeping" and body["wake_at"]
    status, page = await asyncio.to_thread(http, "GET", f"{base}/api/runs?status=sleeping")
    assert status == 200 and [r["run_id"] for r in page["runs"]] == [run_id]
    await c.request({"type": "cancel", "run_id": run_id})


async def test_a_cluster_wakes_a_sleep_once_after_its_node_dies(postgres: Any, tmp_path: Path) -> None:
    url = postgres.new_database()
    flags = ("--workflows", FLOWS, "--takeover-seconds", "1")
    a = ServerProcess.node(url, tmp_path, "a", *flags).start()
    b = ServerProcess.node(url, tmp_path, "b", *flags).start()
    try:
        c = await Client.connect(a.url)
        reply = await c.request({"type": "start", "workflow": "nap", "input": {"seconds": 2}})
        run_id = reply["run"]["run_id"]
        await c.wait(lambda m: m.get("event") == "sleep_started")
        await c.close()
        a.kill()  # the node that stored the sleep dies; the other wakes it
        c = await Client.connect(b.url)
        events = await _events(c, run_id, timeout=20)
        names = _names(events, run_id)
        assert names.count("sleep_ended") == 1 and names[-1] == "run_completed", names
        assert [m["seq"] for m in events] == list(range(1, len(events) + 1))
    finally:
        a.stop()
        b.stop()
