"""The runs feed (`subscribe_runs`, `run_changed`) over real sockets on real servers."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from client import Client as LibraryClient

from .harness import Client, ServerProcess, StalledClient, http

FINISHED = {"completed", "failed", "cancelled"}


def changes(client: Client, run_id: str | None = None) -> list[dict[str, Any]]:
    """The `run` of every run_changed frame received so far (of one run, if given)."""
    return [
        m["run"]
        for m in client.inbox
        if m.get("type") == "run_changed" and (run_id is None or m["run"]["run_id"] == run_id)
    ]


async def until_finished(client: Client, run_id: str, timeout: float = 20) -> list[dict[str, Any]]:
    """Read until a run_changed frame says the run finished; the run's frames."""
    await client.wait(
        lambda m: m.get("type") == "run_changed" and m["run"]["run_id"] == run_id and m["run"]["status"] in FINISHED,
        timeout,
    )
    return changes(client, run_id)


async def quiet(client: Client) -> None:
    """A round trip: whatever the server had queued for this client before it is in."""
    assert (await client.request({"type": "ping"}))["type"] == "pong"


def metric(server: ServerProcess, name: str) -> float:
    _, text = http("GET", server.http_url + "/metrics")
    text = text.decode() if isinstance(text, bytes) else str(text)
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_one_frame_per_change_with_the_current_step_in_seq_order(server: ServerProcess) -> None:
    watcher, starter = await Client.connect(server.url), await Client.connect(server.url)
    assert (await watcher.request({"type": "subscribe_runs"}))["type"] == "runs_subscribed"
    run_id = await starter.start("chain", {"n": 3, "delay": 0.15}, subscribe=False)
    frames = await until_finished(watcher, run_id)
    assert "steps" not in frames[0]
    assert frames[0]["status"] == "pending" and frames[0]["last_seq"] == 0 and frames[0]["current_step"] is None
    seqs = [f["last_seq"] for f in frames]
    assert seqs == sorted(set(seqs)), seqs  # strictly increasing
    steps = [f["current_step"] for f in frames if f["current_step"] is not None]
    assert [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s] == ["s1", "s2", "s3"]
    assert all(f["status"] == "running" for f in frames if f["current_step"] is not None)
    last = frames[-1]
    assert last["status"] == "completed" and last["current_step"] is None and last["output"] == 3
    assert (last["steps_done"], last["steps_total"]) == (3, 3)
    stored = (await starter.request({"type": "poll", "run_id": run_id}))["run"]
    assert last["last_seq"] == stored["last_seq"] and last["finished_at"] == stored["finished_at"]
    # Every frame says something new: no two in a row with the same status and step statuses.
    said = [(f["status"], f["current_step"], f["steps_done"]) for f in frames]
    assert all(a != b for a, b in itertools.pairwise(said)), said

    # 50 progress events change no status: they make no frames.
    run_id = await starter.start("count", {"n": 50, "delay": 0.002}, subscribe=False)
    frames = await until_finished(watcher, run_id)
    statuses = [f["status"] for f in frames]
    assert [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s] == ["pending", "running", "completed"]
    assert len(frames) <= 4, frames  # run_started and step_started are one commit, or two
    assert frames[-2]["current_step"] == "count" and frames[-1]["last_seq"] == 54


async def test_filters_a_run_leaving_them_and_a_second_subscribe_replacing_them(server: ServerProcess) -> None:
    watcher, starter = await Client.connect(server.url), await Client.connect(server.url)
    await watcher.request({"type": "subscribe_runs", "workflow": "chain"})
    echo = await starter.start("echo", "x")
    chain = await starter.start("chain", {"n": 1, "delay": 0.01}, subscribe=False)
    await until_finished(watcher, chain)
    await starter.until_terminal(echo)
    await quiet(watcher)
    assert {f["workflow"] for f in changes(watcher)} == {"chain"}

    # status "running": its frames while running, and one more as it leaves (completed).
    watcher.inbox.clear()
    watcher.used.clear()
    await watcher.request({"type": "subscribe_runs", "status": "running"})
    run_id = await starter.start("chain", {"n": 2, "delay": 0.1}, subscribe=False)
    frames = await until_finished(watcher, run_id)
    assert [f["status"] for f in frames][-1] == "completed"
    assert all(f["status"] == "running" for f in frames[:-1]) and len(frames) >= 2
    echo = await starter.start("echo", "y")  # now any workflow: the first filter was replaced
    await starter.until_terminal(echo)
    assert (await until_finished(watcher, echo))[-1]["status"] == "completed"

    # unsubscribe_runs: nothing more.
    assert (await watcher.request({"type": "unsubscribe_runs"}))["type"] == "runs_unsubscribed"
    count = len(changes(watcher))
    await starter.until_terminal(await starter.start("chain", {"n": 2, "delay": 0.01}))
    await quiet(watcher)
    assert len(changes(watcher)) == count


