"""Unit tests of server.store.SqliteStore on a real SQLite file (no server, no sockets); the
ones marked `both_backends` also run on PostgreSQL (tests/pg.py's PgStore, one node)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from server.store import RunFilter, Store, StoredEvent, StoreError, StoreLocked, open_store
from server.store.sqlite import MIGRATIONS, SqliteBackend, SqliteStore, read_run_sync

from .harness import BACKENDS, StoredEvents, run_row
from .pg import PgStore

both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "sub" / "runs.db")


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest, db_path: str) -> str:
    """The test's database: a SQLite file, or a fresh PostgreSQL database's URL."""
    return db_path if backend == "sqlite" else str(request.getfixturevalue("pg_url"))


def store_on(database: str) -> Store:
    return PgStore(database) if database.startswith("postgresql://") else SqliteStore(database)


def committed(database: str, run_id: str) -> tuple[list[str], int | None]:
    """What another connection sees right now (blocking): the run's frames and its last_seq."""

    async def read() -> tuple[list[str], int | None]:
        async with StoredEvents(database) as stored:
            return await stored.frames(run_id), await stored.last_seq(run_id)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    s = store_on(database)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def append(store: SqliteStore, run_id: str, event: str = "progress", data: Any = None, **kw: Any) -> int:
    """Append one event and wait for its commit; returns its seq."""
    future = await store.append(run_id, event, kw.pop("step", None), data if data is not None else {}, **kw)
    return await future


def frames(events: list[StoredEvent]) -> list[dict[str, Any]]:
    return [json.loads(e.frame) for e in events]


# ---- schema ------------------------------------------------------------------------


async def test_migration_sets_user_version_and_tables(store: SqliteStore, db_path: str) -> None:
    conn = sqlite3.connect(db_path)
    try:
        assert len(MIGRATIONS) >= 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"runs", "events"} <= tables
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_old_schema_is_migrated_and_keeps_its_data(db_path: str) -> None:
    Path(db_path).parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    conn.execute(
        "INSERT INTO runs (run_id, workflow, status, created_at, last_seq, steps)"
        " VALUES ('old', 'wf', 'completed', 't', 0, '[]')"
    )
    conn.commit()
    conn.close()
    store = SqliteStore(db_path)
    await store.open()
    try:
        run = await store.get_run("old")
        assert run is not None and run["status"] == "completed"
        assert await append(store, "old") == 1
    finally:
        await store.close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        conn.close()


async def test_reopen_does_not_migrate_again(db_path: str) -> None:
    first = SqliteStore(db_path)
    await first.open()
    await first.create_run(run_row("r"))
    await first.close()
    second = SqliteStore(db_path)
    await second.open()  # would fail with "table runs already exists" if it migrated again
    try:
        assert (await second.get_run("r")) is not None
    finally:
        await second.close()


async def test_newer_schema_is_refused(db_path: str) -> None:
    Path(db_path).parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    store = SqliteStore(db_path)
    with pytest.raises(RuntimeError, match="schema version 99"):
        await store.open()
    await store.close()


# ---- seq numbering -----------------------------------------------------------------


@both_backends
async def test_seq_counts_from_one_without_gaps(store: SqliteStore) -> None:
    await store.create_run(run_row("r1"))
    seqs = [await append(store, "r1", data={"i": i}) for i in range(10)]
    assert seqs == list(range(1, 11))
    events = await store.read_events("r1", 0, 100)
    assert [e.seq for e in events] == list(range(1, 11))
    assert [f["data"]["i"] for f in frames(events)] == list(range(10))
    run = await store.get_run("r1")
    assert run is not None
    assert run["last_seq"] == 10


