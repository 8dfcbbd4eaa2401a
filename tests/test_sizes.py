"""Sizes, both ways: what the server sends fits a client with the websockets library's
defaults (1 MiB frames); events over --max-event-bytes fail their step, naming the size
and the flag; deep JSON and made-up cursors are refused plainly."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from pathlib import Path

import pytest
import websockets

from .conftest import server_on
from .harness import BACKENDS, Client, ServerProcess, assert_log, http

FLOWS = Path(__file__).with_name("hostile_flows.py")
MIB = 1024 * 1024

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def server(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    proc = server_on(backend, request, tmp_path_factory.mktemp("sizes"), "--workflows", str(FLOWS)).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("workflow", ["big_thread", "big_async"])
@pytest.mark.parametrize("where", ["output", "delta", "progress"])
async def test_an_event_over_the_limit_fails_its_step_naming_size_and_flag(
    server: ServerProcess, workflow: str, where: str
) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start(workflow, {"bytes": 300_000, "where": where})
    events = await c.until_terminal(run_id)
    assert_log(events)
    assert events[-1]["event"] == "run_failed"
    error = events[-1]["data"]["error"]
    assert "--max-event-bytes" in error and "262,144" in error and " bytes of JSON" in error, error
    assert all(len(json.dumps(e)) < 270_000 for e in events)
    fine = await c.start(workflow, {"bytes": 200_000, "where": where})
    assert (await c.until_terminal(fine))[-1]["event"] == "run_completed"


async def test_a_client_with_default_limits_follows_polls_and_lists_everything(server: ServerProcess) -> None:
    big_input = {"bytes": 200_000, "pad": "p" * 200_000}
    async with websockets.connect(server.url) as ws:  # the library's defaults: max_size 1 MiB
        assert json.loads(await ws.recv())["type"] == "welcome"
        run_ids = []
        for i in range(4):
            await ws.send(json.dumps({"type": "start", "id": i, "workflow": "big_steps", "input": big_input}))
            seen: list[dict] = []
            while True:
                msg = json.loads(await ws.recv())
                if msg["type"] == "started":
                    run_ids.append(msg["run"]["run_id"])
                elif msg["type"] == "event":
                    seen.append(msg)
                    if msg["event"] == "run_completed":
                        break
            assert_log(seen)
            assert len(seen[-1]["data"]["output"]) == 200_000
        await ws.send(json.dumps({"type": "poll", "id": "p", "run_id": run_ids[0]}))
        raw = await ws.recv()
        assert len(raw.encode()) < MIB
        run = json.loads(raw)["run"]
        assert run["status"] == "completed" and run["truncated"], run.keys()
        assert any(isinstance(s["output"], dict) and s["output"]["truncated"] for s in run["steps"])
        await ws.send(json.dumps({"type": "subscribe", "id": "b", "run_id": run_ids[0], "batch": True}))
        replayed: list[dict] = []
        while not replayed or replayed[-1]["event"] != "run_completed":
            raw = await ws.recv()
            assert len(raw.encode()) < MIB
            msg = json.loads(raw)
            replayed.extend(msg.get("events", []))
        assert_log(replayed)
        listed: list[str] = []
        cursor = None
        pages = 0
        while True:
            await ws.send(json.dumps({"type": "list_runs", "id": "l", "workflow": "big_steps", "before": cursor}))
            raw = await ws.recv()
            assert len(raw.encode()) < MIB
            page = json.loads(raw)
            pages += 1
            listed += [r["run_id"] for r in page["runs"]]
            # Each run is ~1.4 MB: a list shows its long values by their size alone.
            assert all(r["output"]["truncated"] and "output" in r["truncated"] for r in page["runs"]), page
            cursor = page["next"]
            if cursor is None:
                break
        assert sorted(listed) == sorted(run_ids) and pages == 1
    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/api/runs/{run_ids[0]}")
    assert status == 200 and body["truncated"]
    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/api/runs?workflow=big_steps&limit=500")
    assert status == 200 and body["next"] is None and len(json.dumps(body)) < MIB
    assert all(r["output"]["full"] == f"/api/runs/{r['run_id']}/events" for r in body["runs"])
    after, events = 0, []
    while True:
        status, page = await asyncio.to_thread(
            http, "GET", f"{server.http_url}/api/runs/{run_ids[0]}/events?after={after}"
        )
        assert status == 200 and len(json.dumps(page)) < MIB
        if not page["events"]:
            break
        events += page["events"]
        after = page["events"][-1]["seq"]
    assert_log(events)


async def test_deep_json_is_invalid_input(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    reply = await c.request({"type": "start", "workflow": "echo", "input": deep})
    assert reply["type"] == "error" and reply["code"] == "invalid_input" and "128" in reply["message"], reply
    await c.send('{"type":"start","workflow":"echo","input":' + "[" * 5000 + "]" * 5000 + "}")
    reply = await c.wait(lambda m: m.get("type") == "error")
    assert reply["code"] == "invalid_input", reply
    status, body = await asyncio.to_thread(
        http, "POST", f"{server.http_url}/api/runs", {"workflow": "echo", "input": deep}
    )
    assert status == 422 and body["error"]["code"] == "invalid_input"
    fine: object = 1
    for _ in range(100):
        fine = [fine]
    assert (await c.until_terminal(await c.start("echo", fine)))[-1]["data"]["output"] == fine


@pytest.mark.parametrize("cursor", ["9" * 5000, "99999999999999999999", "-1", "abc", "١٢٣", "1e3", " 1", ""])
async def test_a_cursor_the_server_did_not_give_is_bad_request(server: ServerProcess, cursor: str) -> None:
    c = await Client.connect(server.url)
    reply = await c.request({"type": "list_runs", "before": cursor})
    if cursor == "":
        assert reply["type"] in ("runs", "error"), reply
    else:
        assert reply["type"] == "error" and reply["code"] == "bad_request", reply
    query = urllib.parse.quote(cursor)
    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/api/runs?before={query}")
    assert status in (200, 400) and (status == 200) == (cursor == ""), (status, body)
    for bad in ("9" * 5000, "99999999999999999999"):
        status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/api/runs/x/events?after={bad}")
        assert status == 400 and body["error"]["code"] == "bad_request"
    assert (await c.request({"type": "ping"}))["type"] == "pong"
