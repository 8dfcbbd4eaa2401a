"""Holes found by attack, each reproduced against a real server: the same run id started
through two cluster nodes at once, text that cannot be encoded, clients that pin memory or
the event loop, tools that hang."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .attack_flows import record_file
from .harness import BACKENDS, Client, ServerProcess, StalledClient, assert_log, http

FLOWS = Path(__file__).with_name("attack_flows.py")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNCAST_ATTACK_DIR", str(tmp_path))  # the child servers' steps count here
    return tmp_path


@pytest.fixture
def served(folder: Path) -> Iterator[ServerProcess]:
    """A server on SQLite with this file's workflows."""
    with ServerProcess(folder / "attacks.db", "--workflows", str(FLOWS)) as proc:
        yield proc


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
    with new_server("--workflows", str(FLOWS)) as server:
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


# ---- 2. text that cannot be encoded -------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")
async def test_a_lone_surrogate_is_stored_as_u_fffd_and_the_run_ends(
    new_server: Callable[..., ServerProcess], folder: Path
) -> None:
    with new_server("--workflows", str(FLOWS)) as server:
        c = await Client.connect(server.url)
        ends = {}
        for where in ("output", "delta", "progress", "error", "key"):
            run_id = await c.start("lone_surrogates", {"where": where})
            events = await c.until_terminal(run_id, timeout=15)
            assert_log(events)
            ends[where] = events[-1]["event"]
            text = json.dumps(events, ensure_ascii=False)
            assert "\ufffd" in text, (where, events)
            poll = await c.request({"type": "poll", "run_id": run_id})
            assert poll["run"]["status"] == ("failed" if where == "error" else "completed"), poll
        assert ends == dict.fromkeys(("output", "delta", "progress", "key"), "run_completed") | {"error": "run_failed"}
        server.stop()
        server.restart()  # nothing was left unfinished: nothing runs again
        c = await Client.connect(server.url)
        listed = await c.request({"type": "list_runs", "status": "running"})
        assert listed["runs"] == []


# ---- 7. small holes, each a broken promise --------------------------------------------