@pytest.mark.parametrize(
    "message",
    [
        {"type": "subscribe_runs", "status": "nope"},
        {"type": "subscribe_runs", "status": 3},
        {"type": "subscribe_runs", "status": ""},
        {"type": "subscribe_runs", "workflow": 5},
        {"type": "subscribe_runs", "workflow": ""},
    ],
)
async def test_bad_fields_are_bad_request(server: ServerProcess, message: dict[str, Any]) -> None:
    client = await Client.connect(server.url)
    reply = await client.request(message)
    assert reply["type"] == "error" and reply["code"] == "bad_request", reply
    assert (await client.request({"type": "subscribe_runs"}))["type"] == "runs_subscribed"


async def test_a_slow_reader_gets_the_newest_state_of_each_run_and_costs_one_frame_per_run(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--starts-per-second", "10000").start()
    slow = await StalledClient(server.url).open(server.port)
    fast, starter = await Client.connect(server.url), await Client.connect(server.url)
    try:
        slow.send({"type": "subscribe_runs", "id": "s"})
        await fast.request({"type": "subscribe_runs"})
        runs = 200
        started = time.monotonic()
        # Frames of some 10 KB (the input is in each), so that what sockets buffer is a small part.
        flow = {"n": 8, "delay": 0.005, "note": "x" * 10_000}
        ids = [await starter.start("chain", flow, subscribe=False) for _ in range(runs)]
        done: set[str] = set()
        while len(done) < runs:  # the fast reader sees every run end, whatever the slow one does
            msg = await fast.next(30)
            if msg.get("type") == "run_changed" and msg["run"]["status"] in FINISHED:
                done.add(msg["run"]["run_id"])
        fast_seconds = time.monotonic() - started
        frames_built = metric(server, "runcast_runs_feed_frames_total")
        pending = metric(server, "runcast_runs_feed_pending")
        # Some ten changes per run were made, but a reader that reads nothing holds one per run.
        assert frames_built > 5 * runs, frames_built
        assert pending <= runs, pending
        # Now it reads: every run's newest state, and each run's frames in seq order.
        deadline = time.monotonic() + 30
        newest: dict[str, dict[str, Any]] = {}
        while len([r for r in newest.values() if r["status"] == "completed"]) < runs:
            assert time.monotonic() < deadline, "the slow reader did not get every run's end"
            await slow.read_some(10)
            newest = {}
            for m in slow.messages:
                if m.get("type") == "run_changed":
                    run = m["run"]
                    before = newest.get(run["run_id"])
                    assert before is None or before["last_seq"] < run["last_seq"]
                    newest[run["run_id"]] = run
        received = sum(1 for m in slow.messages if m.get("type") == "run_changed")
        assert received < 0.6 * frames_built, (received, frames_built)  # the rest were replaced unsent
        for run_id in ids:
            stored = (await starter.request({"type": "poll", "run_id": run_id}))["run"]
            assert newest[run_id]["last_seq"] == stored["last_seq"] and newest[run_id]["status"] == "completed"
        assert fast_seconds < 30
        assert metric(server, "runcast_runs_feed_pending") == 0
    finally:
        slow.close()
        server.stop()


class Gate:
    """A TCP relay to a server that can cut every connection through it and refuse new ones
    for a while: the client loses its connection while the server and its runs go on."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = True
        self.port = 0
        self._links: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> Gate:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._links += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.open = False
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def test_reconnect_recipe_ends_with_the_database_state(server: ServerProcess) -> None:
    """The client library's subscribe_runs loses its connection while runs start, change and
    end; after it reconnects (subscribe_runs, then list_runs) its view is the database's."""
    gate = await Gate(server.port).start()
    direct = await Client.connect(server.url)
    view: dict[str, dict[str, Any]] = {}
    try:
        async with LibraryClient(gate.url, max_backoff=0.1) as client:
            long = [await direct.start("chain", {"n": 6, "delay": 0.15}, subscribe=False) for _ in range(2)]
            feed = client.subscribe_runs(current=True)
            wanted = set(long)

            async def watch() -> None:
                async for run in feed:
                    old = view.get(run["run_id"])
                    assert old is None or old["last_seq"] < run["last_seq"], (old, run)
                    view[run["run_id"]] = run
                    if len(wanted) == 4 and all(view.get(r, {}).get("status") == "completed" for r in wanted):
                        return

            watching = asyncio.create_task(watch())
            while not all(view.get(r, {}).get("current_step") for r in long):
                await asyncio.sleep(0.01)
            gate.cut()
            # Meanwhile: two runs start and end, and the long ones move on.
            short = [await direct.start("chain", {"n": 2, "delay": 0.01}) for _ in range(2)]
            for run_id in short:
                await direct.until_terminal(run_id)
            wanted |= set(short)
            gate.open = True
            await asyncio.wait_for(watching, 30)
            await feed.aclose()
        stored = {r["run_id"]: r for r in (await direct.request({"type": "list_runs"}))["runs"]}
        assert set(view) == set(stored) == wanted
        for run_id, run in stored.items():
            assert (view[run_id]["last_seq"], view[run_id]["status"]) == (run["last_seq"], run["status"])
            assert view[run_id]["current_step"] is None and view[run_id]["steps_done"] == run["steps_done"]
    finally:
        gate.close()


async def test_runs_watch_on_the_command_line(server: ServerProcess) -> None:
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "--url", server.url, "runs", "--watch", "--workflow", "chain",
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        starter = await Client.connect(server.url)
        deadline = time.monotonic() + 20
        while await asyncio.to_thread(metric, server, "runcast_runs_feed_watchers") < 1:  # the CLI is subscribed
            assert time.monotonic() < deadline, "runs --watch did not subscribe"
            await asyncio.sleep(0.05)
        run_id = await starter.start("chain", {"n": 2, "delay": 0.05}, subscribe=False)
        lines: list[str] = []
        assert cli.stdout is not None
        while not any("completed" in line for line in lines):
            lines.append((await asyncio.wait_for(cli.stdout.readline(), 10)).decode())
        parsed = [json.loads(line) for line in lines]  # not a terminal: one JSON object per line
        assert {p["run_id"] for p in parsed} == {run_id}
        # In order, ending completed; a reader that is behind is sent only a run's newest state,
        # so the pending one may be folded into a later one.
        statuses = [p["status"] for p in parsed]
        order = ["pending", "running", "completed"]
        assert statuses[-1] == "completed" and statuses == sorted(statuses, key=order.index), statuses
    finally:
        cli.terminate()
        await cli.wait()


async def test_a_feed_on_one_node_sees_a_run_on_another_within_a_second(pg_url: str, tmp_path: Path) -> None:
    a = ServerProcess.node(pg_url, tmp_path, "a").start()
    b = ServerProcess.node(pg_url, tmp_path, "b").start()
    try:
        ca, cb = await Client.connect(a.url), await Client.connect(b.url)
        await cb.request({"type": "subscribe_runs"})
        run_id = await ca.start("chain", {"n": 2, "delay": 0.3})
        seen: dict[str, float] = {}  # status -> when node b's feed said so
        happened: dict[str, float] = {}  # event -> when node a's subscriber had it

        async def feed_on_b() -> None:
            while "completed" not in seen:
                msg = await cb.next(10)
                if msg.get("type") == "run_changed" and msg["run"]["run_id"] == run_id:
                    seen.setdefault(msg["run"]["status"], time.monotonic())

        async def events_on_a() -> None:
            while "run_completed" not in happened:
                msg = await ca.next(10)
                if msg.get("type") == "event" and msg.get("run_id") == run_id:
                    happened.setdefault(msg["event"], time.monotonic())

        await asyncio.gather(feed_on_b(), events_on_a())
        frames = changes(cb, run_id)
        # The start and run_started may be committed in one transaction: then one frame says
        # the state after both (docs/protocol.md, the runs feed), and "pending" is never seen.
        assert frames[0]["status"] in ("pending", "running") and frames[-1]["status"] == "completed"
        assert "running" in seen
        assert [f["current_step"] for f in frames if f["current_step"]] == ["s1", "s2"]
        assert [f["last_seq"] for f in frames] == sorted({f["last_seq"] for f in frames})
        assert abs(seen["running"] - happened["run_started"]) < 1.0
        assert seen["completed"] - happened["run_completed"] < 1.0
    finally:
        a.stop()
        b.stop()
