"""A cluster: several real server processes on one real PostgreSQL (tests/pg.py)."""

from __future__ import annotations

import time
from pathlib import Path

from .harness import Client, ServerProcess, assert_log


async def test_a_run_started_on_one_node_streams_exactly_through_another(pg_url: str, tmp_path: Path) -> None:
    a = ServerProcess.node(pg_url, tmp_path, "a").start()
    b = ServerProcess.node(pg_url, tmp_path, "b").start()
    try:
        ca, cb = await Client.connect(a.url), await Client.connect(b.url)
        run_id = await ca.start("count", {"n": 200, "delay": 0.002}, subscribe=False)
        started = time.monotonic()
        assert (await cb.request({"type": "subscribe", "run_id": run_id}))["type"] == "subscribed"
        events = await cb.until_terminal(run_id)
        assert_log(events)
        assert [e["data"]["current"] for e in events if e["event"] == "progress"] == list(range(1, 201))
        assert time.monotonic() - started < 10
        poll = await cb.request({"type": "poll", "run_id": run_id})
        assert poll["run"]["status"] == "completed" and poll["run"]["last_seq"] == events[-1]["seq"]
    finally:
        a.stop()
        b.stop()


async def test_cancel_through_a_node_that_does_not_own_the_run(pg_url: str, tmp_path: Path) -> None:
    a = ServerProcess.node(pg_url, tmp_path, "a").start()
    b = ServerProcess.node(pg_url, tmp_path, "b").start()
    try:
        ca, cb = await Client.connect(a.url), await Client.connect(b.url)
        run_id = await ca.start("sleep", {"seconds": 60})
        await ca.wait(lambda m: m.get("event") == "step_started")
        asked = time.monotonic()
        assert (await cb.request({"type": "cancel", "run_id": run_id}))["type"] == "cancel_requested"
        events = await ca.until_terminal(run_id)
        assert events[-1]["event"] == "run_cancelled" and time.monotonic() - asked < 1.5
        assert_log(events)
    finally:
        a.stop()
        b.stop()