async def test_integers_past_64_bits_are_refused_never_changed(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    big = "123456789012345678901234567890"
    await c.send('{"type":"start","id":"big","workflow":"echo","input":{"n":' + big + "}}")
    reply = await c.wait(lambda m: m.get("id") == "big")
    assert reply["type"] == "error" and reply["code"] == "invalid_input" and "64 bits" in reply["message"], reply
    status, body = await asyncio.to_thread(
        http, "POST", f"{server.http_url}/api/runs", {"workflow": "echo", "input": [-int(big)]}
    )
    assert status == 422 and body["error"]["code"] == "invalid_input", body
    # Within 64 bits (and digits inside strings) nothing changes.
    edge = (
        '{"type":"start","id":"edge","workflow":"echo","input":[18446744073709551615,-9223372036854775808,"'
        + big
        + '"]}'
    )
    await c.send(edge)
    started = await c.wait(lambda m: m.get("id") == "edge")
    events = await c.until_terminal(started["run"]["run_id"])
    assert events[-1]["data"]["output"] == [18446744073709551615, -9223372036854775808, big]


async def test_subscribe_after_past_what_a_seq_can_be_is_a_bad_request(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    run_id = await c.start("echo", 1, subscribe=False)
    for after in (2**63, 2**64 - 1):
        reply = await c.request({"type": "subscribe", "run_id": run_id, "after": after})
        assert reply["type"] == "error" and reply["code"] == "bad_request", reply
    reply = await c.request({"type": "subscribe", "run_id": run_id, "after": 2**63 - 1})
    assert reply["type"] == "subscribed"
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    assert "Traceback" not in server.tail(20_000)


# ---- 4. tools that hang ---------------------------------------------------------------


async def test_tools_that_hang_do_not_starve_other_runs_tools(folder: Path) -> None:
    """Eight runs whose tool blocks on a socket that never answers (more than asyncio's
    default pool has threads on two cores, and than --tool-threads here): each call times
    out after its own 0.5 s, not after waiting for a thread, and another run's tool still
    answers at once, during and after; past --max-hung-tools, calls fail at once, saying why."""
    with ServerProcess(
        folder / "tools.db", "--workflows", str(FLOWS), "--tool-threads", "4", "--max-hung-tools", "10"
    ) as server:
        c = await Client.connect(server.url)
        hung = [await c.start("hang", None) for _ in range(8)]
        for run_id in hung:
            events = await c.until_terminal(run_id, timeout=10)
            failed = [e for e in events if e["event"] == "tool_call_failed"]
            assert [e["data"]["error"] for e in failed] == ["timed out after 0.5 s"], events
        for _ in range(3):  # 8 calls hang in their threads; 4 threads still answer
            events = await c.until_terminal(await c.start("quick", None), timeout=10)
            assert [e["data"]["result"] for e in events if e["event"] == "tool_call_completed"] == ["took it"]
        errors = []
        for _ in range(3):  # 10 hang after two more; the next is refused
            events = await c.until_terminal(await c.start("hang", None), timeout=10)
            errors += [e["data"]["error"] for e in events if e["event"] == "tool_call_failed"]
        assert errors[:2] == ["timed out after 0.5 s"] * 2 and "--max-hung-tools" in errors[2], errors


async def test_tool_arguments_nested_too_deep_fail_the_call_not_the_step(served: ServerProcess) -> None:
    c = await Client.connect(served.url)
    events = await c.until_terminal(await c.start("deep_args", None))
    kinds = [e["event"] for e in events]
    assert "tool_call_failed" in kinds and kinds[-1] == "run_completed", kinds
    failed = next(e for e in events if e["event"] == "tool_call_failed")
    assert "nest" in failed["data"]["error"], failed
    assert "told:" in events[-1]["data"]["output"]


# ---- 3. and 6. memory one client can pin ------------------------------------------------


async def test_clients_that_poll_and_never_read_pin_little_memory(served: ServerProcess) -> None:
    """Ten connections ask for a ~700 KB snapshot 300 times each and read nothing: each holds
    about its outbox's byte bound, not hundreds of replies (it was ~200 MB each)."""
    c = await Client.connect(served.url)
    big = {"text": "x" * 240_000}
    run_id = await c.start("echo", big)
    await c.until_terminal(run_id)
    before = served.rss_kb()
    stalled = [await StalledClient(served.url).open(served.port) for _ in range(10)]
    try:
        for client in stalled:
            for _ in range(300):
                client.send({"type": "poll", "run_id": run_id})
        await asyncio.sleep(4)  # the server has taken all it will take
        grown_mb = (served.rss_kb() - before) / 1024
        assert grown_mb < 100, f"the server grew by {grown_mb:.0f} MB"
        assert (await c.request({"type": "ping"}))["type"] == "pong"  # everyone else is served
    finally:
        for client in stalled:
            client.close()


PING = b"\x89\xfd\0\0\0\0" + b"p" * 125  # a masked ping frame with 125 bytes (a zero mask)


async def test_pings_from_a_client_that_never_reads_pin_little_memory(folder: Path) -> None:
    """An unauthenticated client sends 75 MB of pings and reads none of the pongs: the
    server stops reading it once its send buffer is full, and cuts it after the auth deadline."""
    with ServerProcess(folder / "pings.db", "--token", "secret", "--auth-seconds", "2") as server:
        before = server.rss_kb()
        flooder = await StalledClient(server.url).open(server.port)
        chunk, sent = PING * 500, 0
        with contextlib.suppress(ConnectionError):
            while sent < 75 << 20 and await flooder.send_raw(chunk, timeout=1.0):
                sent += len(chunk)
        grown_mb = (server.rss_kb() - before) / 1024
        assert sent < 30 << 20, f"the server read {sent >> 20} MB of pings from a client that reads nothing"
        assert grown_mb < 40, f"the server grew by {grown_mb:.0f} MB"
        # Past the auth deadline, and the time a close may take to go out, the socket is cut.
        await _wait_for(lambda: _connections(server) == 0, timeout=15)
        flooder.close()


def _connections(server: ServerProcess) -> float:
    status, text = http("GET", server.http_url + "/metrics", headers={"Authorization": "Bearer secret"})
    assert status == 200
    text = text.decode() if isinstance(text, bytes) else str(text)
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("runcast_connections ")))


async def test_one_byte_fragments_from_an_unauthenticated_client_do_not_freeze_the_others(folder: Path) -> None:
    with ServerProcess(folder / "frags.db", "--token", "secret") as server:
        other = await Client.connect(server.url, additional_headers={"Authorization": "Bearer secret"})
        flooder = await StalledClient(server.url).open(server.port)
        rtts: list[float] = []
        flooding = True

        async def measure() -> None:
            loop = asyncio.get_running_loop()
            while flooding:
                sent = loop.time()
                assert (await other.request({"type": "ping"}))["type"] == "pong"
                rtts.append(loop.time() - sent)
                await asyncio.sleep(0.01)

        pinger = asyncio.create_task(measure())
        frames = b"\x01\x81\0\0\0\0a" + b"\x00\x81\0\0\0\0a" * (1 << 20)  # one message, 7 MB of 1-byte fragments
        closed = False
        try:
            for start in range(0, len(frames), 1 << 16):
                if not await flooder.send_raw(frames[start : start + (1 << 16)], timeout=2.0):
                    break
        except ConnectionError:
            closed = True
        await asyncio.sleep(0.3)
        flooding = False
        await pinger
        code = None if closed else await flooder.read_until_closed(timeout=5)
        assert closed or code == 1009, code
        assert max(rtts) < 0.5, f"another client's ping took {max(rtts):.2f} s"
        flooder.close()


