"""The (1.1) additions of PROTOCOL.md, checked as an outside client would: real servers, real
sockets, nothing but the wire. Each test names the contract's words it holds the server to;
where the contract leaves room, the reading is the one in docs/protocol.md."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import ROOT, Client, ServerProcess, assert_log, http

FLOWS = str(ROOT / "tests" / "flows.py")
CONTRACT_FLOWS = str(ROOT / "tests" / "contract_flows.py")
TOKEN = "s3cret-token"
YES_NO = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
SNAPSHOT_FIELDS = {
    "run_id", "workflow", "status", "input", "output", "error",
    "created_at", "started_at", "finished_at", "last_seq", "waiting_for",
}  # fmt: skip
REQUEST_FIELDS = {"request_id", "prompt", "schema", "step"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One open server for the module: the built-ins, the test flows that ask, and an agent
    whose tool calls go wrong."""
    folder = tmp_path_factory.mktemp("contract")
    proc = ServerProcess(folder / "runcast.db", "--workflows", FLOWS, "--workflows", CONTRACT_FLOWS).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a token, and 2 starts per second per connection."""
    folder = tmp_path_factory.mktemp("locked")
    proc = ServerProcess(
        folder / "runcast.db", "--workflows", FLOWS, "--token", TOKEN, "--starts-per-second", "2"
    ).start()
    yield proc
    proc.stop()


# ---- helpers ---------------------------------------------------------------------------


async def requested(c: Client, run_id: str, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
    """Read until the run has had `count` input_requested events; all of them so far."""
    deadline = time.monotonic() + timeout

    def asks() -> list[dict[str, Any]]:
        return [e for e in c.events(run_id) if e["event"] == "input_requested"]

    while len(asks()) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"run {run_id} asked {len(asks())} times, not {count}; last: {c.inbox[-3:]}"
        await c.next(left)
    return asks()


async def poll(c: Client, run_id: str) -> dict[str, Any]:
    reply = await c.request({"type": "poll", "run_id": run_id})
    assert reply["type"] == "run", reply
    return dict(reply["run"])


async def respond(c: Client, run_id: str, request_id: Any, value: Any, mid: Any = "answer") -> dict[str, Any]:
    """A `respond` with the given message id; its reply (or error), which must echo the id."""
    await c.send({"type": "respond", "id": mid, "run_id": run_id, "request_id": request_id, "value": value})
    return await c.wait(lambda m: m.get("id") == mid and m.get("type") in ("responded", "error"))


def raw_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """A POST of exact bytes (http() sends JSON of a value); blocking."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def assert_error(reply: dict[str, Any], code: str, mid: Any) -> None:
    """`{"type":"error","code":...,"message":...,"id":...}` with the id of the message."""
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert isinstance(reply["message"], str) and reply["message"], reply
    assert reply["id"] == mid, reply


def assert_http_error(status: int, body: Any, want_status: int, code: str) -> None:
    """The HTTP error shape: exactly `{"error": {"code", "message"}}`."""
    assert status == want_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


def assert_request_entry(entry: dict[str, Any], request_id: str, prompt: str, schema: Any, step: str) -> None:
    assert set(entry) >= REQUEST_FIELDS, entry
    assert (entry["request_id"], entry["prompt"], entry["schema"], entry["step"]) == (request_id, prompt, schema, step)


# ---- respond, waiting, waiting_for, input_requested / input_received ------------------------


