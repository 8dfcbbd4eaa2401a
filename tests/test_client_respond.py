"""People in the loop, from the client's side: `Client.respond`, `runcast respond`, `runs
--status waiting`, and `run`/`watch` asking the person at a real pseudo-terminal, against a
real server running workflows that wait (tests/ask_flows.py)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from client import Client, Conflict, InvalidInput, RunNotFound, SyncClient

from .harness import ROOT, ServerProcess, assert_log
from .screen import Terminal

FLOWS = Path(__file__).parent / "ask_flows.py"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("asks") / "asks.db", "--workflows", str(FLOWS)).start()
    yield proc
    proc.stop()


async def open_requests(c: Client, run_id: str, count: int = 1) -> list[dict[str, Any]]:
    """Wait (on events, not time) until the run has asked `count` times; its open requests."""
    asked = 0
    async for event in c.subscribe(run_id):
        asked += event["event"] == "input_requested"
        if asked >= count:
            break
    run = await c.poll(run_id)
    assert run["status"] == "waiting", run
    return list(run["waiting_for"])


async def start_waiting(server: ServerProcess, workflow: str, count: int = 1) -> tuple[str, list[dict[str, Any]]]:
    async with Client(server.url) as c:
        run_id = (await c.start(workflow))["run_id"]
        return run_id, await open_requests(c, run_id, count)


async def finish(server: ServerProcess, run_id: str) -> dict[str, Any]:
    async with Client(server.url) as c:
        events = [e async for e in c.subscribe(run_id)]
        assert_log(events)
        return await c.poll(run_id)


def cli(server: ServerProcess, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "client", *args, "--url", server.url]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# ---- the library ---------------------------------------------------------------------


async def test_client_respond_answers_and_raises_typed_errors(server: ServerProcess) -> None:
    async with Client(server.url) as c:
        run_id = (await c.start("approval"))["run_id"]
        [request] = await open_requests(c, run_id)
        assert request["prompt"] == "Publish this?" and request["step"] == "approve"
        with pytest.raises(InvalidInput):
            await c.respond(run_id, request["request_id"], {"ok": "yes"})
        assert (await c.poll(run_id))["status"] == "waiting"  # a refused answer leaves it waiting
        with pytest.raises(Conflict):
            await c.respond(run_id, "never-asked", {"ok": True})
        with pytest.raises(RunNotFound):
            await c.respond("no-such-run", request["request_id"], {"ok": True})
        run = await c.respond(run_id, request["request_id"], {"ok": True})
        assert run["run_id"] == run_id and run["status"] != "waiting"
        with pytest.raises(Conflict):  # answered already, and not by a resent copy of this call
            await c.respond(run_id, request["request_id"], {"ok": True})
        events = [e async for e in c.subscribe(run_id)]
        received = [e["data"] for e in events if e["event"] == "input_received"]
        assert received == [{"request_id": request["request_id"], "value": {"ok": True}, "by": None}]
        assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == {"ok": True}


class CuttingProxy:
    """A TCP relay between a client and a real server that can lose the server's next
    bytes and cut both connections (what a network failure does to a reply in flight)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_next_reply = False
        self.port = 0

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bool) -> None:
            while data := await reader.read(65536):
                if reply and self.cut_next_reply:
                    self.cut_next_reply = False
                    client_out.transport.abort()
                    server_out.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(
            pipe(client_in, server_out, False), pipe(server_in, client_out, True), return_exceptions=True
        )


async def test_a_respond_whose_reply_was_lost_is_not_a_conflict(server: ServerProcess) -> None:
    states: list[str] = []
    async with CuttingProxy(server.port) as proxy, Client(proxy.url, on_state=states.append, max_backoff=0.2) as c:
        run_id = (await c.start("approval"))["run_id"]
        [request] = await open_requests(c, run_id)
        proxy.cut_next_reply = True  # the server takes the answer; its reply is lost, the client reconnects
        run = await c.respond(run_id, request["request_id"], {"ok": True})  # sent again: the server says conflict
        assert run["run_id"] == run_id and "reconnecting" in states
        with pytest.raises(Conflict):  # a different answer than the one recorded is a real conflict
            proxy.cut_next_reply = True
            await c.respond(run_id, request["request_id"], {"ok": False})
    assert (await finish(server, run_id))["output"] == {"ok": True}


def test_sync_client_respond(server: ServerProcess) -> None:
    run_id, [request] = asyncio.run(start_waiting(server, "approval"))
    with SyncClient(server.url) as c:
        assert c.respond(run_id, request["request_id"], {"ok": False})["run_id"] == run_id
        with pytest.raises(Conflict):
            c.respond(run_id, request["request_id"], {"ok": False})
    assert asyncio.run(finish(server, run_id))["output"] == {"ok": False}


# ---- runcast respond / runs ---------------------------------------------------------------


