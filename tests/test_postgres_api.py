"""The Python API on PostgreSQL (`Workflow(..., db=PostgresDb(db_url=...))`): background
runs polled with the blocking `get_run`, `aget_run`, `arun` that waits, and runs shared
with a server node on the same database (each side sees, runs and takes over the other's)."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server import PostgresDb, RunOutput, RunStatus, Step, StepInput, Workflow
from server.examples import chain

from .harness import Client, ServerProcess, assert_log

TIMEOUT = 15.0


async def _research(step_input: StepInput) -> AsyncIterator[str]:
    await asyncio.sleep(0.2)
    yield "notes on "
    yield step_input.input


def _write(step_input: StepInput) -> str:
    return str(step_input.previous_step_content).upper()


def _broken(step_input: StepInput) -> None:
    raise ValueError("bad value 7")


async def until_finished(wf: Workflow, run_id: str) -> RunOutput:
    """Poll the blocking `get_run`, as a script would, until the run has ended."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        run = wf.get_run(run_id)
        assert run is not None, run_id
        if run.has_completed():
            return run
        assert time.monotonic() < deadline, f"run {run_id} is still {run.status}"
        await asyncio.sleep(0.05)


async def test_arun_background_then_get_run_until_completed(pg_url: str) -> None:
    db = PostgresDb(db_url=pg_url)
    wf = Workflow("api_content", [Step("research", _research), Step("write", _write)], db=db)
    try:
        assert wf.get_run("nothing-yet") is None  # a database runcast has not used yet
        async with asyncio.timeout(TIMEOUT):
            out = await wf.arun(input="ai", background=True)
        assert out.status in (RunStatus.PENDING, RunStatus.RUNNING) and not out.has_completed()
        polled = wf.get_run(out.run_id)
        assert polled is not None and polled.run_id == out.run_id and not polled.has_completed()
        done = await until_finished(wf, out.run_id)
        assert done.status == RunStatus.COMPLETED and done.content == "NOTES ON AI"
        assert [s["status"] for s in done.steps] == ["completed", "completed"] and done.last_seq == 8
        adone = await wf.aget_run(out.run_id)
        assert adone == done
        assert wf.get_run("unknown-run") is None and await wf.aget_run("unknown-run") is None

        async with asyncio.timeout(TIMEOUT):
            waited = await wf.arun(input="pg")
        assert waited.status == RunStatus.COMPLETED and waited.has_completed() and waited.content == "NOTES ON PG"
        broken = Workflow("api_broken", [Step("x", _broken)], db=db)
        async with asyncio.timeout(TIMEOUT):
            failed = await broken.arun(input=None)
        assert failed.status == RunStatus.FAILED and "bad value 7" in failed.error
    finally:
        await db.close()


async def test_a_server_node_and_the_python_api_share_runs(pg_url: str, tmp_path: Path) -> None:
    node = ServerProcess.node(pg_url, tmp_path, "a").start()
    db = PostgresDb(db_url=pg_url)
    api_only = Workflow("api_only", [Step("research", _research), Step("write", _write)], db=db)
    shared: Any = copy.copy(chain)  # the built-in "chain", which the node runs too
    shared.db = db
    try:
        c = await Client.connect(node.url)
        # The node's run, read from Python.
        counted = await c.start("count", {"n": 20, "delay": 0.01}, subscribe=False)
        seen = await until_finished(api_only, counted)
        assert seen.content == {"count": 20} and seen.workflow == "count"

        # Python's run (a workflow the node does not know), followed through the node.
        async with asyncio.timeout(TIMEOUT):
            mine = await api_only.arun(input="x", background=True)
        assert (await c.request({"type": "subscribe", "run_id": mine.run_id}))["type"] == "subscribed"
        events = await c.until_terminal(mine.run_id)
        assert_log(events)
        assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == "NOTES ON X"
        listed = (await c.request({"type": "list_runs"}))["runs"]
        assert [r["run_id"] for r in listed] == [mine.run_id, counted]

        # A run Python started and then left: the node takes it over and finishes it.
        async with asyncio.timeout(TIMEOUT):
            left = await shared.arun(input={"n": 3, "delay": 0.3}, background=True)
        deadline = time.monotonic() + TIMEOUT
        while (await shared.aget_run(left.run_id)).steps[0]["status"] != "completed":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await db.close()
        done = await until_finished(shared, left.run_id)
        assert done.status == RunStatus.COMPLETED and done.content == 3
        await c.request({"type": "subscribe", "run_id": left.run_id})
        log = await c.until_terminal(left.run_id)
        assert_log(log)
        resumed = [e["data"] for e in log if e["event"] == "run_resumed"]
        assert resumed == [{"reason": "takeover", "from_step": "s2"}], resumed
    finally:
        await db.close()
        node.stop()


async def test_two_postgres_dbs_in_one_process_are_two_nodes(pg_url: str) -> None:
    """Each PostgresDb is a node of its own: opening the second must not take the first's
    running run from it (it ran its step twice, resumed), nor closing one leave for both."""
    first, second = PostgresDb(db_url=pg_url), PostgresDb(db_url=pg_url)
    assert first.node_id != second.node_id
    a = Workflow("api_a", [Step("research", _research), Step("write", _write)], db=first)
    b = Workflow("api_b", [Step("research", _research), Step("write", _write)], db=second)
    try:
        async with asyncio.timeout(TIMEOUT):
            run_a = await a.arun(input="a", background=True)
            run_b = await b.arun(input="b", background=True)
        done_a, done_b = await until_finished(a, run_a.run_id), await until_finished(b, run_b.run_id)
        assert (done_a.content, done_b.content) == ("NOTES ON A", "NOTES ON B")
        assert [s["attempts"] for s in done_a.steps + done_b.steps] == [1, 1, 1, 1]
        assert done_a.last_seq == done_b.last_seq == 8  # no run_resumed
    finally:
        await first.close()
        await second.close()
