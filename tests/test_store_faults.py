"""Real storage faults: bad database files at start, a disk that fills up mid-run, SIGTERM
while it is full. Real servers, real files, a real (small) tmpfs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import ROOT, ServerProcess, free_port, http

START_TIMEOUT = 10  # a refused database must make the server exit well within this


def run_server_once(db: Path, *, prefix: tuple[str, ...] = (), cwd: Path = ROOT) -> tuple[int, str, float]:
    """`python -m server --db db` to its end: (exit code, output, seconds)."""
    cmd = [*prefix, sys.executable, "-m", "server", "--db", str(db), "--port", str(free_port())]
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=START_TIMEOUT * 2, check=False)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace"), time.monotonic() - started


def assert_refused(db: Path, *advice: str, prefix: tuple[str, ...] = (), cwd: Path = ROOT) -> str:
    """The server exits non-zero, fast, with one error line naming the file and what to do."""
    code, output, seconds = run_server_once(db, prefix=prefix, cwd=cwd)
    lines = output.strip().splitlines()
    assert code != 0, output
    assert seconds < START_TIMEOUT, seconds
    assert "Traceback" not in output, output
    assert len(lines) == 1 and " ERROR " in lines[0], output
    assert str(db) in lines[0], lines[0]
    assert any(a in lines[0] for a in advice), lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file in `folder` (not below) and its sha256: to show that nothing changed
    (but a -shm file's content, which any reader of a WAL database may write)."""
    return {p.name: digest(p) for p in folder.iterdir()}


def digest(path: Path) -> str:
    if not path.is_file():
        return "dir"
    return "shm" if path.name.endswith("-shm") else hashlib.sha256(path.read_bytes()).hexdigest()


def wait_finished(server: ServerProcess, run_id: str, timeout: float = 10) -> dict[str, object]:
    """Poll GET /api/runs/{id} until the run has finished; its snapshot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, run = http("GET", f"{server.http_url}/api/runs/{run_id}")
        if status == 200 and run["status"] in ("completed", "failed", "cancelled"):
            return dict(run)
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} did not finish")


def make_runcast_db(path: Path, runs: int = 20) -> None:
    """A real runcast database with finished runs, checkpointed into the one file."""
    server = ServerProcess(path).start()
    try:
        for _ in range(runs):
            status, run = http("POST", server.http_url + "/api/runs", {"workflow": "echo", "input": {"i": "x" * 500}})
            assert status == 202, run
            wait_finished(server, run["run_id"])
    finally:
        assert server.stop() == 0
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == runs
    for extra in (path.with_name(path.name + s) for s in ("-wal", "-shm", ".lock")):
        extra.unlink(missing_ok=True)


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def other_application(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # the kind that grows -wal/-shm files when opened carelessly
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada'), ('grace')")
        conn.commit()


def newer_schema(path: Path) -> None:
    """What a newer runcast leaves when killed: its schema bump still in the -wal file."""
    source = path.with_name("newer-source.db")
    make_runcast_db(source, runs=1)
    with contextlib.closing(sqlite3.connect(source)) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
        for suffix in ("", "-wal", "-shm"):
            shutil.copyfile(f"{source}{suffix}", f"{path}{suffix}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{source}{suffix}").unlink(missing_ok=True)
    assert Path(f"{path}-wal").stat().st_size > 0


def truncated(path: Path) -> None:
    make_runcast_db(path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


BAD_FILES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "random-bytes": (random_bytes, ("not an SQLite database; move it away or choose another --db",)),
    "other-application": (other_application, ("another application's SQLite database; choose another --db",)),
    "newer-schema": (newer_schema, ("schema version 99", "upgrade runcast")),
    "truncated": (truncated, ("truncated); restore it", "malformed); move it away or restore it")),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_database_file_is_refused_plainly_and_left_unchanged(tmp_path: Path, case: str) -> None:
    make, advice = BAD_FILES[case]
    db = tmp_path / f"{case}.db"
    make(db)
    before = snapshot(tmp_path)
    line = assert_refused(db, *advice)
    assert snapshot(tmp_path) == before, line  # not a byte changed, and no -wal, -shm or .lock beside it


def test_a_directory_as_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "folder.db"
    db.mkdir()
    assert_refused(db, "is a directory; give --db the path of a file")
    assert list(db.iterdir()) == [] and snapshot(tmp_path) == {"folder.db": "dir"}


def nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def folder_for_nobody() -> Iterator[Path]:
    """A folder `nobody` owns, with a copy of the server package in it (the checkout may
    be where `nobody` cannot read)."""
    folder = Path(tempfile.mkdtemp(prefix="runcast-nobody-"))
    try:
        shutil.copytree(ROOT / "server", folder / "server", ignore=shutil.ignore_patterns("__pycache__"))
        uid, gid = nobody()
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, uid, gid)
        folder.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_database_this_process_cannot_write_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:  # an ordinary user: permissions apply as they are
        db = tmp_path / "readonly.db"
        make_runcast_db(db)
        db.chmod(0o444)
        assert_refused(db, "is not writable by this process", "fix its permissions")
        return
    # Root ignores file permissions: run the server as `nobody` on a file nobody owns, mode 0444.
    uid, gid = nobody()
    prefix = ("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups")
    with folder_for_nobody() as folder:
        db = folder / "readonly.db"
        make_runcast_db(db)
        os.chown(db, uid, gid)
        db.chmod(0o444)
        before = snapshot(folder)
        assert_refused(db, "is not writable by this process", prefix=prefix, cwd=folder)
        assert snapshot(folder) == before


def test_an_empty_file_becomes_a_new_database(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.touch()
    server = ServerProcess(db).start()
    try:
        status, run = http("POST", server.http_url + "/api/runs", {"workflow": "echo", "input": {"hi": 1}})
        assert status == 202, run
        assert wait_finished(server, run["run_id"])["status"] == "completed"
    finally:
        assert server.stop() == 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT status FROM runs").fetchall() == [("completed",)]


def test_a_database_in_use_by_another_server_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    first = ServerProcess(db).start()
    try:
        assert first.proc is not None
        line = assert_refused(db, "stop it first, or give this one another --db")
        assert f"in use by another runcast process (pid {first.proc.pid})" in line
        status, _ = http("GET", first.http_url + "/healthz")
        assert status == 200  # the one that runs it is untouched
    finally:
        assert first.stop() == 0