def test_cli_respond_answers_the_only_open_request(server: ServerProcess) -> None:
    run_id, [request] = asyncio.run(start_waiting(server, "approval"))
    bad = cli(server, "respond", run_id, "--value", "{ok: true}")
    assert bad.returncode == 2 and "--value is not valid JSON" in bad.stderr and "quote it" in bad.stderr
    refused = cli(server, "respond", run_id, "--value", '{"ok": "yes"}')
    assert refused.returncode == 2 and "invalid_input" in refused.stderr
    done = cli(server, "respond", run_id, "--value", '{"ok": true}', "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_id"] == run_id
    assert asyncio.run(finish(server, run_id))["output"] == {"ok": True}
    again = cli(server, "respond", run_id, "--value", '{"ok": true}')
    assert again.returncode == 2 and f"run {run_id} is not waiting for input (it is completed)" in again.stderr
    stale = cli(server, "respond", run_id, "--value", "true", "--request-id", request["request_id"])
    assert stale.returncode == 2 and "conflict" in stale.stderr


def test_cli_respond_to_several_open_requests_needs_the_request_id(server: ServerProcess) -> None:
    run_id, requests = asyncio.run(start_waiting(server, "two_reviews", count=2))
    ambiguous = cli(server, "respond", run_id, "--value", '{"ok": true}')
    assert ambiguous.returncode == 2 and "--request-id" in ambiguous.stderr
    for request in requests:
        assert f"{request['request_id']} (step {request['step']}: {request['prompt']})" in ambiguous.stderr
    listed = cli(server, "runs", "--status", "waiting", "--json")
    assert listed.returncode == 0, listed.stderr
    runs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert run_id in [r["run_id"] for r in runs] and {r["status"] for r in runs} == {"waiting"}
    [mine] = [r for r in runs if r["run_id"] == run_id]
    assert sorted(r["prompt"] for r in mine["waiting_for"]) == ["Legal ok?", "Style ok?"]
    with Terminal(server, "runs", "--status", "waiting") as screen:  # the text view, on a terminal
        screen.expect(run_id)
        screen.expect("waiting for input at")
        assert screen.wait() == 0
        assert "Legal ok?" in screen.text and "Style ok?" in screen.text
    with Terminal(server, "poll", run_id) as screen:
        screen.expect(f"run {run_id}  two_reviews  waiting")
        assert screen.wait() == 0
        for request in requests:
            line = f"waiting for input at {request['step']}: {request['prompt']}  (request {request['request_id']})"
            assert line in screen.text
    for request in requests:
        done = cli(server, "respond", run_id, "--request-id", request["request_id"], "--value", '{"ok": true}')
        assert done.returncode == 0, done.stderr
    assert asyncio.run(finish(server, run_id))["status"] == "completed"


def test_runs_watch_shows_what_a_run_that_goes_waiting_asks(server: ServerProcess) -> None:
    with Terminal(server, "runs", "--watch", "--status", "waiting") as screen:
        for _ in range(20):  # nothing shows that the feed is subscribed: a run that goes waiting before is missed
            run_id, _ = asyncio.run(start_waiting(server, "approval"))
            try:
                screen.expect(f"{run_id}  approval", timeout=2)
                break
            except AssertionError:
                asyncio.run(answer_and_finish(server, run_id))
        screen.expect("waiting for input at approve: Publish this?")
    assert asyncio.run(answer_and_finish(server, run_id))["status"] == "completed"


async def answer_and_finish(server: ServerProcess, run_id: str) -> dict[str, Any]:
    async with Client(server.url) as c:
        [request] = (await c.poll(run_id))["waiting_for"]
        await c.respond(run_id, request["request_id"], {"ok": True})
    return await finish(server, run_id)


# ---- run / watch at a terminal ---------------------------------------------------------


def test_run_at_a_terminal_asks_each_field_and_sends_the_answer(server: ServerProcess) -> None:
    with Terminal(server, "run", "order") as screen:
        screen.expect("order asks: Fill in the order")
        screen.expect("name (who signs)")
        screen.type("Ada")
        screen.expect("copies [a whole number]")
        screen.type("many")
        screen.expect("'many' is not a whole number")
        screen.type("0")  # a number, but the schema's minimum is 1: the server refuses it
        screen.expect('color [1-3, default 2 "green"]')
        screen.type("3")
        screen.expect("note [optional, Enter skips]")
        screen.type("")
        screen.expect("not accepted:")
        screen.expect("name (who signs) [default Ada]")  # asked again, the refused answer offered
        screen.type("")
        screen.expect("copies [a whole number, default 0]")
        screen.type("2")
        screen.expect('color [1-3, default 3 "blue"]')
        screen.type("")
        screen.expect("note")
        screen.type("by Friday")
        screen.expect("sent; the run is")
        screen.expect("completed")
        assert screen.wait() == 0
    run_id = screen.run_id
    run = asyncio.run(finish(server, run_id))
    assert run["output"] == {"name": "Ada", "copies": 2, "color": "blue", "note": "by Friday"}


def test_requests_asked_at_once_are_asked_one_after_the_other(server: ServerProcess) -> None:
    with Terminal(server, "run", "two_reviews") as screen:
        for _ in range(2):
            screen.expect(" asks: ")
            screen.expect("ok [y/n]")
            screen.type("y")
            screen.expect("sent; the run is")
        assert screen.wait() == 0
    assert "legal asks: Legal ok?" in screen.text and "style asks: Style ok?" in screen.text


