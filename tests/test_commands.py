"""One door: every operation answers the same over /ws and over HTTP, since both call the
same command function (server/commands.py). Each case asks a real server the same thing
both ways and compares the answers, errors included."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Client, ServerProcess, http

FLOWS = Path(__file__).with_name("flows.py")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "doors.db", "--workflows", str(FLOWS)) as proc:
        yield proc


def _error(reply: dict[str, Any]) -> tuple[str, str]:
    """(code, message) of a WebSocket error or of an HTTP error body."""
    body = reply.get("error", reply)
    return body["code"], body["message"]


async def _http(server: ServerProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return await asyncio.to_thread(http, method, server.http_url + path, body)


async def test_every_operation_answers_the_same_over_websocket_and_http(served: ServerProcess) -> None:
    c = await Client.connect(served.url)

    # start: the same snapshot, the same `existing`
    ws = await c.request({"type": "start", "workflow": "echo", "input": {"a": 1}, "run_id": "one", "subscribe": False})
    status, body = await _http(served, "POST", "/api/runs", {"workflow": "echo", "input": {"a": 1}, "run_id": "one"})
    assert status == 202 and ws["existing"] is False and body["existing"] is True
    same = ("run_id", "workflow", "input", "created_at")
    assert {k: body[k] for k in same} == {k: ws["run"][k] for k in same}
    assert set(body) - {"existing"} == set(ws["run"])
    await c.request({"type": "subscribe", "run_id": "one"})
    await c.until_terminal("one")

    # poll / GET a run
    ws = await c.request({"type": "poll", "run_id": "one"})
    status, body = await _http(served, "GET", "/api/runs/one")
    assert status == 200 and body == ws["run"]

    # list_workflows / GET /api/workflows
    ws = await c.request({"type": "list_workflows"})
    status, body = await _http(served, "GET", "/api/workflows")
    assert status == 200 and body["workflows"] == ws["workflows"]

    # list_runs / GET /api/runs
    ws = await c.request({"type": "list_runs", "workflow": "echo", "limit": 5})
    status, body = await _http(served, "GET", "/api/runs?workflow=echo&limit=5")
    assert status == 200 and body == {"runs": ws["runs"], "next": ws["next"]}

    # respond / POST .../respond, and cancel / POST .../cancel
    for run_id in ("ask-ws", "ask-http"):
        await c.request({"type": "start", "workflow": "approve", "input": "x", "run_id": run_id, "subscribe": True})
        await c.wait(lambda m, r=run_id: m.get("run_id") == r and m.get("event") == "input_requested")
    asked = {}
    for run_id in ("ask-ws", "ask-http"):
        asked[run_id] = (await c.request({"type": "poll", "run_id": run_id}))["run"]["waiting_for"][0]["request_id"]
    bad = {"value": {"ok": "yes"}}
    ws = await c.request({"type": "respond", "run_id": "ask-ws", "request_id": asked["ask-ws"], **bad})
    status, body = await _http(served, "POST", "/api/runs/ask-http/respond", {"request_id": asked["ask-http"], **bad})
    assert status == 422 and _error(ws) == _error(body) and _error(ws)[0] == "invalid_input"
    ws = await c.request({"type": "cancel", "run_id": "ask-ws"})
    status, body = await _http(served, "POST", "/api/runs/ask-http/cancel")
    assert status == 202 and ws["run"]["status"] == body["status"] == "cancelled"
    ws = await c.request({"type": "cancel", "run_id": "ask-ws"})
    status, body = await _http(served, "POST", "/api/runs/ask-http/cancel")
    assert status == 409 and _error(ws)[0] == _error(body)[0] == "conflict"

    # the same errors, with the same messages
    cases = [
        ({"type": "poll", "run_id": "nope"}, ("GET", "/api/runs/nope", None), 404),
        ({"type": "cancel", "run_id": "nope"}, ("POST", "/api/runs/nope/cancel", None), 404),
        (
            {"type": "respond", "run_id": "nope", "request_id": "r", "value": 1},
            ("POST", "/api/runs/nope/respond", {"request_id": "r", "value": 1}),
            404,
        ),
        ({"type": "start", "workflow": "nope"}, ("POST", "/api/runs", {"workflow": "nope"}), 404),
        (
            {"type": "start", "workflow": "count", "input": {"n": "x"}},
            ("POST", "/api/runs", {"workflow": "count", "input": {"n": "x"}}),
            422,
        ),
        (
            {"type": "start", "workflow": "echo", "input": 2, "run_id": "one"},
            ("POST", "/api/runs", {"workflow": "echo", "input": 2, "run_id": "one"}),
            409,
        ),
        (
            {"type": "start", "workflow": "echo", "run_id": "bad id!"},
            ("POST", "/api/runs", {"workflow": "echo", "run_id": "bad id!"}),
            400,
        ),
        ({"type": "start"}, ("POST", "/api/runs", {}), 400),
        ({"type": "list_runs", "before": "x"}, ("GET", "/api/runs?before=x", None), 400),
        ({"type": "list_runs", "status": "odd"}, ("GET", "/api/runs?status=odd", None), 400),
    ]
    for message, (method, path, body_in), code in cases:
        ws = await c.request(message)
        status, body = await _http(served, method, path, body_in)
        assert ws["type"] == "error" and status == code, (message, ws, status, body)
        assert _error(ws) == _error(body), (message, ws, body)


async def test_the_python_api_answers_as_the_other_doors_do(served: ServerProcess, tmp_path: Path) -> None:
    """`arun` and `arespond` call the same command functions: the same checks, the same errors."""
    from server import RuncastError, SqliteDb, Workflow
    from server.examples import echo

    wf = Workflow("echo", echo.steps, db=SqliteDb(db_file=str(tmp_path / "python.db")))
    c = await Client.connect(served.url)
    big = "x" * (256 * 1024 + 1)  # over the default --max-input-bytes, on both sides
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"type": "start", "workflow": "echo", "input": big}, lambda: wf.arun(big, background=True)),
        (
            {"type": "respond", "run_id": "nope", "request_id": "r", "value": 1},
            lambda: wf.arespond("nope", "r", 1),
        ),
    ]
    done = await wf.arun({"a": 1}, run_id="same")
    await c.request({"type": "start", "workflow": "echo", "input": {"a": 1}, "run_id": "same"})
    cases.append(
        ({"type": "respond", "run_id": "same", "request_id": "r", "value": 1}, lambda: wf.arespond("same", "r", 1))
    )
    for message, call in cases:
        over_ws = _error(await c.request(message))
        with pytest.raises(RuncastError) as raised:
            await call()
        assert (str(raised.value.code), str(raised.value)) == over_ws, message["type"]
    assert done.status == "completed"
    assert wf.db is not None
    await wf.db.close()
