"""Holes found by attack, each reproduced against a real server: the same run id started
through two cluster nodes at once, text that cannot be encoded, clients that pin memory or
the event loop, tools that hang."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from .attack_flows import record_file
from .harness import BACKENDS, Client, ServerProcess

FLOWS = Path(__file__).with_name("attack_flows.py")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNCAST_ATTACK_DIR", str(tmp_path))  # the child servers' steps count here
    return tmp_path


def executions(tag: str) -> int:
    path = record_file(tag)
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


# ---- 1. one run id, two nodes, one run --------------------------------------------------


async def test_the_same_run_id_started_through_two_nodes_at_once_runs_once(pg_url: str, folder: Path) -> None:
    nodes = [ServerProcess.node(pg_url, folder, n, "--workflows", str(FLOWS)).start() for n in "ab"]
    try:
        a, b = [await Client.connect(n.url) for n in nodes]
        rounds = 40
        for i in range(rounds):
            start = {"type": "start", "workflow": "once", "run_id": f"same-{i}", "input": {"tag": f"same-{i}"}}
            ra, rb = await asyncio.gather(a.request({**start, "subscribe": False}), b.request(start))
            assert ra["type"] == rb["type"] == "started", (ra, rb)
            assert sorted([ra["existing"], rb["existing"]]) == [False, True], (ra, rb)
        for i in range(rounds):
            snapshot = await b.request({"type": "poll", "run_id": f"same-{i}"})
            if snapshot["run"]["status"] != "completed":
                await b.until_terminal(f"same-{i}")
        await asyncio.sleep(0.5)  # a second execution, had there been one, has had time to record
        assert [executions(f"same-{i}") for i in range(rounds)] == [1] * rounds

        # Different inputs under one id: one start wins, the other is told `conflict`, and
        # the stored input is the winner's.
        for i in range(20):
            run_id = f"diff-{i}"
            start = {"type": "start", "workflow": "once", "run_id": run_id, "subscribe": False}
            ra, rb = await asyncio.gather(
                a.request({**start, "input": {"tag": f"{run_id}-a"}}),
                b.request({**start, "input": {"tag": f"{run_id}-b"}}),
            )
            replies = {"a": ra, "b": rb}
            won = [k for k, r in replies.items() if r["type"] == "started"]
            assert len(won) == 1, replies
            lost = "b" if won == ["a"] else "a"
            assert replies[won[0]]["existing"] is False and replies[lost]["code"] == "conflict", replies
            poll = await a.request({"type": "poll", "run_id": run_id})
            assert poll["run"]["input"] == {"tag": f"{run_id}-{won[0]}"}
            await _wait_for(lambda r=run_id, w=won[0]: executions(f"{r}-{w}") == 1)
            assert executions(f"{run_id}-{lost}") == 0
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")
async def test_an_idempotent_start_compares_inputs_as_json(
    new_server: Callable[..., ServerProcess], folder: Path
) -> None:
    server = new_server("--workflows", str(FLOWS)).start()
    try:
        c = await Client.connect(server.url)
        first = await c.request({"type": "start", "workflow": "echo", "run_id": "flag", "input": {"flag": True}})
        assert first["existing"] is False
        for other in ({"flag": 1}, {"flag": 1.0}, {"flag": "true"}, [True]):
            again = await c.request({"type": "start", "workflow": "echo", "run_id": "flag", "input": other})
            assert again["type"] == "error" and again["code"] == "conflict", (other, again)
        same = await c.request({"type": "start", "workflow": "echo", "run_id": "flag", "input": {"flag": True}})
        assert same["type"] == "started" and same["existing"] is True
        keys = {"type": "start", "workflow": "echo", "run_id": "keys"}
        await c.request({**keys, "input": {"a": 1, "b": 2}})
        assert (await c.request({**keys, "input": {"b": 2, "a": 1}}))["existing"] is True
    finally:
        server.stop()
