"""Tools with side effects (issue 25): a server killed (kill -9) in the middle of a payment
tool's call, for each `on_unknown` policy; what the tool saw (its idempotency keys, how
many calls) and what the run did."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Client, ServerProcess, assert_log

FLOWS = Path(__file__).with_name("side_effect_flows.py")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNCAST_AGENT_DIR", str(tmp_path))  # the server's tool writes its keys here
    return tmp_path


@pytest.fixture
def server(folder: Path) -> Iterator[ServerProcess]:
    with ServerProcess(folder / "pay.db", "--workflows", str(FLOWS)) as proc:
        yield proc


def keys(folder: Path, policy: str) -> list[str]:
    path = folder / f"pay-{policy}.keys"
    return path.read_text().split() if path.exists() else []


async def killed_in_the_payment(server: ServerProcess, folder: Path, policy: str) -> tuple[str, Client]:
    c = await Client.connect(server.url)
    run_id = await c.start(f"pay_{policy}", "bill the customer")
    deadline = time.monotonic() + 10
    while not keys(folder, policy):  # the tool is in the call
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await c.close()
    server.kill()
    server.restart()
    d = await Client.connect(server.url)
    await d.request({"type": "subscribe", "run_id": run_id, "after": 0})
    return run_id, d


def interrupted(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e["data"] for e in events if e["event"] == "tool_call_failed")


async def test_retry_makes_the_call_again_with_the_same_key(server: ServerProcess, folder: Path) -> None:
    run_id, d = await killed_in_the_payment(server, folder, "retry")
    events = await d.until_terminal(run_id)
    assert_log(events)
    assert interrupted(events) == {**interrupted(events), "error": "interrupted", "outcome": "unknown"}
    first, again = keys(folder, "retry")
    assert first == again and len(first) == 32  # made twice, under one key: the API dedupes it
    assert events[-1]["data"]["output"] == "Paying. Then: charged 30."


async def test_fail_never_makes_it_again_and_tells_the_model(server: ServerProcess, folder: Path) -> None:
    run_id, d = await killed_in_the_payment(server, folder, "fail")
    events = await d.until_terminal(run_id)
    assert len(keys(folder, "fail")) == 1  # never made again
    assert interrupted(events)["outcome"] == "unknown"
    assert [e["data"]["call_id"] for e in events if e["event"] == "tool_call_started"] == ["call_1_1"]
    output = events[-1]["data"]["output"]
    assert events[-1]["event"] == "run_completed" and "may or may not have happened" in output


async def test_ask_waits_for_a_person_and_makes_it_again_only_if_told_so(server: ServerProcess, folder: Path) -> None:
    run_id, d = await killed_in_the_payment(server, folder, "ask")
    asked = await d.wait(lambda m: m.get("event") == "input_requested", timeout=15)
    assert "pay(" in asked["data"]["prompt"] and '"amount": 30' in asked["data"]["prompt"]
    assert asked["data"]["schema"] == {"type": "boolean"}
    assert len(keys(folder, "ask")) == 1  # nothing made while it waits
    await d.request({"type": "respond", "run_id": run_id, "request_id": asked["data"]["request_id"], "value": False})
    events = await d.until_terminal(run_id)
    first, again = keys(folder, "ask")
    assert first == again  # "it did not happen": made again, under the same key
    assert events[-1]["data"]["output"] == "Paying. Then: charged 30."
