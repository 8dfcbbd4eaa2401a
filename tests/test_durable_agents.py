"""Agents that act, in a real server over /ws: an agent step killed (kill -9) in the middle
of a tool call goes on after the restart without making again the calls that had
completed (on PostgreSQL too); a coordinating team's leader delegates to two members at
once and answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .agent_flows import LEAD_ANSWER, PLANNER_ANSWER
from .harness import BACKENDS, Client, ServerProcess, assert_log

FLOWS = Path(__file__).with_name("agent_flows.py")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNCAST_AGENT_DIR", str(tmp_path))  # the child server's tools count their calls here
    return tmp_path


@pytest.fixture
def server(folder: Path) -> Iterator[ServerProcess]:
    with ServerProcess(folder / "agents.db", "--workflows", str(FLOWS)) as proc:
        yield proc


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def until(predicate: Any, timeout: float = 10) -> None:
    """Wait for something a tool does in the server process (no event tells of it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def tools_of(events: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    out = []
    for e in events:
        if e["event"].startswith("tool_call_"):
            d = e["data"]
            out.append((e["event"], d["call_id"], d.get("result", d.get("error", d.get("args")))))
    return out


@pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")
async def test_kill_9_in_a_tool_call_resumes_the_agent_without_repeating_completed_calls(
    new_server: Callable[..., ServerProcess], folder: Path
) -> None:
    server = new_server("--workflows", str(FLOWS)).start()
    try:
        await kill_9_in_a_tool_call(server, folder)
    finally:
        server.stop()


async def kill_9_in_a_tool_call(server: ServerProcess, folder: Path) -> None:
    c = await Client.connect(server.url)
    run_id = await start_until_slow(c, folder)

    server.kill()
    server.restart()

    d = await Client.connect(server.url)
    await d.request({"type": "subscribe", "run_id": run_id, "after": 0})
    assert_went_on(await d.until_terminal(run_id), folder, "restart")
    await c.close()
    await d.close()


async def start_until_slow(c: Client, folder: Path) -> str:
    """Start the durable agent and wait until its second tool call is blocked in the tool."""
    run_id = await c.start("durable_agent", "plan")
    await c.wait(lambda m: m.get("event") == "tool_call_started" and m["data"]["tool"] == "slow")
    await until(lambda: len(lines(folder / "slow.calls")) == 1)
    return run_id


def assert_went_on(events: list[dict[str, Any]], folder: Path, reason: str) -> None:
    """The durable agent's run, cut off in its slow call, went on from its checkpoint."""
    assert_log(events)
    assert lines(folder / "note.calls") == ["tides"]  # completed before the crash: not made again
    assert lines(folder / "slow.calls") == ["moons", "moons"]  # cut off: made again
    assert tools_of(events) == [
        ("tool_call_started", "call_1_1", {"topic": "tides"}),
        ("tool_call_completed", "call_1_1", "noted tides"),
        ("tool_call_started", "call_2_1", {"topic": "moons"}),
        ("tool_call_failed", "call_2_1", "interrupted"),
        ("tool_call_started", "call_2_1~2", {"topic": "moons"}),
        ("tool_call_completed", "call_2_1~2", "looked up moons"),
    ]
    again = next(e for e in events if e["data"].get("call_id") == "call_2_1~2")
    assert again["data"]["retry_of"] == "call_2_1" and again["data"]["round"] == 2
    assert [e["data"]["reason"] for e in events if e["event"] == "run_resumed"] == [reason]
    assert events[-1]["event"] == "run_completed"
    assert events[-1]["data"]["output"] == PLANNER_ANSWER  # the whole answer, as if never cut off
    last_try = max(i for i, e in enumerate(events) if e["event"] == "step_started")
    deltas = [e["data"]["delta"] for e in events[last_try:] if e["event"] == "step_output"]
    assert deltas[0] == "Noting first. Now the slow part."  # the kept rounds' text, streamed again at once
    assert "".join(deltas) == PLANNER_ANSWER  # a step run again streams its text from the start


async def test_a_takeover_in_a_tool_call_goes_on_from_the_agent_s_checkpoint(pg_url: str, folder: Path) -> None:
    nodes = [ServerProcess.node(pg_url, folder, n, "--workflows", str(FLOWS), "--takeover-seconds", "2") for n in "ab"]
    try:
        for node in nodes:
            node.start()
        c = await Client.connect(nodes[0].url)
        run_id = await start_until_slow(c, folder)
        owner_pid = int(lines(folder / "slow.pids")[0])
        [owner] = [n for n in nodes if n.proc is not None and n.proc.pid == owner_pid]
        [other] = [n for n in nodes if n is not owner]

        owner.kill()

        d = await Client.connect(other.url)
        await d.request({"type": "subscribe", "run_id": run_id, "after": 0})
        assert_went_on(await d.until_terminal(run_id, timeout=40), folder, "takeover")
        await c.close()
        await d.close()
    finally:
        for node in nodes:
            node.stop()


async def test_a_coordinating_team_delegates_to_two_members_at_once_and_answers(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("desk", "Tidal power")
    events = await c.until_terminal(run_id)

    assert_log(events)
    leader = [e for e in events if e["event"].startswith("tool_call_") and e["data"]["agent"] == "desk"]
    assert [(e["event"], e["data"]["tool"]) for e in leader[:2]] == [
        ("tool_call_started", "delegate_to_researcher"),
        ("tool_call_started", "delegate_to_writer"),
    ]  # one round, both at once
    assert {e["data"]["round"] for e in leader} == {1}
    ends = {e["data"]["tool"]: e for e in leader[2:]}
    assert sorted(ends) == ["delegate_to_researcher", "delegate_to_writer"]
    assert all(e["event"] == "tool_call_completed" for e in ends.values())
    for name in ("researcher", "writer"):
        ended = ends[f"delegate_to_{name}"]
        spoken = [e for e in events if e["event"] == "step_output" and e["data"].get("agent") == name]
        assert spoken and {e["data"]["parent_call_id"] for e in spoken} == {ended["data"]["call_id"]}
        assert "".join(e["data"]["delta"] for e in spoken) == ended["data"]["result"]
        assert all(e["seq"] < ended["seq"] for e in spoken)
    own = "".join(e["data"]["delta"] for e in events if e["event"] == "step_output" and "agent" not in e["data"])
    assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == own
    assert "Tool delegate_to_researcher gave" in own and "Tool delegate_to_writer gave" in own
    await c.close()


async def test_kill_9_in_a_member_s_tool_call_repeats_neither_the_member_that_had_answered_nor_its_calls(
    server: ServerProcess, folder: Path
) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("durable_desk", "plan")
    await until(lambda: len(lines(folder / "slow.calls")) == 1)  # the member "steady" is in its slow tool
    await c.wait(lambda m: m.get("event") == "tool_call_completed" and m["data"]["tool"] == "delegate_to_quick")

    server.kill()
    server.restart()

    d = await Client.connect(server.url)
    await d.request({"type": "subscribe", "run_id": run_id, "after": 0})
    events = await d.until_terminal(run_id)
    assert_log(events)
    assert lines(folder / "note.calls") == ["tides"]  # "quick" had answered: not asked again
    assert lines(folder / "slow.calls") == ["moons", "moons"]
    calls = [
        (e["event"], e["data"]["agent"], e["data"]["call_id"], e["data"].get("parent_call_id"))
        for e in events
        if e["event"].startswith("tool_call_")
    ]
    assert calls[:2] == [
        ("tool_call_started", "lead", "call_1_1", None),
        ("tool_call_started", "lead", "call_1_2", None),
    ]
    assert ("tool_call_completed", "lead", "call_1_1", None) in calls  # before the crash, once
    assert [c for c in calls if c[1] == "lead"][-3:] == [
        ("tool_call_failed", "lead", "call_1_2", None),  # interrupted
        ("tool_call_started", "lead", "call_1_2~2", None),
        ("tool_call_completed", "lead", "call_1_2~2", None),
    ]
    steady = [c for c in calls if c[1] == "steady"]
    assert steady == [
        ("tool_call_started", "steady", "call_1_1", "call_1_2"),
        ("tool_call_failed", "steady", "call_1_1", "call_1_2"),  # interrupted, under the task it began in
        ("tool_call_started", "steady", "call_1_1~2", "call_1_2~2"),
        ("tool_call_completed", "steady", "call_1_1~2", "call_1_2~2"),
    ]
    failed = [e["data"]["error"] for e in events if e["event"] == "tool_call_failed"]
    assert failed == ["interrupted", "interrupted"]
    assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == LEAD_ANSWER
    await c.close()
    await d.close()