@both_backends
async def test_seq_is_per_run_across_interleaved_runs(store: SqliteStore) -> None:
    run_ids = [f"run-{i}" for i in range(20)]
    for run_id in run_ids:
        await store.create_run(run_row(run_id))
    rng = random.Random(7)
    plan = [rng.choice(run_ids) for _ in range(1500)]
    # queued without awaiting in between, so runs share batches
    futures = [store.append_nowait(run_id, "progress", "s", {"n": n}) for n, run_id in enumerate(plan)]
    seqs = await asyncio.gather(*futures)
    expected: dict[str, int] = {}
    for run_id, seq in zip(plan, seqs, strict=True):
        expected[run_id] = expected.get(run_id, 0) + 1
        assert seq == expected[run_id]
    for run_id in run_ids:
        events = await store.read_events(run_id, 0, 10_000)
        assert [e.seq for e in events] == list(range(1, expected.get(run_id, 0) + 1))
        decoded = frames(events)
        assert all(f["run_id"] == run_id and f["type"] == "event" for f in decoded)
        # the events of a run keep the order they were appended in
        ns = [f["data"]["n"] for f in decoded]
        assert ns == sorted(ns)
        run = await store.get_run(run_id)
        assert run is not None
        assert run["last_seq"] == expected.get(run_id, 0)
    assert sum(expected.values()) == 1500


@both_backends
async def test_event_frame_fields(store: SqliteStore) -> None:
    await store.create_run(run_row("r"))
    await append(store, "r", "step_output", {"delta": "hi"}, step="write")
    await append(store, "r", "run_completed", {"output": 1})
    first, last = await store.read_events("r", 0, 10)
    f = json.loads(first.frame)
    assert f | {"ts": None} == {
        "type": "event",
        "run_id": "r",
        "seq": 1,
        "event": "step_output",
        "step": "write",
        "ts": None,
        "data": {"delta": "hi"},
    }
    assert f["ts"].endswith("Z")
    assert first.event == "step_output" and not first.terminal
    assert last.event == "run_completed" and last.terminal
    assert json.loads(last.frame)["step"] is None


@both_backends
async def test_state_is_saved_with_the_event(store: SqliteStore) -> None:
    await store.create_run(run_row("r", input={"topic": "x"}))
    state = run_row(
        "r",
        status="completed",
        input={"topic": "x"},
        output={"text": "done"},
        finished_at="2026-11-24T10:00:01.000Z",
        steps=[{"name": "a", "status": "completed", "output": [1, 2]}],
    )
    seq = await append(store, "r", "run_completed", {"output": {"text": "done"}}, state=state)
    run = await store.get_run("r")
    assert run == {**state, "last_seq": seq}
    assert seq == 1


@both_backends
async def test_event_for_unknown_run_fails_alone(store: SqliteStore) -> None:
    await store.create_run(run_row("known"))
    bad = store.append_nowait("ghost", "progress", None, {})
    good = store.append_nowait("known", "progress", None, {})
    with pytest.raises(KeyError):
        await bad
    assert await good == 1
    assert await store.read_events("ghost", 0, 10) == []


@both_backends
async def test_unencodable_event_does_not_lose_other_runs_events(store: SqliteStore) -> None:
    await store.create_run(run_row("a"))
    await store.create_run(run_row("b"))
    odd = store.append_nowait("a", "progress", None, {"big": 2**70})
    fine = store.append_nowait("b", "progress", None, {"ok": True})
    await asyncio.gather(odd, fine, return_exceptions=True)
    assert [e.seq for e in await store.read_events("b", 0, 10)] == [1]


# ---- group commit ------------------------------------------------------------------


@both_backends
async def test_group_commit_batches(store: SqliteStore) -> None:
    await store.create_run(run_row("r"))
    before = store.stats.batches
    futures = [store.append_nowait("r", "progress", None, {"i": i}) for i in range(2000)]
    await store.flush()
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == list(range(1, 2001))
    batches = store.stats.batches - before
    assert 1 <= batches <= 10, batches
    assert store.stats.events >= 2000
    assert store.stats.largest_batch >= 2000 // 10
    events = await store.read_events("r", 0, 5000)
    assert len(events) == 2000


