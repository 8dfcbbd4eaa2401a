"""Crashes and restarts of a real server process: nothing acknowledged is lost, nothing is stuck.

On PostgreSQL too: a node restarted with the same --node-id takes its runs back at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import BACKENDS, Client, ServerProcess, StoredEvents, assert_log

FLOWS = Path(__file__).with_name("flows.py")

both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")
NewServer = Callable[..., ServerProcess]


@both_backends
async def test_kill_9_mid_run_resumes_from_the_unfinished_step(new_server: NewServer) -> None:
    server = new_server().start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("chain", {"n": 4, "delay": 0.4})
        await c.wait(lambda m: m.get("event") == "step_completed" and m["step"] == "s2", timeout=10)
        seen = c.events(run_id)
        server.kill()
        server.restart()
        d = await Client.connect(server.url)
        await d.request({"type": "subscribe", "run_id": run_id, "after": seen[-1]["seq"]})
        rest = await d.until_terminal(run_id)
        full = seen + rest
        assert_log(full)
        kinds = [(e["event"], e["step"]) for e in full]
        assert ("run_resumed", None) in kinds
        resumed = next(e for e in full if e["event"] == "run_resumed")
        assert resumed["data"] == {"reason": "restart", "from_step": "s3"}
        started = [(e["step"], e["data"]["attempt"]) for e in full if e["event"] == "step_started"]
        assert started == [("s1", 1), ("s2", 1), ("s3", 1), ("s3", 2), ("s4", 1)]
        assert full[-1]["event"] == "run_completed" and full[-1]["data"]["output"] == 4
        run = (await d.request({"type": "poll", "run_id": run_id}))["run"]
        assert [s["attempts"] for s in run["steps"]] == [1, 1, 2, 1]
    finally:
        server.stop()


@both_backends
async def test_acknowledged_runs_survive_kill_9_and_all_complete(new_server: NewServer) -> None:
    """Chaos: kill -9 several times while 120 runs are in flight; every run ends exactly right."""
    server = new_server().start()
    acknowledged: dict[str, int] = {}
    try:
        for round_ in range(3):
            c = await Client.connect(server.url)
            for i in range(40):
                n = 2 + (i % 4)
                acknowledged[await c.start("chain", {"n": n, "delay": 0.05}, subscribe=False)] = n
            await asyncio.sleep(0.15 * (round_ + 1))
            server.kill()
            server.restart()
        c = await Client.connect(server.url)
        for run_id in acknowledged:
            await c.request({"type": "subscribe", "run_id": run_id, "batch": True})
        async with StoredEvents(server.db) as stored:
            for run_id, n in acknowledged.items():
                events = await c.until_terminal(run_id, timeout=60)
                assert_log(events)
                assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == n, events[-1]
                completed = [e["step"] for e in events if e["event"] == "step_completed"]
                assert completed == [f"s{i}" for i in range(1, n + 1)], completed
                assert events == [json.loads(f) for f in await stored.frames(run_id)]
        assert len(acknowledged) == 120
    finally:
        server.stop()


@both_backends
async def test_sigterm_closes_with_1001_exits_0_and_runs_resume(new_server: NewServer) -> None:
    server = new_server().start()
    c = await Client.connect(server.url)
    run_id = await c.start("chain", {"n": 3, "delay": 0.5})
    await c.wait(lambda m: m.get("event") == "step_started")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    code = await asyncio.to_thread(server.stop)
    assert code == 0, server.tail()
    assert loop.time() - t0 < 10
    await asyncio.wait_for(c.ws.wait_closed(), 5)
    assert c.ws.close_code == 1001
    server.restart()
    try:
        d = await Client.connect(server.url)
        await d.request({"type": "subscribe", "run_id": run_id})
        events = await d.until_terminal(run_id)
        assert_log(events)
        assert [e["event"] for e in events].count("run_resumed") == 1
        assert events[-1]["data"]["output"] == 3
    finally:
        server.stop()


@both_backends
async def test_on_crash_fail_ends_interrupted_runs(new_server: NewServer) -> None:
    server = new_server("--workflows", str(FLOWS)).start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("fragile", {})
        await c.wait(lambda m: m.get("event") == "step_started")
        server.kill()
        server.restart()
        d = await Client.connect(server.url)
        await d.request({"type": "subscribe", "run_id": run_id})
        events = await d.until_terminal(run_id)
        assert_log(events)
        assert events[-1]["event"] == "run_failed" and events[-1]["data"]["error"] == "interrupted"
    finally:
        server.stop()


async def test_second_server_on_the_same_database_refuses_to_start(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path / "one.db").start()
    second = ServerProcess(tmp_path / "one.db")
    try:
        try:
            second.start(timeout=10)
        except AssertionError as exc:
            assert "in use by another runcast process" in str(exc)
        else:
            raise AssertionError("a second server started on the same database")
        assert second.proc is not None and second.proc.returncode == 1
    finally:
        second.stop()
        first.stop()