def test_a_question_answered_elsewhere_is_called_off(server: ServerProcess) -> None:
    with Terminal(server, "run", "approval") as screen:
        screen.expect("approve asks: Publish this?")
        screen.expect("ok [y/n]")
        run_id = screen.run_id
        with SyncClient(server.url) as c:
            [request] = c.poll(run_id)["waiting_for"]
            c.respond(run_id, request["request_id"], {"ok": False})
        screen.expect('answered elsewhere: {"ok":false}')
        assert screen.wait() == 0
    assert "sent; the run is" not in screen.text


def test_a_request_with_a_deadline_shows_it_and_offers_its_default(server: ServerProcess) -> None:
    with Terminal(server, "run", "timed_ask") as screen:
        screen.expect("quick asks: How many? (answer within ")
        screen.expect("[a whole number, default 5]")
        screen.type("")
        screen.expect("sent; the run is")
        assert screen.wait() == 0
    run_id = screen.run_id
    assert asyncio.run(finish(server, run_id))["output"] == 5


def test_a_question_is_called_off_when_the_run_ends(server: ServerProcess) -> None:
    with Terminal(server, "run", "approval") as screen:
        screen.expect("ok [y/n]")
        run_id = screen.run_id
        with SyncClient(server.url) as c:
            c.cancel(run_id)
        screen.expect("the run ended (cancelled) before it was answered")
        assert screen.wait() == 3


def test_watch_replays_an_answered_request_without_asking(server: ServerProcess) -> None:
    async def first_answered() -> str:
        async with Client(server.url) as c:
            run_id = (await c.start("one_then_another"))["run_id"]
            [first] = await open_requests(c, run_id)
            await c.respond(run_id, first["request_id"], 1)
            await open_requests(c, run_id, count=2)
            return run_id

    run_id = asyncio.run(first_answered())
    with Terminal(server, "watch", run_id) as screen:
        screen.expect("second asks: Second?")
        screen.type("2")
        screen.expect("sent; the run is")
        assert screen.wait() == 0
    assert "first asks" not in screen.text
    assert asyncio.run(finish(server, run_id))["output"] == 2


def test_watch_from_a_late_seq_asks_what_a_cut_snapshot_holds_in_full(server: ServerProcess) -> None:
    run_id, requests = asyncio.run(start_waiting(server, "six_big_asks", count=6))
    last_seq = asyncio.run(finish_later(server, run_id))
    with Terminal(server, "watch", run_id, "--after", str(last_seq)) as screen:
        for _ in requests:
            screen.expect(" asks: Number ")
            screen.expect("[a whole number]")  # the schema as asked, not the snapshot's stand-in
            screen.type("7")
            screen.expect("sent; the run is")
        assert screen.wait() == 0
    assert asyncio.run(finish(server, run_id))["status"] == "completed"


async def finish_later(server: ServerProcess, run_id: str) -> int:
    """The run's last seq, checking that its snapshot did cut the requests short."""
    async with Client(server.url) as c:
        run = await c.poll(run_id)
        assert any(name.startswith("waiting_for[") for name in run.get("truncated", [])), run.get("truncated")
        return int(run["last_seq"])


def test_run_without_a_terminal_prints_the_respond_command(server: ServerProcess) -> None:
    cmd = [sys.executable, "-m", "client", "run", "approval", "--url", server.url]
    watcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert watcher.stdout is not None and watcher.stderr is not None
    reading = ThreadPoolExecutor(1)  # a read that never ends must fail the test, not hang it
    try:
        hint = reading.submit(watcher.stderr.readline).result(20)
        run_id = json.loads(watcher.stdout.readline())["run_id"]
        assert f"run {run_id} is waiting for input (step approve: Publish this?); answer with: " in hint
        command = shlex.split(hint.split("answer with: ", 1)[1])
        assert command[1:5] == ["-m", "client", "respond", run_id]  # python as invoked (tests/test_first_hour.py)
        done = subprocess.run(
            [sys.executable, *command[1:], "--url", server.url], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in reading.submit(watcher.stdout.read).result(30).splitlines()]
        assert watcher.wait(30) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.wait(10)
        reading.shutdown()
        watcher.stdout.close()
        watcher.stderr.close()
    assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == {"ok": True}
    assert [e["event"] for e in events].count("input_received") == 1


def test_no_input_at_a_terminal_prints_the_respond_command(server: ServerProcess) -> None:
    with Terminal(server, "run", "approval", "--no-input") as screen:
        screen.expect("is waiting for input (step approve: Publish this?); answer with: ")
        screen.expect("respond")
        run_id = re.search(r"run (c[0-9a-f]+) is waiting", screen.text)
        assert run_id is not None
        assert "ok [y/n]" not in screen.text
        done = cli(server, "respond", run_id.group(1), "--value", '{"ok": true}')
        assert done.returncode == 0, done.stderr
        assert screen.wait() == 0