async def test_append_waits_when_far_behind_but_keeps_order(store: SqliteStore) -> None:
    from server.store import writer as store_module

    await store.create_run(run_row("r"))
    n = store_module.HIGH_WATER + 500
    futures = [await store.append("r", "progress", None, {"i": i}) for i in range(n)]
    await store.flush()
    assert [f.result() for f in futures[:3]] == [1, 2, 3]
    assert futures[-1].result() == n
    assert (await store.get_run("r") or {})["last_seq"] == n


@both_backends
async def test_listener_runs_after_commit(store: SqliteStore, database: str) -> None:
    await store.create_run(run_row("r"))
    seen: list[tuple[int, str]] = []
    visible: list[bool] = []

    def listener(batch: list[StoredEvent]) -> None:
        frames, last = committed(database, "r")
        for event in batch:
            visible.append(len(frames) >= event.seq and frames[event.seq - 1] == event.frame)
            seen.append((event.seq, event.event))
        visible.append(last is not None and last >= batch[-1].seq)

    store.add_listener(listener)
    futures = [store.append_nowait("r", "progress", None, {"i": i}) for i in range(50)]
    futures.append(store.append_nowait("r", "run_completed", None, {}))
    await asyncio.gather(*futures)
    assert seen == [(i, "progress") for i in range(1, 51)] + [(51, "run_completed")]
    assert visible and all(visible)


@both_backends
async def test_listener_is_called_once_per_batch_in_order(store: SqliteStore) -> None:
    await store.create_run(run_row("r"))
    calls: list[list[int]] = []
    store.add_listener(lambda batch: calls.append([e.seq for e in batch]))
    for i in range(3):
        await append(store, "r", data={"i": i})
    assert calls == [[1], [2], [3]]


@both_backends
async def test_flush_waits_for_the_batch_in_flight(store: SqliteStore) -> None:
    await store.create_run(run_row("r"))
    future = store.append_nowait("r", "progress", None, {})
    await asyncio.sleep(0)  # the writer takes the op and starts its commit
    await store.flush()
    try:
        assert future.done()
    finally:
        await future


# ---- reads -------------------------------------------------------------------------


@both_backends
async def test_read_events_paging(store: SqliteStore) -> None:
    await store.create_run(run_row("r"))
    await asyncio.gather(*[store.append_nowait("r", "progress", None, {"i": i}) for i in range(25)])
    pages: list[list[int]] = []
    after = 0
    while True:
        page = await store.read_events("r", after, 10)
        if not page:
            break
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert [e.seq for e in await store.read_events("r", 23, 100)] == [24, 25]
    assert await store.read_events("r", 25, 100) == []
    assert [e.seq for e in await store.read_events("r", 0, 1)] == [1]
    assert await store.read_events("nope", 0, 10) == []


@both_backends
async def test_get_run_decodes_json_columns(store: SqliteStore) -> None:
    steps = [
        {"name": "a", "status": "pending", "output": None, "error": None, "attempts": 0},
        {"name": "b", "status": "pending", "output": {"x": [1]}, "error": None, "attempts": 0},
    ]
    await store.create_run(run_row("r", input={"n": 3, "s": "é"}, output=[1, "two"], error="bad", steps=steps))
    run = await store.get_run("r")
    assert run is not None
    assert run["input"] == {"n": 3, "s": "é"}
    assert run["output"] == [1, "two"]
    assert run["error"] == "bad"
    assert run["steps"] == steps
    assert run["status"] == "pending"
    assert run["last_seq"] == 0
    assert run["created_at"] == "2026-11-24T10:00:00.000Z"
    assert set(run) == {
        "run_id",
        "workflow",
        "status",
        "input",
        "output",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "last_seq",
        "steps",
        "waiting_for",
        "owner",
        "scheduled_for",
        "priority",
        "concurrency_key",
        "concurrency_limit",
        "wake_at",
    }
    no_steps = await store.get_run("r", steps=False)
    assert no_steps is not None and "steps" not in no_steps
    assert await store.get_run("missing") is None


