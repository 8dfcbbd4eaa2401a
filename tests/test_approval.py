"""examples/approval.py served by a real server and answered over the wire (`respond`), once
straight through and once across a kill -9 of the server while the run waits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from .harness import ROOT, Client, ServerProcess, assert_log, events_over_http

EXAMPLE = str(ROOT / "examples" / "approval.py")
TOPIC = {"topic": "background workflows"}
DRAFT = "Background workflows: start the work, close the tab, and come back to a finished result."


@pytest.fixture
def approval_server(tmp_path: Path) -> ServerProcess:
    return ServerProcess(tmp_path / "approval.db", "--workflows", EXAMPLE)


async def wait_for_question(client: Client, run_id: str) -> dict[str, Any]:
    event = await client.wait(lambda m: m.get("type") == "event" and m.get("event") == "input_requested")
    assert event["run_id"] == run_id and event["step"] == "review"
    return dict(event["data"])


async def test_approved_draft_is_published(approval_server: ServerProcess) -> None:
    server = approval_server.start()
    try:
        client = await Client.connect(server.url)
        run_id = await client.start("approval", TOPIC)
        asked = await wait_for_question(client, run_id)
        assert asked["prompt"] == "Publish this draft?"
        assert asked["schema"]["properties"]["approve"]["type"] == "boolean"
        waiting = (await client.request({"type": "poll", "run_id": run_id}))["run"]
        assert waiting["status"] == "waiting"
        assert [w["request_id"] for w in waiting["waiting_for"]] == [asked["request_id"]]

        # An answer that does not fit the schema is refused, and the run keeps waiting.
        wrong = await client.request(
            {"type": "respond", "run_id": run_id, "request_id": asked["request_id"], "value": {"approve": "yes"}}
        )
        assert wrong["type"] == "error" and wrong["code"] == "invalid_input", wrong
        answer = {"type": "respond", "run_id": run_id, "request_id": asked["request_id"], "value": {"approve": True}}
        assert (await client.request(answer))["type"] == "responded"
        again = await client.request(answer)
        assert again["type"] == "error" and again["code"] == "conflict", again

        events = await client.until_terminal(run_id)
        assert_log(events)
        assert events[-1]["event"] == "run_completed"
        assert events[-1]["data"]["output"] == {"published": DRAFT}
        ran = [e["step"] for e in events if e["event"] == "step_completed"]
        assert ran == ["draft", "review", "decide/publish", "decide"]
    finally:
        server.stop()


async def test_the_question_survives_a_kill_and_a_note_revises(approval_server: ServerProcess) -> None:
    server = approval_server.start()
    try:
        client = await Client.connect(server.url)
        run_id = await client.start("approval", TOPIC)
        asked = await wait_for_question(client, run_id)
        server.kill()
        server.restart()

        client = await Client.connect(server.url)
        run = (await client.request({"type": "poll", "run_id": run_id}))["run"]
        assert run["status"] == "waiting", run
        assert [w["request_id"] for w in run["waiting_for"]] == [asked["request_id"]]
        value = {"approve": False, "note": "shorter"}
        reply = await client.request(
            {"type": "respond", "run_id": run_id, "request_id": asked["request_id"], "value": value}
        )
        assert reply["type"] == "responded", reply
        await client.request({"type": "subscribe", "run_id": run_id, "after": run["last_seq"]})
        await client.until_terminal(run_id)

        events = await asyncio.to_thread(events_over_http, server.http_url, run_id)
        assert_log(events)
        assert events[-1]["data"]["output"] == {"revised": f"{DRAFT} (revised: shorter)"}
        # The draft was written once, before the kill; the question was asked once and answered once.
        assert [e["step"] for e in events if e["event"] == "step_started"].count("draft") == 1
        assert sum(e["event"] == "input_received" for e in events) == 1
        asks = {e["data"]["request_id"] for e in events if e["event"] == "input_requested"}
        assert asks == {asked["request_id"]}
    finally:
        server.stop()
