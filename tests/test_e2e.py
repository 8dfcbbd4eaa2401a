"""End to end: a real server process, a real database (a SQLite file, and PostgreSQL in
cluster mode with one node), real sockets."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable

import httpx
import pytest
import websockets

from .harness import BACKENDS, TERMINAL, Client, ServerProcess, StoredEvents, assert_log, http

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")


async def test_count_streams_progress_and_poll_matches(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("count", {"n": 5, "delay": 0.01})
    events = await c.until_terminal(run_id)
    assert_log(events)
    assert [e["event"] for e in events] == [
        "run_started",
        "step_started",
        *["progress"] * 5,
        "step_completed",
        "run_completed",
    ]
    assert [e["data"]["current"] for e in events if e["event"] == "progress"] == [1, 2, 3, 4, 5]
    assert all(e["step"] == "count" for e in events[1:-1]) and events[0]["step"] is None
    run = (await c.request({"type": "poll", "run_id": run_id}))["run"]
    assert run["status"] == "completed" and run["output"] == {"count": 5} and run["last_seq"] == len(events)
    assert run["steps"][0] | {"started_at": None, "finished_at": None} == {
        "name": "count",
        "status": "completed",
        "output": {"count": 5},
        "error": None,
        "attempts": 1,
        "started_at": None,
        "finished_at": None,
    }


async def test_every_event_is_on_disk_before_a_client_sees_it(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("count", {"n": 200, "delay": 0})
    checked = 0
    async with StoredEvents(server.db) as stored:
        while True:
            msg = await c.next()
            if msg.get("type") != "event":
                continue
            frame = await stored.frame(run_id, msg["seq"])
            assert frame is not None and json.loads(frame) == msg, msg
            checked += 1
            if msg["event"] == "run_completed":
                break
    assert checked == 204


async def _subscriber(url: str, run_id: str, after: int, batch: bool) -> list[dict]:
    c = await Client.connect(url)
    reply = await c.request({"type": "subscribe", "run_id": run_id, "after": after, "batch": batch})
    assert reply["type"] == "subscribed", reply
    events = await c.until_terminal(run_id, timeout=60)
    await c.close()
    return events


@pytest.mark.parametrize("batch", [False, True])
async def test_stored_to_live_handover_never_drops_or_repeats(server: ServerProcess, batch: bool) -> None:
    """Many clients subscribe at random moments, from random seqs, while runs emit fast."""
    rng = random.Random(7)
    owner = await Client.connect(server.url)
    runs = [await owner.start("count", {"n": 3000, "delay": 0}, subscribe=False) for _ in range(3)]
    tasks = []
    for _ in range(30):
        await asyncio.sleep(rng.uniform(0, 0.05))
        run_id = rng.choice(runs)
        last = (await owner.request({"type": "poll", "run_id": run_id}))["run"]["last_seq"]
        after = rng.randint(0, last)
        tasks.append((run_id, after, asyncio.create_task(_subscriber(server.url, run_id, after, batch))))
    full = {run_id: await _subscriber(server.url, run_id, 0, False) for run_id in runs}
    for run_id in runs:
        assert_log(full[run_id])
        assert len(full[run_id]) == 3004
    for run_id, after, task in tasks:
        got = await task
        assert got == full[run_id][after:], f"subscriber after={after} got a different log"


async def test_bad_frames_get_errors_and_harm_no_one(server: ServerProcess) -> None:
    watcher = await Client.connect(server.url)
    run_id = await watcher.start("count", {"n": 50, "delay": 0.005})
    bad = await Client.connect(server.url)
    garbage: list[str | bytes] = [
        "{not json",
        "[]",
        "null",
        '"text"',
        "{}",
        '{"type": 5}',
        '{"type": "start"}',
        '{"type": "start", "workflow": 7}',
        '{"type": "start", "workflow": "count", "input": {"n": -1}}',
        '{"type": "subscribe", "run_id": "bad id with spaces"}',
        '{"type": "subscribe", "run_id": "x", "after": -3}',
        '{"type": "list_runs", "limit": 100000}',
        '{"type": "list_runs", "before": "not-a-cursor"}',
        '{"type": "cancel", "run_id": "nope"}',
        '{"type": "ping", "id": {"nested": true}}',
        b"\x00\xff",
        '{"type": "' + "x" * 10000 + '"}',
        json.dumps({"type": "echo", "deep": [[[[[[[[[[1]]]]]]]]]]}),
    ]
    for frame in garbage:
        await bad.send(frame)
        reply = await bad.next()
        assert reply["type"] == "error" and reply["code"] and reply["message"], (frame, reply)
    assert (await bad.request({"type": "ping"}))["type"] == "pong"
    events = await watcher.until_terminal(run_id)
    assert_log(events)
    assert events[-1]["event"] == "run_completed"


async def test_error_replies_echo_the_id(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    await c.send({"type": "poll", "run_id": "missing", "id": 41})
    reply = await c.next()
    assert reply == {"type": "error", "code": "run_not_found", "message": reply["message"], "id": 41}
    await c.send({"type": "nope", "id": "abc"})
    assert (await c.next())["id"] == "abc"


async def test_oversized_frame_closes_with_1009_and_others_carry_on(server: ServerProcess) -> None:
    other = await Client.connect(server.url)
    big = await Client.connect(server.url)
    with pytest.raises(websockets.ConnectionClosed) as info:  # the close may come while the frame is still going out
        await big.send(json.dumps({"type": "start", "workflow": "echo", "input": "x" * (2 * 1024 * 1024)}))
        await big.next()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    run_id = await other.start("echo", {"still": "fine"})
    assert (await other.until_terminal(run_id))[-1]["data"]["output"] == {"still": "fine"}


async def test_idempotent_start_by_run_id(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    first = await c.request({"type": "start", "workflow": "echo", "input": {"a": 1}, "run_id": "order-17"})
    assert first["type"] == "started" and first["run"]["run_id"] == "order-17" and first["existing"] is False
    await c.until_terminal("order-17")
    again = await c.request({"type": "start", "workflow": "echo", "input": {"a": 1}, "run_id": "order-17"})
    assert again["type"] == "started" and again["existing"] is True and again["run"]["status"] == "completed"
    clash = await c.request({"type": "start", "workflow": "echo", "input": {"a": 2}, "run_id": "order-17"})
    assert clash["type"] == "error" and clash["code"] == "conflict"
    invalid = await c.request({"type": "start", "workflow": "echo", "run_id": "no spaces allowed"})
    assert invalid["type"] == "error" and invalid["code"] == "bad_request"
    runs = (await c.request({"type": "list_runs"}))["runs"]
    assert [r["run_id"] for r in runs] == ["order-17"]


async def test_cancel_ends_a_sleeping_run_at_once(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("sleep", {"seconds": 60})
    await c.wait(lambda m: m.get("event") == "step_started")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reply = await c.request({"type": "cancel", "run_id": run_id})
    assert reply["type"] == "cancel_requested" and reply["run"]["run_id"] == run_id
    events = await c.until_terminal(run_id)
    assert loop.time() - t0 < 1.0
    assert_log(events)
    assert events[-1]["event"] == "run_cancelled"
    run = (await c.request({"type": "poll", "run_id": run_id}))["run"]
    assert run["status"] == "cancelled" and run["steps"][0]["status"] == "failed"
    again = await c.request({"type": "cancel", "run_id": run_id})
    assert again["type"] == "error" and again["code"] == "conflict"


async def test_unsubscribe_and_resubscribe(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("count", {"n": 40, "delay": 0.01})
    await c.wait(lambda m: m.get("type") == "event" and m["seq"] >= 3)
    reply = await c.request({"type": "unsubscribe", "run_id": run_id})
    assert reply == {"type": "unsubscribed", "id": reply["id"], "run_id": run_id}
    await asyncio.sleep(0.2)
    seen = len(c.events(run_id))
    await asyncio.sleep(0.2)
    assert len(c.events(run_id)) == seen, "events arrived after unsubscribe"
    # Subscribing again replaces the old subscription: delivery starts over after `after`.
    c.inbox.clear()
    c.used.clear()
    assert (await c.request({"type": "subscribe", "run_id": run_id, "after": 2}))["type"] == "subscribed"
    second = await c.request({"type": "subscribe", "run_id": run_id, "after": 10})
    assert second["type"] == "subscribed"
    start = c.inbox.index(second) + 1
    while not any(m.get("event") in TERMINAL for m in c.inbox[start:]):
        await c.next()
    assert_log([m for m in c.inbox[start:] if m.get("type") == "event"], first=11)


async def test_subscribe_to_finished_run_replays_and_ends(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("chain", {"n": 2, "delay": 0})
    full = await c.until_terminal(run_id)
    d = await Client.connect(server.url)
    assert (await d.request({"type": "subscribe", "run_id": run_id, "after": len(full)}))["type"] == "subscribed"
    assert (await d.request({"type": "ping"}))["type"] == "pong"
    assert d.events(run_id) == []
    missing = await d.request({"type": "subscribe", "run_id": "never-was"})
    assert missing["type"] == "error" and missing["code"] == "run_not_found"


async def test_list_runs_filters_and_pages(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    ids = [await c.start("echo", i) for i in range(7)]
    failing = await c.start("fail", {"message": "x"})
    for run_id in [*ids, failing]:
        await c.until_terminal(run_id)
    page = await c.request({"type": "list_runs", "workflow": "echo", "limit": 3})
    assert [r["run_id"] for r in page["runs"]] == ids[::-1][:3] and "steps" not in page["runs"][0]
    seen = [r["run_id"] for r in page["runs"]]
    while page["next"] is not None:
        page = await c.request({"type": "list_runs", "workflow": "echo", "limit": 3, "before": page["next"]})
        seen += [r["run_id"] for r in page["runs"]]
    assert seen == ids[::-1]
    failed = await c.request({"type": "list_runs", "status": "failed"})
    assert [r["run_id"] for r in failed["runs"]] == [failing] and failed["next"] is None
    assert ids == sorted(ids), "server-made ids sort by creation time"


async def test_http_api(server: ServerProcess) -> None:
    base = server.http_url
    status, body = await asyncio.to_thread(http, "GET", base + "/api/workflows")
    assert status == 200 and {w["name"] for w in body["workflows"]} >= {"echo", "count", "content"}
    status, run = await asyncio.to_thread(http, "POST", base + "/api/runs", {"workflow": "echo", "input": [1, 2]})
    assert status == 202 and run["status"] == "pending"
    c = await Client.connect(server.url)
    await c.request({"type": "subscribe", "run_id": run["run_id"]})
    live = await c.until_terminal(run["run_id"])
    status, snapshot = await asyncio.to_thread(http, "GET", f"{base}/api/runs/{run['run_id']}")
    assert status == 200 and snapshot["output"] == [1, 2]
    status, body = await asyncio.to_thread(http, "GET", f"{base}/api/runs/{run['run_id']}/events?after=1")
    assert status == 200 and body["events"] == live[1:]
    status, body = await asyncio.to_thread(http, "GET", base + "/api/runs?workflow=echo")
    assert status == 200 and [r["run_id"] for r in body["runs"]] == [run["run_id"]]
    status, body = await asyncio.to_thread(http, "GET", base + "/api/runs/nope")
    assert status == 404 and body["error"]["code"] == "run_not_found"
    status, body = await asyncio.to_thread(http, "POST", base + "/api/runs", {"workflow": "count", "input": {"n": "x"}})
    assert status == 422 and body["error"]["code"] == "invalid_input"
    status, body = await asyncio.to_thread(http, "POST", f"{base}/api/runs/{run['run_id']}/cancel")
    assert status == 409 and body["error"]["code"] == "conflict"
    status, page = await asyncio.to_thread(http, "GET", base + "/")
    assert status == 200 and b"runcast" in page


async def test_max_running_keeps_extra_runs_pending(new_server: Callable[..., ServerProcess]) -> None:
    server = new_server("--max-running", "1").start()
    try:
        c = await Client.connect(server.url)
        first = await c.start("sleep", {"seconds": 0.5})
        second = await c.start("echo", "after")
        run = (await c.request({"type": "poll", "run_id": second}))["run"]
        assert run["status"] == "pending"
        second_log = await c.until_terminal(second)
        first_log = await c.until_terminal(first)
        assert first_log[-1]["ts"] <= second_log[0]["ts"]
    finally:
        server.stop()


async def test_server_sent_events_resume_and_end(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("count", {"n": 30, "delay": 0.01})
    live = await c.until_terminal(run_id)
    url = f"{server.http_url}/api/runs/{run_id}/events"
    async with httpx.AsyncClient(timeout=10) as http_client:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": "5"}
        async with http_client.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            body = "".join([chunk async for chunk in response.aiter_text()])
        messages = [m for m in body.split("\n\n") if m.startswith("id:")]
        parsed = []
        for message in messages:
            fields = dict(line.split(": ", 1) for line in message.splitlines())
            parsed.append(json.loads(fields["data"]))
            assert fields["id"] == str(parsed[-1]["seq"]) and fields["event"] == parsed[-1]["event"]
        assert parsed == live[5:]
        finished = await http_client.get(url, headers={"Accept": "text/event-stream", "Last-Event-ID": "35"})
        assert finished.status_code == 204


async def test_server_sent_events_follow_a_live_run(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("count", {"n": 20, "delay": 0.02}, subscribe=False)
    async with httpx.AsyncClient(timeout=10) as http_client:
        url = f"{server.http_url}/api/runs/{run_id}/events?after=0"
        async with http_client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
            body = "".join([chunk async for chunk in response.aiter_text()])
    ids = [int(line[4:]) for line in body.splitlines() if line.startswith("id: ")]
    assert ids == list(range(1, 25))


async def test_metrics_count_what_happens(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("count", {"n": 10, "delay": 0})
    await c.until_terminal(run_id)
    await c.send("{broken")
    await c.next()
    status, body = await asyncio.to_thread(http, "GET", server.http_url + "/metrics")
    assert status == 200
    text = body.decode()

    def value(name: str) -> float:
        line = next(line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))
        return float(line.rsplit(" ", 1)[1])

    assert value("runcast_connections") == 1
    assert value("runcast_events_written_total") >= 14
    assert value("runcast_events_delivered_total") >= 14
    assert value('runcast_errors_total{code="bad_json"}') == 1
    assert value("runcast_store_batch_ops_count") >= 1


async def test_the_tools_built_in_streams_its_tool_calls_inside_research(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("tools", {"topic": "tool calls"})
    events = await c.until_terminal(run_id)
    assert_log(events)
    research = [e for e in events if e["step"] == "research"]
    kinds = [e["event"] for e in research]
    assert kinds[0] == "step_started" and kinds[-1] == "step_completed"
    calls = [e for e in research if e["event"].startswith("tool_call_")]
    started = {e["data"]["call_id"]: n for n, e in enumerate(calls) if e["event"] == "tool_call_started"}
    completed = {e["data"]["call_id"]: n for n, e in enumerate(calls) if e["event"] == "tool_call_completed"}
    assert len(started) == 2 and started.keys() == completed.keys()
    assert all(started[call_id] < completed[call_id] for call_id in started)
    assert {e["data"]["tool"] for e in calls} == {"word_count", "search_notes"}
    assert kinds.index("tool_call_completed") < kinds.index("step_output")
    assert events[-1]["event"] == "run_completed" and "Tool word_count gave 2." in events[-1]["data"]["output"]
    await c.close()