@both_backends
async def test_null_json_columns_stay_null(store: SqliteStore) -> None:
    await store.create_run(run_row("r", input=None, output=None, error=None))
    run = await store.get_run("r")
    assert run is not None
    assert (run["input"], run["output"], run["error"], run["steps"]) == (None, None, None, [])


async def _make_runs(store: SqliteStore) -> list[dict[str, Any]]:
    rows = []
    for i in range(23):
        row = run_row(f"r{i:02d}", workflow=("a", "b", "c")[i % 3], status=("pending", "running", "completed")[i % 2])
        await store.create_run(row)
        rows.append(row)
    return rows


@both_backends
async def test_list_runs_newest_first_with_filters(store: SqliteStore) -> None:
    rows = await _make_runs(store)
    runs, cursor = await store.list_runs(RunFilter(), 50, None)
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in reversed(rows)]
    assert cursor is None
    assert all("steps" not in r for r in runs)
    runs, _ = await store.list_runs(RunFilter("a", None), 50, None)
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in reversed(rows) if r["workflow"] == "a"]
    runs, _ = await store.list_runs(RunFilter(None, "running"), 50, None)
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in reversed(rows) if r["status"] == "running"]
    runs, _ = await store.list_runs(RunFilter("b", "pending"), 50, None)
    want = [r["run_id"] for r in reversed(rows) if r["workflow"] == "b" and r["status"] == "pending"]
    assert [r["run_id"] for r in runs] == want and want
    assert await store.list_runs(RunFilter("zzz", None), 50, None) == ([], None)


@both_backends
@pytest.mark.parametrize(
    ("workflow", "status", "limit"),
    [(None, None, 5), (None, None, 1), ("a", None, 3), (None, "pending", 4), (None, None, 23)],
)
async def test_list_runs_cursor_walks_all_pages(
    store: SqliteStore, workflow: str | None, status: str | None, limit: int
) -> None:
    rows = await _make_runs(store)
    want = [
        r["run_id"]
        for r in reversed(rows)
        if (workflow is None or r["workflow"] == workflow) and (status is None or r["status"] == status)
    ]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        runs, cursor = await store.list_runs(RunFilter(workflow, status), limit, cursor)
        pages += 1
        assert 0 < len(runs) <= limit
        seen.extend(r["run_id"] for r in runs)
        if cursor is None:
            break
        assert pages < 100
    assert seen == want
    assert len(set(seen)) == len(seen)
    assert pages == -(-len(want) // limit)


@both_backends
@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "", " 3", "²"])
async def test_list_runs_bad_cursor(store: SqliteStore, cursor: str) -> None:
    await store.create_run(run_row("r"))
    with pytest.raises(ValueError):
        await store.list_runs(RunFilter(), 10, cursor)


@both_backends
async def test_unfinished_runs_oldest_first(store: SqliteStore) -> None:
    statuses = ["running", "completed", "pending", "failed", "cancelled", "running", "pending"]
    for i, status in enumerate(statuses):
        await store.create_run(run_row(f"u{i}", status=status, steps=[{"name": "s", "status": "pending"}]))
    unfinished = await store.unfinished_runs()
    assert [r["run_id"] for r in unfinished] == ["u0", "u2", "u5", "u6"]
    assert unfinished[0]["steps"] == [{"name": "s", "status": "pending"}]
    # a state change through an event moves a run out of the list
    await append(store, "u0", "run_completed", state=run_row("u0", status="completed"))
    assert [r["run_id"] for r in await store.unfinished_runs()] == ["u2", "u5", "u6"]


# ---- durability and locking --------------------------------------------------------


