"""SQLite: runs and events in one file, WAL mode. The SQL and the connections, nothing more.

The writer's transactions run on one thread of their own, each batch in one call (one
hand-over of the GIL each way per commit, not one per statement); reads go through
aiosqlite. One process runs a file's runs: a lock file beside it says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import aiosqlite

from ..waiting import cancelled
from . import schedules, sql
from .base import (
    WRITE_COLUMNS,
    Batch,
    Coordination,
    RunFilter,
    StoredEvent,
    StoreError,
    listed_run,
    log_migrated,
    row_to_run,
    run_params,
)
from .sql import SQLITE
from .sqlite_file import APPLICATION_ID, check_file, ensure_usable, take_lock
from .writer import Store

log = logging.getLogger("runcast.store")

CHECKPOINT_SECONDS = 1.0  # how often the WAL is copied into the database file
WAL_SIZE_LIMIT = 4 << 20  # bytes the WAL file keeps after a checkpoint

MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL UNIQUE,
        workflow TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT,
        output TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        last_seq INTEGER NOT NULL DEFAULT 0,
        steps TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX runs_by_workflow ON runs (workflow, n);
    CREATE INDEX runs_by_status ON runs (status, n);
    CREATE INDEX runs_by_workflow_status ON runs (workflow, status, n);
    CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        frame TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    """,
    # 2: retention finds old finished runs without scanning the rest.
    """
    CREATE INDEX runs_finished ON runs (finished_at)
        WHERE status IN ('completed', 'failed', 'cancelled');
    """,
    # 3: runs that wait for people: their open requests, and when the first one expires.
    """
    ALTER TABLE runs ADD COLUMN waiting_for TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE runs ADD COLUMN wake_at REAL;
    CREATE INDEX runs_waking ON runs (wake_at) WHERE wake_at IS NOT NULL;
    """,
    # 4: who started each run (the snapshot's `owner`), for what each identity may reach.
    """
    ALTER TABLE runs ADD COLUMN started_by TEXT;
    CREATE INDEX runs_by_owner ON runs (started_by, n);
    """,
    # 5: time and order (8.2): when a delayed run may start, and its priority.
    """
    ALTER TABLE runs ADD COLUMN scheduled_for TEXT;
    ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: concurrency keys (8.2): at most concurrency_limit runs with one key running at once.
    """
    ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
    ALTER TABLE runs ADD COLUMN concurrency_limit INTEGER;
    """,  # 7: durable sleep (8.1): when a sleeping run wakes, as its snapshot says it (wake_at).
    """
    ALTER TABLE runs ADD COLUMN sleeps_until TEXT;
    """,  # 8: schedules (8.3): those created over the wire, and what each one last did.
    schedules.SQLITE_TABLE,
    # 9: nothing: PostgreSQL's claim indexes (one server on SQLite claims nothing).
    "SELECT 1;",
]

UPSERT_RUN = (
    "INSERT INTO runs ("
    + ", ".join(WRITE_COLUMNS)
    + ") VALUES ("
    + ", ".join("?" * len(WRITE_COLUMNS))
    + ") ON CONFLICT(run_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in WRITE_COLUMNS if c not in ("run_id", "created_at"))
)
# Errors a later try of the same write may not meet: full disk, I/O error, busy or locked.
_TRANSIENT_CODES = {
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
}


def write_transaction(db: sqlite3.Connection, batch: Batch) -> list[int]:
    """Write one batch in one transaction (on the writer's thread); returns how many runs
    each prune of the batch deleted."""
    pruned = []
    db.execute("BEGIN IMMEDIATE")
    try:
        if batch.created:  # a new run is inserted, never upserted over one the file has
            new = list(batch.created)
            marks = ", ".join("?" * len(new))
            batch.existed |= {row[0] for row in db.execute(f"SELECT run_id FROM runs WHERE run_id IN ({marks})", new)}
            batch.drop(batch.existed)
        if batch.runs:
            # last_seq is the run's last event in this batch, even one that came after its state.
            rows = [run_params(state, batch.seqs.get(run_id, 0)) for run_id, state in batch.runs.items()]
            db.executemany(UPSERT_RUN, rows)
        if batch.events:
            db.executemany("INSERT INTO events (run_id, seq, event, frame) VALUES (?, ?, ?, ?)", batch.events)
        seq_only = batch.seq_only()
        if seq_only:
            db.executemany("UPDATE runs SET last_seq = ? WHERE run_id = ?", seq_only)
        for finished_before, limit, _ in batch.prunes:
            pruned.append(_prune(db, finished_before, limit))
        for template, params in batch.sql:
            db.execute(SQLITE.sql(template), params)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return pruned


def _prune(db: sqlite3.Connection, finished_before: str, limit: int) -> int:
    ids = db.execute(SQLITE.sql(sql.PRUNABLE), (finished_before, limit)).fetchall()
    if ids:
        db.executemany("DELETE FROM events WHERE run_id = ?", ids)
        db.executemany("DELETE FROM runs WHERE run_id = ?", ids)
    return len(ids)


class SqliteBackend:
    """Runs and events in one SQLite file, WAL mode; one writer thread, one reader."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = os.path.abspath(path)  # what it is said to be in logs: wherever it was started from
        self.coordination: Coordination | None = None  # one process per file: no cluster
        self._writer: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._lock: IO[str] | None = None

    def preflight(self) -> None:
        ensure_usable(self.path, len(MIGRATIONS))

    async def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        check_file(self.path, len(MIGRATIONS))
        self._lock = take_lock(self.path + ".lock")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="runcast-sqlite-writer")
        try:
            self._writer = await self._on_writer(self._connect_writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA busy_timeout=5000")
            self._checkpointer = await aiosqlite.connect(self.path, isolation_level=None)
            # Short: a TRUNCATE checkpoint holds new writers back while it waits for readers.
            await self._checkpointer.execute("PRAGMA busy_timeout=100")
        except BaseException:
            await self.close()
            raise
        self._checkpoints = asyncio.create_task(self._checkpoint_loop(), name="runcast-store-checkpoints")

    def _connect_writer(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process; only an OS crash may lose the last commits.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            # Checkpoints run beside the writer (see _checkpoint_loop), not inside every ~1000th
            # commit, where they made that commit (and the events waiting on it) 20 ms late.
            db.execute("PRAGMA wal_autocheckpoint=0")
            # Once checkpointed, the WAL is cut back to this: a burst (or a full disk's backlog)
            # must not keep its peak size on disk for good.
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this runcast knows "
                f"({len(MIGRATIONS)}); upgrade runcast"
            )
        if version == 0:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        log_migrated(self.url, version, len(MIGRATIONS))

    async def _on_writer(self, fn: Any, *args: Any) -> Any:
        assert self._thread is not None, "the store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _checkpoint_loop(self) -> None:
        """Move the WAL into the database now and then, without blocking writer or readers."""
        assert self._checkpointer is not None
        failing = False
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                rows = await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
                busy, frames, done = next(iter(rows))
                if not busy and frames == done and frames > WAL_SIZE_LIMIT // 4096:
                    # All of a big WAL is in the database now, and nothing is writing. SQLite
                    # cuts the file back only when the next write starts over at its head,
                    # which on an idle server may never come: cut it back now (waiting at
                    # most the checkpointer's short busy timeout for readers to move on).
                    await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # busy, or a full disk: the next round tries again
                if not failing:  # once per spell, not once a second while a disk stays full
                    log.warning("store checkpoint failed: %s; trying again every %.0f s", exc, CHECKPOINT_SECONDS)
                failing = True
                continue
            if failing:
                log.warning("store checkpoints work again")
                failing = False

    async def close(self) -> None:
        task, self._checkpoints = self._checkpoints, None
        await cancelled(task)
        for conn in (self._reader, self._checkpointer):
            if conn is not None:
                await conn.close()
        self._reader = self._checkpointer = None
        if self._writer is not None:
            await self._on_writer(self._writer.close)
            self._writer = None
        self._stop_thread(wait=True)
        self._release_lock()

    def abandon(self) -> None:
        """Let go without waiting: stop the database threads and free the lock."""
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            self._checkpoints = None
        for conn in (self._reader, self._checkpointer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.stop()
        self._reader = self._checkpointer = None
        writer, self._writer = self._writer, None
        if writer is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.submit(writer.close)
        self._stop_thread(wait=False)
        self._release_lock()

    def _stop_thread(self, *, wait: bool) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=wait)
            self._thread = None

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # ---- the writer's calls ------------------------------------------------------------

    async def write(self, batch: Batch) -> list[int]:
        assert self._writer is not None
        pruned: list[int] = await self._on_writer(write_transaction, self._writer, batch)
        return pruned

    def transient(self, exc: BaseException) -> bool:
        if isinstance(exc, OSError):
            return True
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(exc, sqlite3.OperationalError) and (code is None or (code & 0xFF) in _TRANSIENT_CODES)

    async def last_seq(self, run_id: str) -> int | None:
        assert self._writer is not None
        writer = self._writer

        def read() -> int | None:
            row = writer.execute(SQLITE.sql(sql.LAST_SEQ), (run_id,)).fetchone()
            return int(row[0]) if row is not None else None

        seq: int | None = await self._on_writer(read)
        return seq

    # ---- reads -----------------------------------------------------------------------
    # Each read is one call into the reader's thread (execute_fetchall): reads that
    # interleave on one connection would share a read transaction and see old data.

    async def get_run(self, run_id: str, *, steps: bool = True) -> dict[str, Any] | None:
        assert self._reader is not None
        rows = list(await self._reader.execute_fetchall(SQLITE.sql(sql.GET_RUN), (run_id,)))
        return row_to_run(tuple(rows[0]), steps=steps) if rows else None

    async def read_events(self, run_id: str, after: int, limit: int) -> list[StoredEvent]:
        assert self._reader is not None
        rows = await self._reader.execute_fetchall(SQLITE.sql(sql.READ_EVENTS), (run_id, after, limit))
        return [StoredEvent(run_id, seq, event, frame) for seq, event, frame in rows]

    async def list_runs(
        self, which: RunFilter, limit: int, before: str | None
    ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        assert self._reader is not None
        query, params = sql.list_runs_query(SQLITE, which, limit, before)
        rows = list(await self._reader.execute_fetchall(query, params))
        return [listed_run(row) for row in rows[:limit]], len(rows) > limit

    async def unfinished_runs(self) -> list[dict[str, Any]]:
        assert self._reader is not None
        rows = await self._reader.execute_fetchall(SQLITE.sql(sql.UNFINISHED_RUNS))
        return [row_to_run(tuple(row)) for row in rows]

    async def list_schedules(self) -> list[schedules.ScheduleRow]:
        assert self._reader is not None
        return [schedules.read_row(tuple(row)) for row in await self._reader.execute_fetchall(schedules.SELECT)]

    async def due_waits(self, workflows: list[str], limit: int) -> list[tuple[str, float]]:
        assert self._reader is not None
        if not workflows:
            return []
        rows = await self._reader.execute_fetchall(SQLITE.sql(sql.DUE_WAITS, len(workflows)), (*workflows, limit))
        return [(run_id, float(at)) for run_id, at in rows]


class SqliteStore(Store):
    """The store on one SQLite file (the embedded default)."""

    backend: SqliteBackend

    def __init__(self, path: str) -> None:
        super().__init__(SqliteBackend(path))
        self.path = path


def read_run_sync(path: str, run_id: str) -> dict[str, Any] | None:
    """A run's committed snapshot: safe from any thread (each thread reads on a connection
    of its own, kept for its next reads)."""
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return None
    conn = _thread_reader(path, inode)
    try:
        # fetchall, not fetchone: the statement runs to its end, so that no read transaction
        # stays open and the next read sees the commits made since.
        rows = conn.execute(SQLITE.sql(sql.GET_RUN), (run_id,)).fetchall()
    except sqlite3.OperationalError:  # no schema yet: nothing was ever stored
        return None
    return row_to_run(rows[0]) if rows else None


_readers = threading.local()


def _thread_reader(path: str, inode: int) -> sqlite3.Connection:
    """This thread's read connection to the database file at `path` (a new one if the file
    was replaced since)."""
    conns: dict[str, tuple[int, sqlite3.Connection]] | None = getattr(_readers, "conns", None)
    if conns is None:
        conns = _readers.conns = {}
    known = conns.get(path)
    if known is not None and known[0] == inode:
        return known[1]
    if known is not None:
        known[1].close()
    conn = sqlite3.connect(path, timeout=5, isolation_level=None)
    conns[path] = (inode, conn)
    return conn