async def _open_stream(server: ServerProcess, run_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An SSE request on a raw socket with a small receive buffer, its answer left unread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    head = f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def test_event_streams_nobody_reads_are_bounded_ended_and_counted(folder: Path) -> None:
    with ServerProcess(folder / "sse.db", "--stuck-seconds", "2", "--max-connections", "4") as server:
        c = await Client.connect(server.url)
        run_id = await c.start("count", {"n": 30000, "delay": 0}, subscribe=False)
        before = server.rss_kb()
        streams = [await _open_stream(server, run_id) for _ in range(3)]
        await asyncio.sleep(0.5)  # the server has them all
        # A fourth connection of any kind is one too many.
        status, body = await asyncio.to_thread(
            http, "GET", f"{server.http_url}/api/runs/{run_id}/events", None, {"Accept": "text/event-stream"}
        )
        assert status == 503 and body["error"]["code"] == "overloaded", (status, body)
        await _wait_for(lambda: "ending an event stream whose client read nothing" in server.tail(50_000), 20)
        grown_mb = (server.rss_kb() - before) / 1024
        assert grown_mb < 30, f"the server grew by {grown_mb:.0f} MB"
        await _wait_for(lambda: server.tail(50_000).count("ending an event stream") == 3, 10)
        status, _ = await asyncio.to_thread(  # the ended streams no longer count
            http, "GET", f"{server.http_url}/api/runs/{run_id}/events?limit=1"
        )
        assert status == 200
        for _, writer in streams:
            writer.close()


# ---- 5. work a client can make the event loop do ----------------------------------------


async def test_a_pattern_that_backtracks_costs_its_sender_a_clear_error_not_everyone_seconds(
    served: ServerProcess,
) -> None:
    c, other = await Client.connect(served.url), await Client.connect(served.url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await c.request({"type": "start", "workflow": "patterned", "input": {"code": "a" * 40 + "b"}})
    assert loop.time() - started < 1.0
    assert reply["type"] == "error" and reply["code"] == "invalid_input" and "pattern" in reply["message"], reply
    assert (await other.request({"type": "ping"}, timeout=1))["type"] == "pong"
    ok = await c.request({"type": "start", "workflow": "patterned", "input": {"code": "aaa"}})
    assert ok["type"] == "started"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")
async def test_listing_runs_with_large_inputs_does_not_stall_other_clients(
    new_server: Callable[..., ServerProcess],
) -> None:
    with new_server() as server:
        loaders = [await Client.connect(server.url) for _ in range(4)]
        big = {"text": "x" * 200_000}

        async def load(c: Client) -> list[str]:
            return [await c.start("echo", big, subscribe=False) for _ in range(30)]

        ids = [run_id for batch in await asyncio.gather(*(load(c) for c in loaders)) for run_id in batch]
        watcher = await Client.connect(server.url)
        for run_id in ids[-3:]:
            await watcher.request({"type": "subscribe", "run_id": run_id})
            await watcher.until_terminal(run_id)
        listers = loaders[:2]
        other = await Client.connect(server.url)
        loop = asyncio.get_running_loop()
        stop = loop.time() + 4
        rtts: list[float] = []

        async def list_forever(c: Client) -> int:
            pages = 0
            while loop.time() < stop:
                page = await c.request({"type": "list_runs", "limit": 500}, timeout=30)
                assert page["type"] == "runs", page
                pages += 1
            return pages

        async def ping() -> None:
            while loop.time() < stop:
                sent = loop.time()
                await other.request({"type": "ping"}, timeout=30)
                rtts.append(loop.time() - sent)
                await asyncio.sleep(0.02)

        *pages, _ = await asyncio.gather(*(list_forever(c) for c in listers), ping())
        rtts.sort()
        p99 = rtts[int(len(rtts) * 0.99)]
        assert p99 < 0.1, f"another client's ping p99 was {p99:.2f} s while listing ({pages} pages)"
        page = await other.request({"type": "list_runs", "limit": 500})
        assert len(page["runs"]) == 120 and all(r["input"]["truncated"] for r in page["runs"])
