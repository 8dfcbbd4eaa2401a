"""Client failover over a list of server URLs: the rotation alone, then real servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import DEFAULT_URL, AuthFailed, Client, ConnectionFailed, SyncClient
from client.__main__ import parse_args
from client.servers import Servers, split_urls

from .harness import ROOT, ServerProcess, assert_log, free_port
from .test_client_faults import FakeServer, close_with

A, B, C = "ws://a/ws", "ws://b/ws", "ws://c/ws"


# ---- the rotation, without sockets ----------------------------------------------------------


def test_split_urls_takes_lists_and_commas_in_order_once_each() -> None:
    assert split_urls(A) == (A,)
    assert split_urls(f"{A}, {B},,") == (A, B)
    assert split_urls([f"{A},{B}", C, A]) == (A, B, C)
    with pytest.raises(ValueError):
        split_urls(" , ")
    with pytest.raises(ValueError):
        split_urls([])


def test_rotation_starts_at_the_first_and_moves_on_past_the_lost_one() -> None:
    servers = Servers([A, B, C])
    assert servers.current == A and len(servers) == 3
    assert servers.round(move_on=False) == [A, B, C]  # the first connect
    assert servers.round(move_on=True) == [B, C, A]  # A was lost: it is tried last
    servers.use(B)
    assert servers.current == B
    assert servers.round(move_on=True) == [C, A, B]
    servers.use(A)
    assert servers.round(move_on=True) == [B, C, A]


def test_one_url_is_a_round_of_one() -> None:
    servers = Servers(A)
    assert servers.round(move_on=False) == servers.round(move_on=True) == [A]


def test_cli_url_is_repeatable_comma_separated_or_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNCAST_URL", raising=False)
    assert parse_args(["workflows"]).url == [DEFAULT_URL]
    assert parse_args(["--url", f"{A},{B}", "workflows", "--url", C]).url == [C]  # after the command wins
    assert parse_args(["--url", A, "--url", f"{B}, {C}", "workflows"]).url == [A, B, C]
    assert parse_args(["run", "echo", "--url", A, "--url", B]).url == [A, B]
    monkeypatch.setenv("RUNCAST_URL", f"{A}, {B}")
    assert parse_args(["workflows"]).url == [A, B]
    assert parse_args(["workflows", "--url", C]).url == [C]


# ---- real servers -----------------------------------------------------------------------------


class States:
    """An on_state callback that records every state and lets a test wait for the next ones."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, state: str) -> None:
        self.seen.append(state)
        self._changed.set()

    async def connected(self, times: int, timeout: float = 5) -> None:
        """Wait until the client has said "connected" `times` times in all."""

        async def wait() -> None:
            while self.seen.count("connected") < times:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two real servers, each with its own SQLite file (they share no runs)."""
    a = ServerProcess(tmp_path / "a.db").start()
    try:
        b = ServerProcess(tmp_path / "b.db").start()
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


async def echo_on(client: Client, value: object) -> None:
    """A new start of `echo` runs to the end on the server the client is on now."""
    events = [e async for e in client.run("echo", value)]
    assert_log(events)
    assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == value


async def test_a_killed_node_fails_over_to_the_next_and_back(two_servers: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = two_servers
    states = States()
    async with Client([a.url, b.url], on_state=states, max_backoff=0.2) as c:
        await states.connected(1)
        assert c.url == a.url
        await echo_on(c, "on a")
        a.kill()
        await states.connected(2)
        assert states.seen == ["connected", "reconnecting", "connected"] and c.url == b.url
        await c.ping()
        await echo_on(c, "on b")
        await asyncio.to_thread(a.restart)
        b.kill()
        await states.connected(3)
        assert states.seen[3:] == ["reconnecting", "connected"] and c.url == a.url
        await c.ping()
        await echo_on(c, "on a again")


async def test_a_dead_first_url_costs_no_backoff(server: ServerProcess) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/ws"
    began = time.monotonic()
    async with Client([dead, server.url], max_backoff=5) as c:
        assert time.monotonic() - began < 1 and c.url == server.url
        await c.ping()
    began = time.monotonic()
    with SyncClient(f"{dead},{server.url}") as sync:
        assert time.monotonic() - began < 1
        assert "echo" in {w["name"] for w in sync.list_workflows()}


async def test_no_reachable_url_names_every_one() -> None:
    dead = [f"ws://127.0.0.1:{free_port()}/ws", f"ws://127.0.0.1:{free_port()}/ws"]
    with pytest.raises(ConnectionFailed, match="no server could be reached") as info:
        async with Client(dead):
            pass
    assert all(url in str(info.value) for url in dead)


async def test_an_auth_failure_on_one_node_is_raised_not_skipped(server: ServerProcess) -> None:
    async with FakeServer(close_with(1008, "bad token")) as refusing:
        with pytest.raises(AuthFailed, match="token"):
            async with Client([refusing.url, server.url], token="wrong"):
                pass
        assert refusing.connections == 1


def test_cli_runs_on_the_live_server_of_a_list(server: ServerProcess) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/ws"
    cmd = [sys.executable, "-m", "client", "run", "echo", "--input", '{"a": 1}', "--json"]
    env = {k: v for k, v in os.environ.items() if k != "RUNCAST_URL"}
    for extra, env_url in (["--url", f"{dead},{server.url}"], None), ([], f"{dead}, {server.url}"):
        run_env = env if env_url is None else {**env, "RUNCAST_URL": env_url}
        done = subprocess.run([*cmd, *extra], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines()]
        assert_log(events)
        assert events[-1]["data"]["output"] == {"a": 1}


# TODO(cluster): needs two nodes on one PostgreSQL database (the backend is not in yet). Start a
# long `count` run through node A, follow it with a Client([A, B]), kill -9 A mid-run, and assert
# the iterator goes on through B from its last seq with no gap and no repeat (assert_log on the
# whole list, seqs as stored) after `run_resumed` with reason "takeover". With two SQLite servers
# the run does not exist on B, so this cannot be written honestly without the cluster.
