"""The first hour (issue 26): what a new user meets, each rough edge with a test that fails
without its fix: secrets never shown, addresses and database URLs as people type them,
make's variables and a port in use, commands as invoked, the live view's clock, runs --watch
after a reconnect, the Agno example offline, a quieter start. The dashboard's details are
in test_dashboard_details.py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import websockets

from client import Client
from client.__main__ import UsageError, read_input
from client.servers import ws_url
from client.view import RECONNECTING
from server import SqliteDb, Step, Workflow
from server.redaction import redact
from server.store import StoreError
from server.store.urls import parse_db_url

from .harness import ROOT, ServerProcess, free_port
from .screen import Terminal


def test_one_redaction_hides_passwords_and_query_values() -> None:
    assert redact("postgresql://app:s3cret@db:5432/runs") == "postgresql://app:***@db:5432/runs"
    assert redact("store postgres://u:p%40ss@h/d (node a)") == "store postgres://u:***@h/d (node a)"
    assert redact("GET /api/runs/r/events?token=abc.def&after=3") == "GET /api/runs/r/events?token=***&after=***"
    assert (
        redact("sqlite:///data/x.db and http://127.0.0.1:8000/ws") == "sqlite:///data/x.db and http://127.0.0.1:8000/ws"
    )


def test_a_new_database_says_so_once_and_no_token_says_who_can_reach_it(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "new.db").start()
    server.stop()
    log = server.tail(20000)
    assert log.count("created (schema version") == 1 and "migrated" not in log
    assert "open to this machine only (127.0.0.1)" in log and "unless --host" not in log
    server.start()  # an existing database: nothing to say about its schema
    server.stop()
    assert server.tail(20000).count("created (schema version") == 1


def test_a_dsn_s_password_is_not_logged(postgres: Any, tmp_path: Path) -> None:
    """A node on PostgreSQL logs where it serves and its store, without the password (the
    test cluster trusts local connections: the password is taken and not checked)."""
    url = postgres.new_database().replace("postgres@", "postgres:TOPSECRET@", 1)
    assert "TOPSECRET" in url
    node = ServerProcess.node(url, tmp_path, "n1").start()
    node.stop()
    log = node.tail(20000)
    assert "runcast serving" in log and "postgres:***@" in log, log[-2000:]
    assert "TOPSECRET" not in log
    bad = url.replace(f":{postgres.port}/", ":1/")  # refused at once: its error names no password either
    done = subprocess.run(
        [sys.executable, "-m", "server", "--port", str(free_port()), "--db", bad],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "TOPSECRET" not in done.stdout + done.stderr


# ---- addresses as people type them (item 2) ----------------------------------------------


def test_server_addresses_are_read_as_people_paste_them() -> None:
    assert ws_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws"  # the dashboard's address
    assert ws_url("https://runs.example.com/") == "wss://runs.example.com/ws"
    assert ws_url("http://127.0.0.1:8000/#/runs/r1") == "ws://127.0.0.1:8000/ws"  # a run's page
    assert ws_url("localhost:8000") == "ws://localhost:8000/ws"
    assert ws_url("ws://h:1/ws?token=t") == "ws://h:1/ws?token=t"
    assert ws_url("wss://h/proxy/ws") == "wss://h/proxy/ws"  # a path is the user's
    for wrong in ("ftp://h/ws", "http://", "ws:///ws"):
        with pytest.raises(ValueError, match="not a server address"):
            ws_url(wrong)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )


async def test_a_wrong_path_is_not_found_and_the_dashboard_s_address_works(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "x.db") as server:
        for pasted in (server.http_url, server.http_url + "/", f"127.0.0.1:{server.port}"):
            done = cli("workflows", "--json", "--url", pasted)
            assert done.returncode == 0 and '"name":"echo"' in done.stdout, (pasted, done.stderr)
        done = cli("workflows", "--url", f"ws://127.0.0.1:{server.port}/dash")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "HTTP 404: no WebSocket endpoint there; check the URL (it ends in /ws)" in done.stderr, done.stderr
        assert "token" not in done.stderr
        with pytest.raises(websockets.InvalidStatus) as refused:  # what a program hears
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/api/runs"):
                pass
        assert refused.value.response.status_code == 404
        assert b"no WebSocket endpoint at /api/runs; runcast's is /ws" in refused.value.response.body
        done = cli("workflows", "--url", "ftp://127.0.0.1/ws")
        assert done.returncode == 2 and "'ftp://127.0.0.1/ws' is not a server address" in done.stderr
        done = cli("workflows", env={**os.environ, "RUNCAST_URL": "ftp://127.0.0.1/ws"})
        assert done.returncode == 2 and "RUNCAST_URL: 'ftp://127.0.0.1/ws' is not a server address" in done.stderr
        done = cli("workflows", "--json", env={**os.environ, "RUNCAST_URL": server.http_url})  # as pasted, too
        assert done.returncode == 0 and '"name":"echo"' in done.stdout, done.stderr


# ---- database URLs as people type them (item 3) ------------------------------------------


def test_database_urls_are_read_as_sqlalchemy_and_agno_read_them() -> None:
    assert parse_db_url("runs.db") == ("sqlite", "runs.db")
    assert parse_db_url("/tmp/a#b?.db") == ("sqlite", "/tmp/a#b?.db")  # a path is a path
    assert parse_db_url("sqlite:///data/x.db") == ("sqlite", "data/x.db")  # relative, as SQLAlchemy
    assert parse_db_url("sqlite:////var/x.db") == ("sqlite", "/var/x.db")  # absolute: four slashes
    assert parse_db_url("sqlite+aiosqlite:///tmp/agno.db") == ("sqlite", "tmp/agno.db")
    assert parse_db_url("sqlite:///my%20runs.db") == ("sqlite", "my runs.db")
    assert parse_db_url("postgresql+psycopg://ai:ai@h:5532/ai") == ("postgresql", "postgresql://ai:ai@h:5532/ai")
    assert parse_db_url("postgres://u@h/d") == ("postgresql", "postgres://u@h/d")
    assert parse_db_url("mysql://u@h/d") == ("mysql", "mysql://u@h/d")  # refused by backend_for, by name
    refused = [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:///x.db?mode=ro", "no options"),
    ]
    for wrong, says in refused:
        with pytest.raises(StoreError, match=says):
            parse_db_url(wrong)


def test_a_server_opens_the_file_the_url_names_and_no_other(tmp_path: Path) -> None:
    absolute = tmp_path / "abs" / "runs.db"
    with ServerProcess(f"sqlite:///{absolute}", log_path=tmp_path / "abs.log") as server:
        assert absolute.exists()
        assert f"(store {absolute})" in server.tail()  # said as the absolute path it is
    hashed = tmp_path / "a#b.db"
    with ServerProcess(hashed):
        pass
    names = {p.name for p in tmp_path.iterdir()}
    assert names >= {"a#b.db", "a#b.db.lock"} and not names & {"a", "a.lock"}, names  # not cut at the '#'


# ---- ports and flags through make (item 4) -----------------------------------------------


def test_make_run_takes_port_host_db_and_args_and_installs_no_test_tools() -> None:
    done = subprocess.run(
        ["make", "-n", "-B", "run", "PORT=9001", "HOST=0.0.0.0", "DB=./data/other.db", "ARGS=--token s3cret"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "-m server --host '0.0.0.0' --port '9001' --db './data/other.db' --token s3cret" in done.stdout
    installs = [line for line in done.stdout.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all(line.endswith("-e .") for line in installs), installs  # not '.[test]'


def test_a_port_in_use_is_said_first_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "server", "--port", str(port), "--db", str(tmp_path / "x.db")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr  # one line, exit 1 like every start failure
    assert f"port {port} is in use on 127.0.0.1" in lines[0] and f"--port {port + 1}" in lines[0], lines
    assert not list(tmp_path.iterdir())  # said before anything was made


# ---- commands that work where they are suggested (item 5) --------------------------------


def outside_the_venv() -> dict[str, str]:
    """The environment of a shell where the venv is not active (its bin/ not on PATH)."""
    venv_bin = os.path.dirname(sys.executable)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.abspath(p) != venv_bin]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return env | {"PATH": os.pathsep.join(path)}


def test_suggested_commands_run_as_printed_outside_the_venv(tmp_path: Path) -> None:
    """The hints and --help say the command as invoked; and the start lists the workflows
    of --workflows, runcast's as well as Agno's (item 10)."""
    env = outside_the_venv()
    invoked = os.path.relpath(sys.executable, ROOT)
    usage = cli("--help", env=env).stdout
    assert usage.startswith(f"usage: {invoked} -m client "), usage[:200]
    with ServerProcess(tmp_path / "x.db", "--workflows", "examples/approval.py") as server:
        assert "workflow 'approval' served, its steps: 'draft', 'review', 'decide'" in server.tail()
        cmd = [sys.executable, "-m", "client", "run", "approval", "--no-input", "--url", server.url]
        with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
            assert run.stderr is not None
            hint = run.stderr.readline()
            assert "answer with: " in hint, hint
            command = hint.split("answer with: ", 1)[1].strip()
            assert command.startswith(f"{invoked} -m client respond "), command
            answered = subprocess.run(
                f"{command} --url {server.url}", shell=True, cwd=ROOT, env=env, capture_output=True, text=True
            )
            assert answered.returncode == 0, answered.stderr
            assert run.wait(30) == 0


def test_the_client_says_which_server_failed_without_its_token() -> None:
    done = cli("workflows", "--url", f"ws://127.0.0.1:{free_port()}/ws?token=TOPSECRET")
    assert done.returncode == 2 and "cannot connect to ws://127.0.0.1:" in done.stderr, done.stderr
    assert "/ws?token=***" in done.stderr and "TOPSECRET" not in done.stderr
    assert "nothing is listening there; is the server running, and is this its address?" in done.stderr


# ---- the live view keeps time (item 6) ---------------------------------------------------


def test_the_live_view_keeps_time_and_says_when_it_heard_nothing(tmp_path: Path) -> None:
    with (
        ServerProcess(tmp_path / "x.db") as server,
        Terminal(server, "run", "sleep", "--input", '{"seconds": 11}') as screen,
    ):
        screen.expect("running")
        time.sleep(3)
        screen.expect("no event for 10s (a long step, or a server that stalled)", timeout=15)
        shown = [float(t) for t in re.findall(r"running\s+(\d+\.\d)s", screen.text)]
        assert shown and max(shown) >= 9.0, shown  # the step's time moved with no event
        assert screen.wait() == 0


def test_a_server_lost_while_a_question_is_open_is_said_below_it(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "x.db", "--workflows", "examples/approval.py").start()
    try:
        with Terminal(server, "run", "approval") as screen:
            screen.expect("review asks: Publish this draft?")
            assert re.search(r"review\s+waiting\s+since \d\d:\d\d:\d\d", screen.text)  # not a frozen 0.0s
            screen.expect("[y/n]")
            server.kill()
            screen.expect("connection lost: reconnecting; the events will continue where they left off")
            server.restart()
            screen.expect("connected again")
            screen.type("y")
            screen.expect("note (Note) [optional, Enter skips]")
            screen.type("")
            screen.expect("sent; the run is")
            assert screen.wait() == 0
    finally:
        server.stop()


# ---- runs --watch after a reconnect (item 7) ---------------------------------------------


async def test_runs_watch_after_a_reconnect_prints_only_what_changed_since_it_began(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "x.db").start()
    try:
        async with Client(server.url) as c:
            before = [e async for e in c.run("echo", {"old": True})][-1]["run_id"]  # ended before the watch
        cmd = [sys.executable, "-m", "client", "runs", "--watch", "--json", "--url", server.url]
        watch = await asyncio.create_subprocess_exec(
            *cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert watch.stdout is not None and watch.stderr is not None
        try:
            await asyncio.sleep(1.5)  # subscribed (it prints nothing: nothing changed)
            server.kill()
            assert (await asyncio.wait_for(watch.stderr.readline(), 20)).decode().strip() == RECONNECTING
            server.restart()
            async with Client(server.url) as c:
                after = [e async for e in c.run("echo", {"new": True})][-1]["run_id"]
            lines = []
            while not lines or lines[-1]["status"] != "completed":
                lines.append(json.loads(await asyncio.wait_for(watch.stdout.readline(), 20)))
            assert {line["run_id"] for line in lines} == {after}, lines  # not `before` again
        finally:
            watch.terminate()
            await watch.wait()
        assert before != after
    finally:
        server.stop()


# ---- the Agno example without a key (item 8) ---------------------------------------------


async def test_the_agno_example_runs_offline_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with ServerProcess(tmp_path / "x.db", "--workflows", "examples/agno_workflow.py") as server:
        async with Client(server.url) as c:
            events = [e async for e in c.run("Content Creation Workflow", "AI trends in 2024")]
    assert events[-1]["event"] == "run_completed", events[-1]
    calls = {e["data"]["tool"] for e in events if e["event"] == "tool_call_completed"}
    assert calls == {"delegate_task_to_member", "get_top_hackernews_stories", "web_search"}, calls
    text = "".join(e["data"]["delta"] for e in events if e["event"] == "step_output")
    assert "Offline answer (gpt-5-mini, no model was asked) to: AI trends in 2024" in text
    assert "- a tool said: " in text  # the leader's answer names what its members returned


async def test_sqlitedb_takes_the_db_url_agno_users_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    db = SqliteDb(db_url="sqlite:///runs/agno.db")  # three slashes: relative, as in SQLAlchemy
    hello = Workflow(name="hello", steps=[Step("greet", lambda step_input: f"hi {step_input.input}")], db=db)
    try:
        run = await hello.arun(input="ada", background=True)
        while not run.has_completed():
            await asyncio.sleep(0.02)
            run = await hello.aget_run(run.run_id) or run
        assert run.status == "completed" and run.content == "hi ada"
    finally:
        await db.close()
    assert (tmp_path / "runs" / "agno.db").is_file()
    with pytest.raises(ValueError, match="for PostgreSQL use PostgresDb"):
        SqliteDb(db_url="postgresql://u@h/d")


def test_a_workflows_file_that_needs_a_missing_package_says_what_to_install(tmp_path: Path) -> None:
    flows = tmp_path / "flows.py"
    flows.write_text("import not_installed_anywhere_xyz\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "--port",
            str(free_port()),
            "--db",
            str(tmp_path / "x.db"),
            "--workflows",
            str(flows),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "it imports 'not_installed_anywhere_xyz', which this Python does not have" in done.stderr
    assert f"{sys.executable} -m pip install not_installed_anywhere_xyz" in done.stderr


def test_an_input_file_that_is_not_there_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "input.json"
    with pytest.raises(UsageError, match=f"--input @{missing}: cannot read '{missing}': No such file or directory"):
        read_input(f"@{missing}")
