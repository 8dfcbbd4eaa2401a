"""Real storage faults: bad database files at start, a disk that fills up mid-run, SIGTERM
while it is full. Real servers, real files, a real (small) tmpfs."""

from __future__ import annotations

import asyncio
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

from .harness import ROOT, Client, ServerProcess, assert_log, events_over_http, free_port, http

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


# ---- a disk that fills up --------------------------------------------------------------

RUNS = 4
EVENTS_PER_RUN = 20_000
ROOM = 3 << 20  # bytes left free for the runs to fill: about a quarter of what they write
WAL_AFTER_CHECKPOINT = 8 << 20  # the -wal file shrinks back to about this once checkpointed (journal_size_limit)


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `folder` for the test's length."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("mounting a tmpfs needs root, and CI must run this test")
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(path: Path) -> int:
    """Write `path` until the disk is full (ENOSPC); how many bytes it holds."""
    chunk = b"\0" * 65536
    written = 0
    with open(path, "wb", buffering=0) as handle:
        try:
            while True:
                written += handle.write(chunk)
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC: the disk is full
        with contextlib.suppress(OSError):  # the last few bytes too
            while handle.write(b"\0" * 512):
                written += 512
    return written


async def wait_health(server: ServerProcess, status: int, timeout: float = 15) -> dict[str, object]:
    """Poll /healthz until it answers `status`; its body."""
    deadline = time.monotonic() + timeout
    code, body = None, None
    while True:
        with contextlib.suppress(OSError):  # not listening yet
            code, body = await asyncio.to_thread(http, "GET", server.http_url + "/healthz")
        if code == status:
            return dict(body)
        if time.monotonic() > deadline:
            raise AssertionError(f"/healthz stayed {code} {body}, not {status}; log: {server.tail()}")
        await asyncio.sleep(0.05)


async def stored_events(server: ServerProcess, run_id: str) -> list[dict[str, object]]:
    """Every stored event of a run over HTTP, in pages."""
    return await asyncio.to_thread(events_over_http, server.http_url, run_id)


async def wait_for_file(path: Path, ok: Callable[[int], bool], timeout: float = 30) -> None:
    """Wait until `ok(size of path)`."""
    deadline = time.monotonic() + timeout
    while not ok(path.stat().st_size):
        assert time.monotonic() < deadline, f"{path.name} is still {path.stat().st_size} bytes"
        await asyncio.sleep(0.1)


async def test_a_full_disk_degrades_loses_nothing_and_recovers_by_itself(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "64m") as disk:
        server = ServerProcess(disk / "runcast.db")
        server.log_path = tmp_path / "server.log"  # the log must not need the full disk
        server.start()
        try:
            await fill_and_recover(server, disk / "filler")
        finally:
            server.stop()


async def fill_and_recover(server: ServerProcess, filler: Path) -> None:
    # Runs of 20,000 events take well under a second: leave them a little room, which they fill.
    await asyncio.to_thread(fill, filler)
    os.truncate(filler, filler.stat().st_size - ROOM)
    clients = [await Client.connect(server.url, close_timeout=1) for _ in range(RUNS)]
    runs = await asyncio.gather(*(c.start("count", {"n": EVENTS_PER_RUN, "delay": 0}, batch=True) for c in clients))
    readers = [asyncio.create_task(c.until_terminal(r, timeout=60)) for c, r in zip(clients, runs, strict=True)]
    health = await wait_health(server, 503)
    assert health["status"] == "degraded" and "full" in str(health["reason"]), health
    probe = await Client.connect(server.url)
    refused = await probe.request({"type": "start", "workflow": "echo", "input": {}})
    assert refused["type"] == "error" and refused["code"] == "overloaded", refused
    code, body = await asyncio.to_thread(http, "POST", server.http_url + "/api/runs", {"workflow": "echo"})
    assert code == 503 and body["error"]["code"] == "overloaded", body
    await asyncio.sleep(1.5)  # stay full a while: retries, checkpoints and reads all fail meanwhile
    late = await Client.connect(server.url)
    await late.request({"type": "subscribe", "run_id": runs[0], "batch": True})
    code, page = await asyncio.to_thread(http, "GET", f"{server.http_url}/api/runs/{runs[0]}/events?limit=100")
    assert code == 200 and [e["seq"] for e in page["events"]] == list(range(1, 101)), page  # reads still work
    for c, run_id in zip(clients, runs, strict=True):
        seqs = [e["seq"] for e in c.events(run_id)]
        assert seqs == list(range(1, len(seqs) + 1)), run_id
    ended = [(r.exception() or r.result()[-1]) for r in readers if r.done()]
    assert not ended, f"a run ended while the disk was full: {ended}"
    filler.unlink()
    await wait_health(server, 200)
    logs = await asyncio.gather(*readers)
    for log_, run_id in zip(logs, runs, strict=True):
        assert_log(log_)
        assert log_[-1]["event"] == "run_completed" and log_[-1]["data"]["output"] == {"count": EVENTS_PER_RUN}
        assert await stored_events(server, run_id) == log_
    assert (await probe.start("echo", {"after": "recovery"})) is not None
    assert await late.until_terminal(runs[0]) == logs[0]  # subscribed while full: refilled from the store
    await wait_for_file(filler.with_name("runcast.db-wal"), lambda size: size <= WAL_AFTER_CHECKPOINT)
    for status in ("running", "pending"):
        code, body = await asyncio.to_thread(http, "GET", f"{server.http_url}/api/runs?status={status}")
        assert code == 200 and body["runs"] == [], body  # nothing left stuck
    text = server.log_path.read_text()
    assert text.count("store checkpoint failed") <= 1 and text.count("cannot write (") == 1, text[-3000:]
    assert server.stop() == 0, server.tail()
    server.restart()
    for log_, run_id in zip(logs, runs, strict=True):
        code, run = await asyncio.to_thread(http, "GET", f"{server.http_url}/api/runs/{run_id}")
        assert code == 200 and run["status"] == "completed" and run["last_seq"] == len(log_), run
        assert await stored_events(server, run_id) == log_