@both_backends
async def test_close_and_reopen_keeps_everything_and_seq_continues(database: str) -> None:
    first = store_on(database)
    await first.open()
    await first.create_run(run_row("a", input={"k": 1}))
    await first.create_run(run_row("b"))
    # queued but not awaited: close must still write them
    for i in range(7):
        first.append_nowait("a", "progress", None, {"i": i})
    first.append_nowait("b", "progress", None, {"i": 0})
    await first.close()

    second = store_on(database)
    await second.open()
    try:
        if second.coordination is not None:  # the same node id again: its runs are free to take back
            assert len(await second.coordination.claim(10, 10.0, ["wf"])) == 2
        run = await second.get_run("a")
        assert run is not None
        assert run["last_seq"] == 7 and run["input"] == {"k": 1}
        assert [e.seq for e in await second.read_events("a", 0, 100)] == list(range(1, 8))
        assert await append(second, "a", data={"i": 7}) == 8
        assert await append(second, "b") == 2
        assert [f["data"]["i"] for f in frames(await second.read_events("a", 0, 100))] == list(range(8))
        assert [r["run_id"] for r in (await second.list_runs(RunFilter(), 10, None))[0]] == ["b", "a"]
    finally:
        await second.close()


async def test_second_store_on_same_file_is_locked(store: SqliteStore, db_path: str) -> None:
    await store.create_run(run_row("r"))
    other = SqliteStore(db_path)
    with pytest.raises(StoreLocked, match="in use"):
        await other.open()
    await other.close()
    # the first store is unharmed
    assert await append(store, "r") == 1


async def test_lock_is_released_on_close(db_path: str) -> None:
    first = SqliteStore(db_path)
    await first.open()
    await first.close()
    second = SqliteStore(db_path)
    await second.open()
    await second.close()


async def test_closed_store_refuses_writes(db_path: str) -> None:
    s = SqliteStore(db_path)
    with pytest.raises(RuntimeError, match="not open"):
        s.append_nowait("r", "progress", None, {})
    await s.open()
    await s.close()
    with pytest.raises(RuntimeError, match="not open"):
        await s.create_run(run_row("r"))


def test_open_store_urls(tmp_path: Path) -> None:
    plain = str(tmp_path / "a.db")
    assert open_store(plain).url == plain
    assert open_store(f"sqlite:///{plain}").url == plain  # sqlite:/// + absolute path: four slashes
    assert open_store("sqlite:///data/x.db").url == os.path.abspath("data/x.db")  # relative, as SQLAlchemy
    assert open_store("relative/x.db").url == os.path.abspath("relative/x.db")
    assert isinstance(open_store(plain).backend, SqliteBackend)
    for url in ("mysql://h/db", "redis://h"):
        with pytest.raises(StoreError, match="unsupported"):
            open_store(url)


async def test_open_store_sqlite_url_opens_that_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "x.db"
    s = open_store(f"sqlite:///{path}")
    await s.open()
    try:
        await s.create_run(run_row("r"))
    finally:
        await s.close()
    assert path.exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT run_id FROM runs").fetchall() == [("r",)]
    finally:
        conn.close()


# ---- regressions -------------------------------------------------------------------


@both_backends
async def test_last_seq_counts_events_after_a_state_change_in_the_same_batch(store: SqliteStore) -> None:
    """A restart reads last_seq to number the next event: it must be the run's last seq."""
    await store.create_run(run_row("r"))
    store.append_nowait("r", "step_started", "s", {}, run_row("r", status="running"))
    store.append_nowait("r", "progress", "s", {"current": 1})
    store.append_nowait("r", "progress", "s", {"current": 2})
    await store.flush()
    run = await store.get_run("r")
    assert run is not None and run["status"] == "running" and run["last_seq"] == 3


@both_backends
async def test_concurrent_reads_see_the_latest_commit(store: SqliteStore) -> None:
    """Reads that interleave on the reader connection must not share an old snapshot."""
    ids = [f"r{i}" for i in range(40)]
    for run_id in ids:
        await store.create_run(run_row(run_id))
    for round_ in range(1, 6):
        for run_id in ids:
            store.append_nowait(run_id, "progress", None, {"round": round_}, run_row(run_id, status="running"))
        await store.flush()
        runs = await asyncio.gather(*(store.get_run(run_id) for run_id in ids))
        events = await asyncio.gather(*(store.read_events(run_id, 0, 100) for run_id in ids))
        assert [r["last_seq"] for r in runs if r] == [round_] * len(ids)
        assert [len(e) for e in events] == [round_] * len(ids)


