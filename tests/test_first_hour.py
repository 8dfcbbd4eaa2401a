"""The first hour (issue 26), the parts done so far: what the server prints keeps no
secret (one redaction), a new database says so in one line, and the no-token warning
says who can reach the server as it was started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from server.redaction import redact

from .harness import ROOT, ServerProcess, free_port


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
