"""The client library and `python -m client` against a real server process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import pytest

from client import Client, Conflict, ConnectionFailed, InvalidInput, RunNotFound, SyncClient

from .harness import ROOT, ServerProcess, assert_log, stored_log


async def test_run_yields_exactly_the_stored_log(server: ServerProcess) -> None:
    async with Client(server.url) as c:
        events = [e async for e in c.run("count", {"n": 4, "delay": 0})]
        assert_log(events)
        assert events == [json.loads(f) for f in stored_log(server.db, events[0]["run_id"])]
        run = await c.poll(events[0]["run_id"])
        assert run["status"] == "completed" and run["output"] == {"count": 4}
        names = {w["name"] for w in await c.list_workflows()}
        assert {"echo", "count", "chain", "sleep", "fail", "content"} <= names
        runs, cursor = await c.list_runs(limit=1)
        assert [r["run_id"] for r in runs] == [run["run_id"]] and cursor is None


async def test_server_errors_are_typed(server: ServerProcess) -> None:
    async with Client(server.url) as c:
        with pytest.raises(RunNotFound):
            await c.poll("missing")
        with pytest.raises(InvalidInput) as info:
            await c.start("count", {"n": "many"})
        assert "n" in info.value.message
        started = await c.start("echo", 1, run_id="same-id")
        with pytest.raises(Conflict):
            await c.start("echo", 2, run_id="same-id")
        assert (await c.start("echo", 1, run_id="same-id"))["run_id"] == started["run_id"]


async def test_subscription_resumes_through_repeated_server_kills(server: ServerProcess) -> None:
    states: list[str] = []
    async with Client(server.url, on_state=states.append, max_backoff=0.2) as c:
        run = await c.start("count", {"n": 150, "delay": 0.01})
        events = []
        kills = 0
        async for event in c.subscribe(run["run_id"]):
            events.append(event)
            if len(events) in (20, 60, 100) and kills < 3:
                kills += 1
                server.kill()
                await asyncio.to_thread(server.restart)
        assert kills == 3 and states.count("reconnecting") == 3
        assert_log(events)
        assert last_attempt_progress(events) == list(range(1, 151))


def test_sync_client(server: ServerProcess) -> None:
    with SyncClient(server.url) as c:
        events = list(c.run("chain", {"n": 2, "delay": 0}))
        assert_log(events)
        assert events[-1]["data"]["output"] == 2
        assert c.poll(events[0]["run_id"])["status"] == "completed"


async def test_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        async with Client("ws://127.0.0.1:9/ws", reconnect=False):
            pass


def last_attempt_progress(events: list[dict]) -> list[int]:
    """The `current` values of the last attempt of the step (a kill makes the step run again)."""
    last_start = max(i for i, e in enumerate(events) if e["event"] == "step_started")
    return [e["data"]["current"] for e in events[last_start:] if e["event"] == "progress"]


def cli(server: ServerProcess, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "client", *args, "--url", server.url]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_run_prints_the_stored_log_and_exit_codes(server: ServerProcess) -> None:
    done = cli(server, "run", "echo", "--input", '{"a": [1, 2]}', "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert_log(lines)
    assert lines == [json.loads(f) for f in stored_log(server.db, lines[0]["run_id"])]
    assert cli(server, "run", "fail", "--input", '{"message": "x"}').returncode == 1
    assert cli(server, "run", "nope").returncode == 2
    assert cli(server, "run", "echo", "--input", "{bad").returncode == 2
    poll = cli(server, "poll", lines[0]["run_id"], "--json")
    assert poll.returncode == 0 and json.loads(poll.stdout)["output"] == {"a": [1, 2]}
    with subprocess.Popen(
        [sys.executable, "-m", "client", "run", "sleep", "--input", '{"seconds": 30}', "--url", server.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as started:
        assert started.stdout is not None
        run_id = json.loads(started.stdout.readline())["run_id"]
        assert cli(server, "cancel", run_id, "--json").returncode == 0
        assert started.wait(10) == 3


def test_cli_watch_survives_a_server_restart(server: ServerProcess) -> None:
    done = cli(server, "run", "count", "--input", '{"n": 1, "delay": 0}', "--json")
    assert done.returncode == 0
    with subprocess.Popen(
        [sys.executable, "-m", "client", "run", "count", "--input", '{"n": 60, "delay": 0.05}', "--url", server.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as watcher:
        assert watcher.stdout is not None and watcher.stderr is not None
        first = [json.loads(watcher.stdout.readline()) for _ in range(10)]
        server.kill()
        server.restart()
        rest = [json.loads(line) for line in watcher.stdout]
        assert watcher.wait(30) == 0
        assert "reconnecting" in watcher.stderr.read()
    assert_log(first + rest)
    assert last_attempt_progress(first + rest) == list(range(1, 61))


def test_cli_ctrl_c_detaches_or_cancels(server: ServerProcess) -> None:
    def start_and_interrupt(*extra: str) -> tuple[str, str, int]:
        cmd = [sys.executable, "-m", "client", "run", "sleep", "--input", '{"seconds": 30}', "--url", server.url]
        with subprocess.Popen([*cmd, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
            assert p.stdout is not None and p.stderr is not None
            first = json.loads(p.stdout.readline())  # the run is under way
            p.send_signal(signal.SIGINT)
            code = p.wait(10)
            return first["run_id"], p.stderr.read(), code

    run_id, err, code = start_and_interrupt()
    assert code == 130 and f"python -m client watch {run_id} --after" in err
    assert json.loads(cli(server, "poll", run_id, "--json").stdout)["status"] == "running"
    run_id, err, code = start_and_interrupt("--cancel-on-interrupt")
    assert code == 3 and "cancel requested" in err
    done = cli(server, "watch", run_id, "--json")
    assert done.returncode == 3 and json.loads(done.stdout.splitlines()[-1])["event"] == "run_cancelled"