async def test_read_run_sync_sees_every_commit_and_a_replaced_file(tmp_path: Path) -> None:
    """The sync reader keeps one connection per thread: it must never serve an old snapshot,
    nor the old file once the database was deleted and made anew."""
    path = str(tmp_path / "sync.db")
    assert read_run_sync(path, "r1") is None  # no file yet
    s = SqliteStore(path)
    await s.open()
    try:
        await s.create_run(run_row("r1"))
        assert read_run_sync(path, "r1")["last_seq"] == 0
        for n in range(1, 4):
            await append(s, "r1")
            assert read_run_sync(path, "r1")["last_seq"] == n
    finally:
        await s.close()
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    s = SqliteStore(path)
    await s.open()
    try:
        assert read_run_sync(path, "r1") is None
        await s.create_run(run_row("r2"))
        assert read_run_sync(path, "r2")["run_id"] == "r2"
    finally:
        await s.close()


async def test_a_postgres_store_closed_at_any_moment_leaves_no_connection_open(pg_url: str) -> None:
    """Closing while the LISTEN connection is still being set up must close it too (it was
    left to the garbage collector: a ResourceWarning, an error here)."""
    for i in range(20):
        s = PgStore(pg_url)
        await s.open()
        await s.create_run(run_row(f"r{i}"))
        await asyncio.sleep(i * 0.001)
        await s.close()
        gc.collect()


async def test_a_postgres_batch_writes_only_what_this_node_may_write_and_tells_only_that(pg_url: str) -> None:
    """One commit batch (one statement on PostgreSQL, store/pg_batch.py) with a run another
    node has taken since (lost), a new run whose id the table has (existed) and a run of its
    own: only the last is written, the other two's callers are told why, and the NOTIFY
    names only what was written."""
    import asyncpg

    from server.store import RunExists, RunLost
    from server.store.pg_listen import EVENTS_CHANNEL

    mine, other = PgStore(pg_url, "t"), PgStore(pg_url, "u")
    await mine.open()
    await other.open()
    told: list[dict[str, Any]] = []
    listen = await asyncpg.connect(pg_url)
    try:
        await mine.create_run(run_row("a", status="running"))
        await mine.create_run(run_row("c", status="running"))
        await other.create_run(run_row("b", workflow="theirs"))
        await listen.add_listener(EVENTS_CHANNEL, lambda *args: told.append(json.loads(args[-1])))
        await listen.execute("UPDATE runs SET owner = 'u', epoch = 2 WHERE run_id = 'a'")  # taken over
        batches = mine.stats.batches
        made = asyncio.ensure_future(mine.create_run(run_row("b")))
        await asyncio.sleep(0)  # its op is queued: the two below join the same batch
        lost = mine.append_nowait("a", "progress", None, {}, run_row("a", status="completed"))
        kept = mine.append_nowait("c", "progress", None, {"n": 1}, run_row("c", status="completed"))
        assert await kept == 1
        with pytest.raises(RunLost):
            await lost
        with pytest.raises(RunExists):
            await made
        assert mine.stats.batches == batches + 1, "the three writes were not one batch: the test proves nothing"
        rows = {r["run_id"]: dict(r) for r in await listen.fetch("SELECT run_id, workflow, status, last_seq FROM runs")}
        assert rows["a"]["status"] == "running" and rows["a"]["last_seq"] == 0
        assert rows["b"]["workflow"] == "theirs"
        assert rows["c"]["status"] == "completed" and rows["c"]["last_seq"] == 1
        assert [tuple(r) for r in await listen.fetch("SELECT run_id, seq FROM events")] == [("c", 1)]
        for _ in range(100):
            if any(t.get("node") == "t" and "c" in t.get("runs", {}) for t in told):
                break
            await asyncio.sleep(0.01)
        last = [t for t in told if t.get("node") == "t"][-1]
        assert last["runs"] == {"c": 1} and last["changed"] == ["c"]
    finally:
        await listen.close()
        await other.close()
        await mine.close()
