"""Steps, Parallel, Condition, Loop, Router and step options, through a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Client, ServerProcess, assert_log

FLOWS = Path(__file__).with_name("flows.py")


@pytest.fixture(scope="module")
def flows_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("flows") / "flows.db", "--workflows", str(FLOWS)).start()
    yield proc
    proc.stop()


async def run(server: ServerProcess, workflow: str, input: Any = None) -> tuple[list[dict], dict]:
    c = await Client.connect(server.url)
    run_id = await c.start(workflow, input)
    events = await c.until_terminal(run_id)
    assert_log(events)
    snapshot = (await c.request({"type": "poll", "run_id": run_id}))["run"]
    return events, snapshot


def steps_of(snapshot: dict) -> dict[str, tuple[str, Any]]:
    return {s["name"]: (s["status"], s["output"]) for s in snapshot["steps"]}


async def test_steps_group_names_by_path(flows_server: ServerProcess) -> None:
    events, snapshot = await run(flows_server, "review")
    assert [e["step"] for e in events if e["event"] == "step_started"] == ["review", "review/draft", "review/polish"]
    assert steps_of(snapshot) == {
        "review": ("completed", "A DRAFT"),
        "review/draft": ("completed", "a draft"),
        "review/polish": ("completed", "A DRAFT"),
    }
    assert snapshot["output"] == "A DRAFT"


async def test_parallel_branches_interleave_each_in_order(flows_server: ServerProcess) -> None:
    events, snapshot = await run(flows_server, "research")
    deltas = [(e["step"], e["data"]["delta"]) for e in events if e["event"] == "step_output"]
    assert [d for s, d in deltas if s == "gather/web"] == ["w1 ", "w2 ", "w3"]
    assert [d for s, d in deltas if s == "gather/papers"] == ["p1 ", "p2"]
    assert {s for s, _ in deltas[:2]} == {"gather/web", "gather/papers"}, "branches run at the same time"
    assert steps_of(snapshot)["gather"] == ("completed", {"web": "w1 w2 w3", "papers": "p1 p2"})
    assert snapshot["output"] == {"web": "w1 w2 w3", "papers": "p1 p2"}


async def test_condition_runs_or_skips(flows_server: ServerProcess) -> None:
    _, taken = await run(flows_server, "gate", {"text": "long enough"})
    assert taken["output"] == "LONG ENOUGH" and steps_of(taken)["only_if_long/shout"][0] == "completed"
    _, skipped = await run(flows_server, "gate", {"text": "tiny"})
    assert steps_of(skipped)["only_if_long/shout"][0] == "skipped" and skipped["output"] is None


async def test_loop_until_end_condition(flows_server: ServerProcess) -> None:
    events, snapshot = await run(flows_server, "refine")
    iterations = [e["data"]["iteration"] for e in events if e["event"] == "progress" and e["step"] == "refine"]
    assert iterations == [1, 2, 3]
    assert [
        e["data"]["output"] for e in events if e["event"] == "step_completed" and e["step"] == "refine/improve"
    ] == [
        1,
        2,
        3,
    ]
    assert snapshot["output"] == 3


async def test_router_picks_a_choice(flows_server: ServerProcess) -> None:
    _, snapshot = await run(flows_server, "route", {"kind": "image"})
    assert steps_of(snapshot)["pick/image"] == ("completed", "I")
    assert steps_of(snapshot)["pick/text"][0] == "skipped"
    _, failed = await run(flows_server, "route", {"kind": "video"})
    assert failed["status"] == "failed" and "video" in failed["error"]


async def test_retries_are_visible_in_events(flows_server: ServerProcess) -> None:
    events, snapshot = await run(flows_server, "flaky")
    failures = [e["data"] for e in events if e["event"] == "step_failed"]
    assert [(f["attempt"], f["will_retry"]) for f in failures] == [(1, True), (2, True)]
    assert "flaky failure 1" in failures[0]["error"]
    assert [e["data"]["attempt"] for e in events if e["event"] == "step_started"] == [1, 2, 3]
    assert snapshot["status"] == "completed" and snapshot["steps"][0]["attempts"] == 3


async def test_timeout_skip_on_failure_and_stop(flows_server: ServerProcess) -> None:
    events, timed_out = await run(flows_server, "timeouts")
    assert timed_out["status"] == "failed" and "timed out after 0.2 s" in timed_out["error"]
    assert events[-2]["event"] == "step_failed" and events[-2]["data"]["will_retry"] is False
    _, optional = await run(flows_server, "optional")
    assert optional["status"] == "completed" and optional["output"] == "one"
    assert steps_of(optional)["optional"][0] == "skipped"
    _, early = await run(flows_server, "early")
    assert early["status"] == "completed" and early["output"] == "x"
    assert steps_of(early)["never"][0] == "skipped"