async def test_a_run_that_asks_is_waiting_with_its_request_in_waiting_for(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("approve", "AI trends")
    [ev] = await requested(c, run_id)
    assert ev["step"] == "approve"
    assert {"request_id", "prompt", "schema"} <= set(ev["data"]), ev
    rid = ev["data"]["request_id"]
    assert isinstance(rid, str) and rid
    assert ev["data"]["prompt"] == "Publish this?" and ev["data"]["schema"] == YES_NO
    run = await poll(c, run_id)
    assert set(run) >= SNAPSHOT_FIELDS, run
    assert run["status"] == "waiting" and run["steps"][0]["status"] == "waiting"
    assert run["last_seq"] == ev["seq"]
    [entry] = run["waiting_for"]
    assert_request_entry(entry, rid, "Publish this?", YES_NO, "approve")
    # `waiting` is a status like the others for list_runs, on both transports.
    listed = await c.request({"type": "list_runs", "status": "waiting", "workflow": "approve"})
    assert run_id in [r["run_id"] for r in listed["runs"]], listed
    status, page = await asyncio.to_thread(http, "GET", server.http_url + "/api/runs?status=waiting&workflow=approve")
    assert status == 200 and run_id in [r["run_id"] for r in page["runs"]], page
    assert (await c.request({"type": "cancel", "run_id": run_id}))["type"] == "cancel_requested"


async def test_respond_goes_on_with_the_value_and_a_wrong_one_keeps_the_run_waiting(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("approve", "AI trends")
    [ev] = await requested(c, run_id)
    rid = ev["data"]["request_id"]
    before = await poll(c, run_id)

    assert_error(await respond(c, run_id, rid, {"ok": "yes"}, mid="w1"), "invalid_input", "w1")
    assert_error(await respond(c, run_id, rid, None, mid=11), "invalid_input", 11)
    assert_error(await respond(c, run_id, rid, [], mid="w2"), "invalid_input", "w2")
    still = await poll(c, run_id)
    assert still["status"] == "waiting" and still["waiting_for"] == before["waiting_for"]
    assert still["last_seq"] == before["last_seq"]  # nothing was stored for the refused values

    assert_error(await respond(c, run_id, "never-asked", {"ok": True}, mid="w3"), "conflict", "w3")
    # A request it does not wait for has no schema to check against: conflict, whatever the value.
    assert_error(await respond(c, run_id, "never-asked", "not an object", mid="w5"), "conflict", "w5")
    other = await c.start("approve", "another run")
    [theirs] = await requested(c, other)
    mixed = await respond(c, run_id, theirs["data"]["request_id"], {"ok": True}, mid="w6")
    assert_error(mixed, "conflict", "w6")  # another run's request is not this run's
    huge = {"ok": True, "pad": "x" * 300_000}  # over --max-input-bytes (256 KiB)
    assert_error(await respond(c, run_id, rid, huge, mid="w7"), "invalid_input", "w7")
    assert (await poll(c, run_id))["last_seq"] == before["last_seq"]
    assert (await poll(c, other))["status"] == "waiting"
    assert (await c.request({"type": "cancel", "run_id": other}))["type"] == "cancel_requested"
    assert (await poll(c, run_id))["status"] == "waiting"

    answered = await respond(c, run_id, rid, {"ok": True}, mid=42)
    assert answered["type"] == "responded" and answered["id"] == 42, answered
    run = answered["run"]
    assert run["run_id"] == run_id and set(run) >= SNAPSHOT_FIELDS and "steps" in run, run
    assert run["waiting_for"] == [] and run["status"] != "waiting", run

    events = await c.until_terminal(run_id)
    assert_log(events)
    received = [e for e in events if e["event"] == "input_received"]
    assert len(received) == 1 and received[0]["data"] == {"request_id": rid, "value": {"ok": True}, "by": None}, (
        received
    )
    assert received[0]["step"] == "approve" and run["last_seq"] == received[0]["seq"]
    assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == {"ok": True, "topic": "AI trends"}

    # Already answered: conflict; and a finished run waits for nothing.
    assert_error(await respond(c, run_id, rid, {"ok": False}, mid="w4"), "conflict", "w4")
    final = await poll(c, run_id)
    assert final["status"] == "completed" and final["waiting_for"] == []


async def test_value_is_any_json_null_too_when_the_request_has_no_schema(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("two_asks", None)
    [first] = await requested(c, run_id)
    assert first["data"]["schema"] is None and first["data"]["prompt"] == "First?"
    [entry] = (await poll(c, run_id))["waiting_for"]
    assert_request_entry(entry, first["data"]["request_id"], "First?", None, "both")
    assert (await respond(c, run_id, first["data"]["request_id"], None))["type"] == "responded"
    second = (await requested(c, run_id, 2))[1]
    assert second["data"]["request_id"] != first["data"]["request_id"]
    nested = {"list": [1, 2.5, "x", True, None], "deep": {"a": {"b": []}}}
    assert (await respond(c, run_id, second["data"]["request_id"], nested, mid=2))["type"] == "responded"
    events = await c.until_terminal(run_id)
    assert_log(events)
    assert [e["data"]["value"] for e in events if e["event"] == "input_received"] == [None, nested]
    assert events[-1]["data"]["output"] == [None, nested]


@pytest.mark.parametrize(
    "fields",
    [
        {"request_id": "r", "value": 1},  # no run_id
        {"run_id": 5, "request_id": "r", "value": 1},
        {"run_id": None, "request_id": "r", "value": 1},
        {"run_id": "", "request_id": "r", "value": 1},
        {"run_id": "no spaces allowed", "request_id": "r", "value": 1},
        {"run_id": "x" * 65, "request_id": "r", "value": 1},
        {"run_id": "some-run", "value": 1},  # no request_id
        {"run_id": "some-run", "request_id": 7, "value": 1},
        {"run_id": "some-run", "request_id": None, "value": 1},
        {"run_id": "some-run", "request_id": ["r"], "value": 1},
        {"run_id": "some-run", "request_id": ""},  # nor value
        {"run_id": "some-run", "request_id": "r"},  # no value
    ],
)
async def test_respond_with_missing_or_wrong_typed_fields_is_bad_request(
    server: ServerProcess, fields: dict[str, Any]
) -> None:
    c = await Client.connect(server.url)
    for mid in ("m1", 99):
        await c.send({"type": "respond", "id": mid, **fields})
        assert_error(await c.wait(lambda m, mid=mid: m.get("id") == mid), "bad_request", mid)
    assert (await c.request({"type": "ping"}))["type"] == "pong"  # the socket stays open


async def test_respond_to_an_unknown_run_or_one_not_waiting(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    assert_error(await respond(c, "no-such-run", "r", 1, mid="a"), "run_not_found", "a")
    done = await c.start("echo", {"x": 1})
    await c.until_terminal(done)
    assert_error(await respond(c, done, "r", 1, mid="b"), "conflict", "b")
    busy = await c.start("sleep", {"seconds": 30})
    await c.wait(lambda m: m.get("run_id") == busy and m.get("event") == "step_started")
    assert_error(await respond(c, busy, "r", 1, mid="c"), "conflict", "c")
    assert (await poll(c, busy))["status"] == "running"
    assert (await c.request({"type": "cancel", "run_id": busy}))["type"] == "cancel_requested"


async def test_parallel_asks_are_all_in_waiting_for_and_the_run_goes_on_after_the_last(
    server: ServerProcess,
) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("both_branches", None)
    asks = await requested(c, run_id, 2)
    run = await poll(c, run_id)
    assert run["status"] == "waiting" and len(run["waiting_for"]) == 2
    by_step = {w["step"]: w for w in run["waiting_for"]}
    assert set(by_step) == {"ask/left", "ask/right"}
    assert {a["data"]["request_id"] for a in asks} == {w["request_id"] for w in run["waiting_for"]}
    for w in run["waiting_for"]:
        assert set(w) >= REQUEST_FIELDS and w["schema"] is None
    one = await respond(c, run_id, by_step["ask/left"]["request_id"], "L")
    assert one["type"] == "responded" and one["run"]["status"] == "waiting", one
    assert [w["step"] for w in one["run"]["waiting_for"]] == ["ask/right"]
    assert (await poll(c, run_id))["status"] == "waiting"
    two = await respond(c, run_id, by_step["ask/right"]["request_id"], "R", mid="second")
    assert two["type"] == "responded" and two["run"]["waiting_for"] == [], two
    events = await c.until_terminal(run_id)
    assert_log(events)
    assert events[-1]["event"] == "run_completed"


async def test_a_waiting_run_is_cancelled_at_once_and_then_waits_for_nothing(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("approve", None)
    [ev] = await requested(c, run_id)
    reply = await c.request({"type": "cancel", "run_id": run_id})
    assert reply["type"] == "cancel_requested" and reply["run"]["waiting_for"] == [], reply
    events = await c.until_terminal(run_id, timeout=5)
    assert_log(events)
    assert events[-1]["event"] == "run_cancelled"
    run = await poll(c, run_id)
    assert run["status"] == "cancelled" and run["waiting_for"] == []
    assert_error(await respond(c, run_id, ev["data"]["request_id"], {"ok": True}), "conflict", "answer")


async def test_waiting_for_is_an_empty_list_wherever_a_run_asks_nothing(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    started = await c.request({"type": "start", "workflow": "sleep", "input": {"seconds": 30}})
    assert started["run"]["waiting_for"] == [], started
    run_id = started["run"]["run_id"]
    await c.wait(lambda m: m.get("run_id") == run_id and m.get("event") == "step_started")
    assert (await poll(c, run_id))["waiting_for"] == []
    subscribed = await c.request({"type": "subscribe", "run_id": run_id, "after": 2})
    assert subscribed["type"] == "subscribed" and subscribed["run"]["waiting_for"] == [], subscribed
    status, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/api/runs/{run_id}")
    assert status == 200 and body["waiting_for"] == [], body
    listed = await c.request({"type": "list_runs", "workflow": "sleep", "limit": 500})
    entry = next(r for r in listed["runs"] if r["run_id"] == run_id)
    assert entry["waiting_for"] == [] and "steps" not in entry, entry
    status, page = await asyncio.to_thread(http, "GET", server.http_url + "/api/runs?workflow=sleep&limit=500")
    assert next(r for r in page["runs"] if r["run_id"] == run_id)["waiting_for"] == []
    cancelled = await c.request({"type": "cancel", "run_id": run_id})
    assert cancelled["run"]["waiting_for"] == []


# ---- POST /api/runs/{run_id}/respond ------------------------------------------------------


async def test_http_respond_answers_200_with_the_snapshot_and_errors_in_the_http_shape(
    server: ServerProcess,
) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("greet", None)
    [ev] = await requested(c, run_id)
    rid = ev["data"]["request_id"]
    assert ev["data"]["schema"] == {"type": "string"}
    url = f"{server.http_url}/api/runs/{run_id}/respond"

    def post(body: Any, path: str = url) -> tuple[int, Any]:
        return http("POST", path, body)

    status, body = await asyncio.to_thread(post, {"request_id": rid, "value": 7})
    assert_http_error(status, body, 422, "invalid_input")
    status, body = await asyncio.to_thread(post, {"request_id": rid, "value": None})
    assert_http_error(status, body, 422, "invalid_input")
    status, body = await asyncio.to_thread(post, {"request_id": "never-asked", "value": "Ada"})
    assert_http_error(status, body, 409, "conflict")
    status, body = await asyncio.to_thread(
        post, {"request_id": rid, "value": "Ada"}, server.http_url + "/api/runs/nope/respond"
    )
    assert_http_error(status, body, 404, "run_not_found")
    for bad in ({"value": "Ada"}, {"request_id": 5, "value": "Ada"}, {"request_id": rid}, [rid, "Ada"], "Ada"):
        status, body = await asyncio.to_thread(post, bad)
        assert_http_error(status, body, 400, "bad_request")
    status, body = await asyncio.to_thread(raw_post, url, b'{"request_id": ')
    assert_http_error(status, body, 400, "bad_json")
    assert (await poll(c, run_id))["status"] == "waiting"  # every refusal left it waiting

    status, body = await asyncio.to_thread(post, {"request_id": rid, "value": "Ada"})
    assert status == 200, body
    assert body["run_id"] == run_id and set(body) >= SNAPSHOT_FIELDS and "steps" in body, body
    assert body["waiting_for"] == [] and body["status"] != "waiting", body
    events = await c.until_terminal(run_id)
    assert_log(events)
    assert events[-1]["data"]["output"] == "hello Ada"
    status, body = await asyncio.to_thread(post, {"request_id": rid, "value": "Bob"})
    assert_http_error(status, body, 409, "conflict")


async def test_http_respond_statuses_match_the_rest_of_the_http_api(server: ServerProcess) -> None:
    """The same code, the same status, whichever endpoint: respond's run_not_found and
    conflict are what GET and cancel answer."""
    c = await Client.connect(server.url)
    status, body = await asyncio.to_thread(http, "GET", server.http_url + "/api/runs/nope")
    assert_http_error(status, body, 404, "run_not_found")
    status, body = await asyncio.to_thread(http, "POST", server.http_url + "/api/runs/nope/cancel")
    assert_http_error(status, body, 404, "run_not_found")
    done = await c.start("echo", 1)
    await c.until_terminal(done)
    status, body = await asyncio.to_thread(http, "POST", f"{server.http_url}/api/runs/{done}/cancel")
    assert_http_error(status, body, 409, "conflict")
    status, body = await asyncio.to_thread(
        http, "POST", f"{server.http_url}/api/runs/{done}/respond", {"request_id": "r", "value": 1}
    )
    assert_http_error(status, body, 409, "conflict")
    status, body = await asyncio.to_thread(
        http, "POST", server.http_url + "/api/runs", {"workflow": "count", "input": {"n": "x"}}
    )
    assert_http_error(status, body, 422, "invalid_input")  # the status invalid_input has elsewhere


# ---- the runs feed ------------------------------------------------------------------------


def changes(c: Client, run_id: str) -> list[dict[str, Any]]:
    return [m["run"] for m in c.inbox if m.get("type") == "run_changed" and m["run"]["run_id"] == run_id]


async def until_status(c: Client, run_id: str, statuses: set[str], timeout: float = 10) -> dict[str, Any]:
    frame = await c.wait(
        lambda m: m.get("type") == "run_changed" and m["run"]["run_id"] == run_id and m["run"]["status"] in statuses,
        timeout,
    )
    return dict(frame["run"])


async def test_run_changed_frames_carry_the_snapshot_without_steps_plus_current_step(server: ServerProcess) -> None:
    watcher, starter = await Client.connect(server.url), await Client.connect(server.url)
    await watcher.send({"type": "subscribe_runs", "id": 7})
    reply = await watcher.wait(lambda m: m.get("id") == 7)
    assert reply == {"type": "runs_subscribed", "id": 7}, reply
    run_id = await starter.start("chain", {"n": 2, "delay": 0.1}, subscribe=False)
    await until_status(watcher, run_id, {"completed"})
    frames = [m for m in watcher.inbox if m.get("type") == "run_changed" and m["run"]["run_id"] == run_id]
    assert all(set(m) == {"type", "run"} for m in frames), frames
    runs = [m["run"] for m in frames]
    for run in runs:
        assert "steps" not in run and "current_step" in run, run
        assert set(run) >= SNAPSHOT_FIELDS and run["waiting_for"] == [], run
        assert run["workflow"] == "chain" and run["input"] == {"n": 2, "delay": 0.1}
    assert runs[0]["status"] == "pending" and runs[0]["current_step"] is None  # created
    assert runs[-1]["status"] == "completed" and runs[-1]["current_step"] is None and runs[-1]["output"] == 2
    seqs = [r["last_seq"] for r in runs]
    assert seqs == sorted(set(seqs)), seqs  # in the order of last_seq
    during = [r["current_step"] for r in runs if r["status"] == "running"]
    assert "s1" in during and "s2" in during and set(during) <= {None, "s1", "s2"}, during
    final = await poll(starter, run_id)
    assert seqs[-1] == final["last_seq"]


async def test_a_waiting_run_in_the_feed_shows_its_requests_and_step(server: ServerProcess) -> None:
    watcher, c = await Client.connect(server.url), await Client.connect(server.url)
    reply = await watcher.request({"type": "subscribe_runs", "workflow": "approve", "status": "waiting"})
    assert reply["type"] == "runs_subscribed", reply
    run_id = await c.start("approve", None)
    [ev] = await requested(c, run_id)
    frame = await until_status(watcher, run_id, {"waiting"})
    assert frame["current_step"] == "approve" and "steps" not in frame
    [entry] = frame["waiting_for"]
    assert_request_entry(entry, ev["data"]["request_id"], "Publish this?", YES_NO, "approve")
    assert frame["last_seq"] == ev["seq"]
    assert (await respond(c, run_id, ev["data"]["request_id"], {"ok": False}))["type"] == "responded"
    # One more frame as it leaves the filter (running, or completed if both were one commit).
    await until_status(watcher, run_id, {"running", "completed"})
    await c.until_terminal(run_id)
    assert (await watcher.request({"type": "ping"}))["type"] == "pong"
    statuses = [r["status"] for r in changes(watcher, run_id)]
    assert statuses[0] == "waiting" and len(statuses) == 2, statuses  # then no more


@pytest.mark.parametrize(
    "filters",
    [{"workflow": 5}, {"workflow": ["echo"]}, {"workflow": ""}, {"status": 1}, {"status": "nope"}, {"status": True}],
)
async def test_subscribe_runs_with_a_wrong_filter_is_bad_request_and_the_feed_stays(
    server: ServerProcess, filters: dict[str, Any]
) -> None:
    watcher, c = await Client.connect(server.url), await Client.connect(server.url)
    assert (await watcher.request({"type": "subscribe_runs", "workflow": "echo"}))["type"] == "runs_subscribed"
    await watcher.send({"type": "subscribe_runs", "id": "bad", **filters})
    assert_error(await watcher.wait(lambda m: m.get("id") == "bad"), "bad_request", "bad")
    run_id = await c.start("echo", "still here", subscribe=False)
    await until_status(watcher, run_id, {"completed"})


async def test_a_second_subscribe_runs_replaces_the_filters(server: ServerProcess) -> None:
    watcher, c = await Client.connect(server.url), await Client.connect(server.url)
    assert (await watcher.request({"type": "subscribe_runs", "workflow": "echo"}))["type"] == "runs_subscribed"
    first = await c.start("echo", "one", subscribe=False)
    await until_status(watcher, first, {"completed"})
    assert (await watcher.request({"type": "subscribe_runs", "workflow": "count"}))["type"] == "runs_subscribed"
    echo = await c.start("echo", "two")
    await c.until_terminal(echo)
    counted = await c.start("count", {"n": 1, "delay": 0.01}, subscribe=False)
    await until_status(watcher, counted, {"completed"})
    assert (await watcher.request({"type": "ping"}))["type"] == "pong"
    assert changes(watcher, echo) == []  # the old filter no longer holds
    assert (await watcher.request({"type": "subscribe_runs"}))["type"] == "runs_subscribed"  # no filter: all
    other = await c.start("echo", "three", subscribe=False)
    await until_status(watcher, other, {"completed"})


async def test_null_filters_are_no_filters(server: ServerProcess) -> None:
    watcher, c = await Client.connect(server.url), await Client.connect(server.url)
    reply = await watcher.request({"type": "subscribe_runs", "workflow": None, "status": None})
    assert reply["type"] == "runs_subscribed", reply
    run_id = await c.start("echo", "seen", subscribe=False)
    await until_status(watcher, run_id, {"completed"})


async def test_the_feed_is_live_only_and_unsubscribe_runs_ends_it(server: ServerProcess) -> None:
    watcher, c = await Client.connect(server.url), await Client.connect(server.url)
    before = await c.start("echo", "before the feed")
    await c.until_terminal(before)
    assert (await watcher.request({"type": "subscribe_runs"}))["type"] == "runs_subscribed"
    assert (await watcher.request({"type": "ping"}))["type"] == "pong"
    assert changes(watcher, before) == []  # no replay of what happened before
    await watcher.send({"type": "unsubscribe_runs", "id": 3})
    assert await watcher.wait(lambda m: m.get("id") == 3) == {"type": "runs_unsubscribed", "id": 3}
    run_id = await c.start("echo", "unseen")
    await c.until_terminal(run_id)
    assert (await watcher.request({"type": "ping"}))["type"] == "pong"
    assert changes(watcher, run_id) == []
    again = await watcher.request({"type": "unsubscribe_runs"})  # without a feed: the same answer
    assert again["type"] == "runs_unsubscribed", again


# ---- tool events ---------------------------------------------------------------------------


def assert_tool_calls_pair_up(events: list[dict[str, Any]], step: str) -> dict[str, list[dict[str, Any]]]:
    """Each tool_call_started is followed by exactly one completed or failed with its call_id;
    nothing ends a call that did not start. The events of each call, by call_id."""
    calls: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if not e["event"].startswith("tool_call_"):
            continue
        assert e["step"] == step, e
        data = e["data"]
        assert isinstance(data["call_id"], str) and data["call_id"] and isinstance(data["tool"], str), e
        if e["event"] == "tool_call_started":
            assert data["call_id"] not in calls, f"started twice: {e}"
            assert "args" in data, e
            calls[data["call_id"]] = [e]
        else:
            assert e["event"] in ("tool_call_completed", "tool_call_failed"), e
            assert len(calls.get(data["call_id"], [])) == 1, f"an end without its start, or a second end: {e}"
            assert data["tool"] == calls[data["call_id"]][0]["data"]["tool"], e
            assert ("result" in data) if e["event"] == "tool_call_completed" else isinstance(data["error"], str), e
            calls[data["call_id"]].append(e)
    assert all(len(pair) == 2 for pair in calls.values()), calls
    return calls


async def test_the_tools_workflow_streams_paired_tool_events_with_parsed_args(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    listed = await c.request({"type": "list_workflows"})
    assert {"name": "tools", "steps": ["research"]}.items() <= next(
        w for w in listed["workflows"] if w["name"] == "tools"
    ).items()
    await c.send({"type": "start", "id": "shape", "workflow": "tools", "input": {"topic": 5}})
    assert_error(await c.wait(lambda m: m.get("id") == "shape"), "invalid_input", "shape")
    run_id = await c.start("tools", {"topic": "background workflows"})
    events = await c.until_terminal(run_id)
    assert_log(events)
    assert events[-1]["event"] == "run_completed", events[-1]
    calls = assert_tool_calls_pair_up(events, "research")
    assert {pair[0]["data"]["tool"] for pair in calls.values()} == {"word_count", "search_notes"}
    for started, ended in calls.values():
        assert isinstance(started["data"]["args"], dict), started  # the parsed object, not its text
        assert ended["event"] == "tool_call_completed", ended
    by_tool = {pair[0]["data"]["tool"]: pair for pair in calls.values()}
    words = by_tool["word_count"]
    assert words[1]["data"]["result"] == len(words[0]["data"]["args"]["text"].split())
    assert isinstance(by_tool["search_notes"][1]["data"]["result"], list)


async def test_failed_and_unparsable_tool_calls_end_failed_and_the_step_goes_on(server: ServerProcess) -> None:
    from .contract_flows import BROKEN_ARGUMENTS

    c = await Client.connect(server.url)
    run_id = await c.start("mixed_tools", "go")
    events = await c.until_terminal(run_id)
    assert_log(events)
    assert events[-1]["event"] == "run_completed", events[-1]
    told = events[-1]["data"]["output"]  # the model is told each result and each error
    assert told.startswith("done: 5 | ") and "exploded: on purpose" in told, told
    assert [e["event"] for e in events if e["event"] == "step_failed"] == []
    calls = assert_tool_calls_pair_up(events, "act")
    assert set(calls) == {"c1", "c2", "c3"}
    (started, ended) = calls["c1"]
    assert started["data"]["args"] == {"a": 2, "b": 3} and ended["event"] == "tool_call_completed"
    assert ended["data"]["result"] == 5
    (started, ended) = calls["c2"]
    assert started["data"]["args"] == {"reason": "on purpose"} and ended["event"] == "tool_call_failed"
    assert "exploded: on purpose" in ended["data"]["error"]
    (started, ended) = calls["c3"]
    assert started["data"]["args"] == BROKEN_ARGUMENTS  # the raw text when it is not JSON
    assert ended["event"] == "tool_call_failed", ended


# ---- authentication, rate limits ---------------------------------------------------------


async def test_http_respond_needs_the_token_and_the_dashboard_files_do_not(locked: ServerProcess) -> None:
    url = locked.http_url + "/api/runs/nope/respond"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, body = await asyncio.to_thread(raw_post, url, b'{"request_id": "r", "value": 1}', headers)
        assert_http_error(status, body, 401, "unauthorized")
    status, body = await asyncio.to_thread(
        raw_post, url, b'{"request_id": "r", "value": 1}', {"Authorization": f"Bearer {TOKEN}"}
    )
    assert_http_error(status, body, 404, "run_not_found")
    static = sorted(p.name for p in (ROOT / "static").iterdir() if p.is_file())
    assert "index.html" in static
    for path in ["/", *(f"/{name}" for name in static)]:
        status, content = await asyncio.to_thread(get, locked.http_url + path)
        assert status == 200 and content, path
    assert (await asyncio.to_thread(get, locked.http_url + "/healthz"))[0] == 200
    assert (await asyncio.to_thread(get, locked.http_url + "/api/runs"))[0] == 401


async def test_the_new_ws_messages_need_auth_when_tokens_are_on(locked: ServerProcess) -> None:
    c = await Client.connect(locked.url)
    messages = [
        {"type": "respond", "run_id": "nope", "request_id": "r", "value": 1},
        {"type": "subscribe_runs"},
        {"type": "unsubscribe_runs"},
    ]
    for i, message in enumerate(messages):
        await c.send({**message, "id": i})
        assert_error(await c.wait(lambda m, i=i: m.get("id") == i), "unauthorized", i)
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    assert (await c.request({"type": "auth", "token": TOKEN}))["type"] == "authed"
    assert_error(await respond(c, "nope", "r", 1, mid="x"), "run_not_found", "x")
    assert (await c.request({"type": "subscribe_runs"}))["type"] == "runs_subscribed"
    assert (await c.request({"type": "unsubscribe_runs"}))["type"] == "runs_unsubscribed"
    header = await Client.connect(locked.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    assert (await header.request({"type": "subscribe_runs"}))["type"] == "runs_subscribed"


async def test_rate_limited_carries_retry_after_and_the_start_is_accepted_after_it(locked: ServerProcess) -> None:
    c = await Client.connect(locked.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    start = {"type": "start", "workflow": "echo", "input": 1, "subscribe": False}
    replies = []
    while not replies or replies[-1]["type"] == "started":  # a burst of 2, then too many
        assert len(replies) < 20, replies
        replies.append(await c.request(start))
    assert len(replies) >= 3 and [r["type"] for r in replies[:2]] == ["started", "started"], replies
    limited = replies[-1]
    assert_error(limited, "rate_limited", limited["id"])
    retry_after = limited["retry_after"]
    assert isinstance(retry_after, int | float) and not isinstance(retry_after, bool), limited
    assert 0 < retry_after <= 0.5, limited  # at 2 starts per second, room comes within half a second
    await asyncio.sleep(retry_after + 0.01)  # the contract's own wait
    assert (await c.request(start))["type"] == "started"


# ---- restarts: run_resumed.reason, waiting across a restart ---------------------------------


async def test_after_kill_9_runs_resume_with_reason_restart_and_waiting_runs_keep_their_request(
    tmp_path: Path,
) -> None:
    proc = ServerProcess(tmp_path / "runcast.db", "--workflows", FLOWS, "--max-running", "1").start()
    try:
        c = await Client.connect(proc.url)
        asking = await c.start("approve", "kept")
        [ev] = await requested(c, asking)
        rid = ev["data"]["request_id"]
        sleeping = await c.start("sleep", {"seconds": 60})
        await c.wait(lambda m: m.get("run_id") == sleeping and m.get("event") == "step_started")
        proc.kill()
        proc.restart()
        c = await Client.connect(proc.url)
        assert (await c.request({"type": "subscribe", "run_id": sleeping}))["type"] == "subscribed"
        resumed = await c.wait(lambda m: m.get("run_id") == sleeping and m.get("event") == "run_resumed")
        assert resumed["data"]["reason"] == "restart" and resumed["data"]["from_step"] == "sleep", resumed
        assert resumed["step"] is None
        run = await poll(c, asking)
        assert run["status"] == "waiting" and [w["request_id"] for w in run["waiting_for"]] == [rid]
        assert (await c.request({"type": "cancel", "run_id": sleeping}))["type"] == "cancel_requested"
        await c.until_terminal(sleeping)
        # A waiting run holds no --max-running slot: another run goes through meanwhile.
        echo = await c.start("echo", "through")
        assert (await c.until_terminal(echo))[-1]["event"] == "run_completed"
        assert (await respond(c, asking, rid, {"ok": True}))["type"] == "responded"  # the id from before
        assert (await c.request({"type": "subscribe", "run_id": asking}))["type"] == "subscribed"
        events = await c.until_terminal(asking)
        assert_log(events)
        assert events[-1]["data"]["output"] == {"ok": True, "topic": "kept"}
        assert [e["event"] for e in events].count("input_requested") == 1  # never asked again
        assert "run_resumed" not in [e["event"] for e in events]  # it waited; nothing resumed it
    finally:
        proc.stop()


# ---- a cluster: every node answers for every run ------------------------------------------


async def test_a_run_waiting_on_one_node_is_seen_refused_and_answered_through_another(
    pg_url: str, tmp_path: Path
) -> None:
    a = ServerProcess.node(pg_url, tmp_path, "a", "--workflows", FLOWS).start()
    b = ServerProcess.node(pg_url, tmp_path, "b", "--workflows", FLOWS).start()
    try:
        ca, cb = await Client.connect(a.url), await Client.connect(b.url)
        assert (await cb.request({"type": "subscribe_runs", "workflow": "approve"}))["type"] == "runs_subscribed"
        run_id = await ca.start("approve", "clustered")
        [ev] = await requested(ca, run_id)
        rid = ev["data"]["request_id"]
        frame = await until_status(cb, run_id, {"waiting"})  # node a's change, in node b's feed
        assert frame["current_step"] == "approve" and [w["request_id"] for w in frame["waiting_for"]] == [rid]
        [entry] = (await poll(cb, run_id))["waiting_for"]
        assert_request_entry(entry, rid, "Publish this?", YES_NO, "approve")
        assert_error(await respond(cb, run_id, rid, {"ok": 1}, mid="b1"), "invalid_input", "b1")
        assert_error(await respond(cb, run_id, "never-asked", {"ok": True}, mid="b2"), "conflict", "b2")
        assert_error(await respond(cb, "no-such-run", rid, {"ok": True}, mid="b3"), "run_not_found", "b3")
        assert (await poll(ca, run_id))["status"] == "waiting"
        status, body = await asyncio.to_thread(
            http, "POST", f"{b.http_url}/api/runs/{run_id}/respond", {"request_id": rid, "value": {"ok": True}}
        )
        assert status == 200 and body["run_id"] == run_id and body["waiting_for"] == [], body
        events = await ca.until_terminal(run_id)
        assert_log(events)
        assert events[-1]["data"]["output"] == {"ok": True, "topic": "clustered"}
        assert_error(await respond(ca, run_id, rid, {"ok": True}, mid="a1"), "conflict", "a1")
    finally:
        a.stop()
        b.stop()