async def test_sigterm_with_the_disk_full_exits_promptly_and_runs_resume(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "64m") as disk:
        filler = disk / "filler"
        server = ServerProcess(disk / "runcast.db")
        server.log_path = tmp_path / "server.log"
        server.start()
        try:
            await asyncio.to_thread(fill, filler)
            os.truncate(filler, filler.stat().st_size - ROOM)
            clients = [await Client.connect(server.url, close_timeout=1) for _ in range(RUNS)]
            runs = await asyncio.gather(*(c.start("count", {"n": EVENTS_PER_RUN, "delay": 0}) for c in clients))
            await wait_health(server, 503)
            started = time.monotonic()
            code = await asyncio.to_thread(server.stop)
            seconds = time.monotonic() - started
            assert seconds < 6, server.tail()
            assert code == 0, server.tail()
            assert "closing with writes it could not commit" in server.tail(), server.tail()
            seen = {run_id: c.events(run_id) for c, run_id in zip(clients, runs, strict=True)}
            filler.unlink()
            server.restart()
            d = await Client.connect(server.url)
            for run_id in runs:
                await d.request({"type": "subscribe", "run_id": run_id, "batch": True})
            resumed = 0
            for run_id in runs:
                events = await d.until_terminal(run_id, timeout=30)
                assert_log(events)
                assert events[-1]["event"] == "run_completed", events[-1]
                kinds = [e["event"] for e in events]
                # a run that got to its end before the disk filled has nothing to resume
                assert kinds.count("run_resumed") <= 1, kinds[-5:]
                resumed += kinds.count("run_resumed")
                assert events[: len(seen[run_id])] == seen[run_id]  # what was shown was stored
                assert await stored_events(server, run_id) == events
            assert resumed >= 1
        finally:
            server.stop()


def test_a_new_database_on_a_full_disk_is_refused_plainly_and_leaves_nothing(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "4m") as disk:
        fill(disk / "filler")
        assert_refused(disk / "new.db", "No space left on device; free some space on its disk")
        assert_refused(disk / "made" / "for" / "it.db", "free some space on its disk")
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no .db, .lock, -wal nor folder left


async def test_a_server_started_on_a_full_disk_serves_degraded_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "16m") as disk:
        server = ServerProcess(disk / "runcast.db")
        server.log_path = tmp_path / "server.log"
        server.start()
        c = await Client.connect(server.url, close_timeout=1)
        run_id = await c.start("chain", {"n": 3, "delay": 0.3})
        await c.wait(lambda m: m.get("event") == "step_completed" and m["step"] == "s1")
        server.kill()
        fill(disk / "filler")
        with server.log_path.open("ab") as log:  # not start(): it waits for 200, and this one stays 503 for now
            command = [sys.executable, "-m", "server", "--port", str(server.port), "--db", str(server.db)]
            server.proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            health = await wait_health(server, 503)
            assert health["status"] == "degraded" and "full" in str(health["reason"]), health
            (disk / "filler").unlink()
            await wait_health(server, 200)
            d = await Client.connect(server.url, close_timeout=1)
            await d.request({"type": "subscribe", "run_id": run_id})
            events = await d.until_terminal(run_id)
            assert_log(events)
            assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == 3
        finally:
            server.stop()


async def test_a_cleanly_stopped_database_on_a_full_disk_is_refused_plainly_then_resumes(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        server = ServerProcess(disk / "runcast.db")
        server.log_path = tmp_path / "server.log"
        server.start()
        c = await Client.connect(server.url, close_timeout=1)
        run_id = await c.start("chain", {"n": 3, "delay": 0.3})
        await c.wait(lambda m: m.get("event") == "step_completed" and m["step"] == "s1")
        assert server.stop() == 0
        assert sorted(p.name for p in disk.iterdir()) == ["runcast.db", "runcast.db.lock"]  # no -wal, no -shm
        fill(disk / "filler")  # and opening it in WAL mode needs room for a -shm file
        assert_refused(server.db, "free some space on its disk")
        (disk / "filler").unlink()
        server.restart()
        try:
            d = await Client.connect(server.url, close_timeout=1)
            await d.request({"type": "subscribe", "run_id": run_id})
            events = await d.until_terminal(run_id)
            assert_log(events)
            assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == 3
        finally:
            server.stop()


async def test_a_non_transient_write_error_fails_its_batch_at_once_and_is_not_retried(tmp_path: Path) -> None:
    from server.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        await store.create_run({"run_id": "r", "workflow": "echo", "status": "running", "created_at": "t"})
        assert await (await store.append("r", "progress", None, {})) == 1
        with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as other:  # takes the seq the writer gives next
            other.execute("INSERT INTO events VALUES ('r', 2, 'progress', '{}')")
            other.execute("UPDATE runs SET last_seq = 2 WHERE run_id = 'r'")
            other.commit()
        started = time.monotonic()
        with pytest.raises(sqlite3.IntegrityError):
            await asyncio.wait_for(await store.append("r", "progress", None, {}), 5)
        assert time.monotonic() - started < 1 and store.stats.retries == 0 and store.degraded is None
        assert await (await store.append("r", "progress", None, {})) == 3  # the writer carries on
    finally:
        await store.close()
