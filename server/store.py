"""RunStore: runs and events in SQLite (aiosqlite), written by one group-committing writer.

Every event gets its seq here, in the batch transaction that writes it, and is handed to
`on_commit` listeners only after that transaction has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import aiosqlite
import orjson

from .protocol import TERMINAL_EVENTS, dumps, event_frame, utc_now
from .wire import text_frame

log = logging.getLogger("runcast.store")

MAX_BATCH = 4096  # ops per transaction; bounds one commit's latency
HIGH_WATER = 20_000  # queued ops past which producers wait for the writer
CHECKPOINT_SECONDS = 1.0  # how often the WAL is copied into the database file


@dataclass(slots=True)
class StoredEvent:
    """One committed event: its seq and its frame, encoded once and sent as is to everyone."""

    run_id: str
    seq: int
    event: str
    frame: str
    _wire: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS

    @property
    def wire(self) -> bytes:
        """The frame as WebSocket bytes, framed on first use and shared by every subscriber."""
        if self._wire is None:
            self._wire = text_frame(self.frame)
        return self._wire


@dataclass(slots=True)
class BatchStats:
    """What the writer has done, for benchmarks and metrics."""

    batches: int = 0
    ops: int = 0
    events: int = 0
    commit_seconds: float = 0.0
    largest_batch: int = 0


RUN_COLUMNS = (
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
)
JSON_COLUMNS = ("input", "output", "error", "steps")

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
]


class RunStore(Protocol):
    """What the engine and the endpoints need from storage; SQLite is the one backend today."""

    stats: BatchStats

    def add_listener(self, listener: Callable[[list[StoredEvent]], None]) -> None: ...
    def add_batch_observer(self, observer: Callable[[int, float], None]) -> None: ...
    @property
    def queued(self) -> int: ...
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def create_run(self, row: dict[str, Any]) -> None: ...
    async def append(
        self, run_id: str, event: str, step: str | None, data: Any, state: dict[str, Any] | None = None
    ) -> asyncio.Future[int]: ...
    def append_nowait(
        self, run_id: str, event: str, step: str | None, data: Any, state: dict[str, Any] | None = None
    ) -> asyncio.Future[int]: ...
    def emit(
        self, run_id: str, event: str, step: str | None, data: Any, state: dict[str, Any] | None = None
    ) -> None: ...
    async def flush(self) -> None: ...
    async def backlog(self) -> None: ...
    async def prune(self, finished_before: str, limit: int) -> int: ...
    async def get_run(self, run_id: str, *, steps: bool = True) -> dict[str, Any] | None: ...
    async def read_events(self, run_id: str, after: int, limit: int) -> list[StoredEvent]: ...
    async def list_runs(
        self, workflow: str | None, status: str | None, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...
    async def unfinished_runs(self) -> list[dict[str, Any]]: ...


def open_store(url: str) -> SqliteStore:
    """The store named by a `--db` value: a file path, or `sqlite:///path`."""
    if url.startswith("sqlite:///"):
        return SqliteStore(url.removeprefix("sqlite://"))
    if url.startswith("sqlite://"):
        return SqliteStore(url.removeprefix("sqlite://"))
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise ValueError(f"unsupported store '{scheme}://': use a file path or sqlite:///path")
    return SqliteStore(url)


def row_to_run(row: sqlite3.Row | tuple[Any, ...], *, steps: bool = True) -> dict[str, Any]:
    """A stored row as the run snapshot of the contract."""
    run = dict(zip(RUN_COLUMNS, row, strict=True))
    for key in JSON_COLUMNS:
        value = run[key]
        run[key] = orjson.loads(value) if value is not None else None
    if not steps:
        del run["steps"]
    return run


def _run_params(state: dict[str, Any], last_seq: int) -> tuple[Any, ...]:
    values: list[Any] = []
    for key in RUN_COLUMNS:
        if key == "last_seq":
            values.append(last_seq)
        elif key in JSON_COLUMNS:
            value = state.get(key)
            values.append(dumps(value) if value is not None or key == "steps" else None)
        else:
            values.append(state.get(key))
    return tuple(values)


_SELECT_RUN = "SELECT " + ", ".join(RUN_COLUMNS) + " FROM runs"
_UPSERT_RUN = (
    "INSERT INTO runs ("
    + ", ".join(RUN_COLUMNS)
    + ") VALUES ("
    + ", ".join("?" * len(RUN_COLUMNS))
    + ") ON CONFLICT(run_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS if c not in ("run_id", "created_at"))
)


@dataclass(slots=True)
class _Op:
    run_id: str
    event: str | None  # None: create the run only
    step: str | None = None
    data: Any = None
    state: dict[str, Any] | None = None
    future: asyncio.Future[int] | None = None
    prune: tuple[str, int] | None = None  # (finished before, at most this many runs)


@dataclass
class _Batch:
    events: list[tuple[str, int, str, str]] = field(default_factory=list)
    stored: list[StoredEvent] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # the latest state of each run
    seqs: dict[str, int] = field(default_factory=dict)
    futures: list[tuple[asyncio.Future[int], int]] = field(default_factory=list)
    prunes: list[tuple[str, int, asyncio.Future[int] | None]] = field(default_factory=list)


def _write_transaction(db: sqlite3.Connection, batch: _Batch) -> list[int]:
    """Write one batch in one transaction (on the writer's thread); returns how many runs
    each prune of the batch deleted."""
    # Runs whose state did not change in this batch only move their last_seq forward.
    seq_only = [(seq, run_id) for run_id, seq in batch.seqs.items() if run_id not in batch.runs]
    pruned = []
    db.execute("BEGIN")
    try:
        if batch.runs:
            # last_seq is the run's last event in this batch, even one that came after its state.
            rows = [_run_params(state, batch.seqs.get(run_id, 0)) for run_id, state in batch.runs.items()]
            db.executemany(_UPSERT_RUN, rows)
        if batch.events:
            db.executemany("INSERT INTO events (run_id, seq, event, frame) VALUES (?, ?, ?, ?)", batch.events)
        if seq_only:
            db.executemany("UPDATE runs SET last_seq = ? WHERE run_id = ?", seq_only)
        for finished_before, limit, _ in batch.prunes:
            pruned.append(_prune(db, finished_before, limit))
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return pruned


def _prune(db: sqlite3.Connection, finished_before: str, limit: int) -> int:
    ids = db.execute(
        "SELECT run_id FROM runs WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ?"
        " ORDER BY finished_at LIMIT ?",
        (finished_before, limit),
    ).fetchall()
    if ids:
        db.executemany("DELETE FROM events WHERE run_id = ?", ids)
        db.executemany("DELETE FROM runs WHERE run_id = ?", ids)
    return len(ids)


class SqliteStore:
    """Runs and events in one SQLite file, WAL mode; one writer connection, one reader."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stats = BatchStats()
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._ops: deque[_Op] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_seq: dict[str, int] = {}
        self._listeners: list[Callable[[list[StoredEvent]], None]] = []
        self._batch_observers: list[Callable[[int, float], None]] = []
        self._closing = False
        self._lock: IO[str] | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoints: asyncio.Task[None] | None = None

    def add_listener(self, listener: Callable[[list[StoredEvent]], None]) -> None:
        """Call `listener` with each committed batch of events, in seq order per run."""
        self._listeners.append(listener)

    def add_batch_observer(self, observer: Callable[[int, float], None]) -> None:
        """Call `observer(ops, seconds)` after each committed batch (for metrics)."""
        self._batch_observers.append(observer)

    @property
    def queued(self) -> int:
        """Operations waiting for the writer."""
        return len(self._ops)

    # ---- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._lock = _take_lock(self.path + ".lock")
        self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        await self._writer.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process; only an OS crash may lose the last commits.
        await self._writer.execute("PRAGMA synchronous=NORMAL")
        await self._writer.execute("PRAGMA busy_timeout=5000")
        # Checkpoints run beside the writer (see _checkpoint_loop), not inside every ~1000th
        # commit, where they made that commit (and the events waiting on it) 20 ms late.
        await self._writer.execute("PRAGMA wal_autocheckpoint=0")
        await self._migrate(self._writer)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader.execute("PRAGMA busy_timeout=5000")
        self._checkpointer = await aiosqlite.connect(self.path, isolation_level=None)
        await self._checkpointer.execute("PRAGMA busy_timeout=5000")
        self._task = asyncio.create_task(self._write_loop(), name="runcast-store-writer")
        self._checkpoints = asyncio.create_task(self._checkpoint_loop(), name="runcast-store-checkpoints")

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        async with db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = row[0] if row else 0
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this runcast knows "
                f"({len(MIGRATIONS)}); upgrade runcast"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
            log.info("store %s migrated to schema version %d", self.path, number)

    async def _checkpoint_loop(self) -> None:
        """Move the WAL into the database now and then, without blocking writer or readers."""
        assert self._checkpointer is not None
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # busy or the like: the next round tries again
                log.warning("store checkpoint failed: %s", exc)

    async def close(self) -> None:
        """Write what is queued, then close the connections."""
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        if self._task is not None:
            if not self._task.done():
                await self.flush()
                self._closing = True
                self._wake.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        for conn in (self._writer, self._reader, self._checkpointer):
            if conn is not None:
                await conn.close()
        self._writer = self._reader = self._checkpointer = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def abandon(self) -> None:
        """Let go without waiting (the loop is ending): what is not committed is treated as a
        crash, and the runs resume next time. Stops the database threads and frees the lock."""
        self._closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            self._checkpoints = None
        for conn in (self._writer, self._reader, self._checkpointer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.stop()
        self._writer = self._reader = self._checkpointer = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # ---- writes ----------------------------------------------------------------------

    async def create_run(self, row: dict[str, Any]) -> None:
        """Store a new run; returns once it is committed."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._push(_Op(row["run_id"], None, state=row, future=future))
        await future

    async def append(
        self,
        run_id: str,
        event: str,
        step: str | None,
        data: Any,
        state: dict[str, Any] | None = None,
    ) -> asyncio.Future[int]:
        """Queue an event (and the run's new state, if it changed) for the next batch.

        Returns a future of the event's seq, done once the batch has committed. Waits only
        when the writer is far behind, so that a fast run cannot fill memory.
        """
        await self.backlog()
        return self.append_nowait(run_id, event, step, data, state)

    async def backlog(self) -> None:
        """Wait while the writer is far behind (returns at once otherwise)."""
        if len(self._ops) >= HIGH_WATER:
            self._drained.clear()
            await self._drained.wait()

    def append_nowait(
        self,
        run_id: str,
        event: str,
        step: str | None,
        data: Any,
        state: dict[str, Any] | None = None,
    ) -> asyncio.Future[int]:
        """`append` without the wait: for callbacks that cannot await."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._push(_Op(run_id, event, step, data, state, future))
        return future

    def emit(self, run_id: str, event: str, step: str | None, data: Any, state: dict[str, Any] | None = None) -> None:
        """Queue an event with no future to tell its commit: the cheap way for the many
        events nobody waits for (subscribers hear of them after the commit anyway)."""
        self._push(_Op(run_id, event, step, data, state))

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (including a batch in flight)."""
        if self._task is not None and not self._task.done() and not self._closing:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._push(_Op("", None, future=future))
            await future

    async def prune(self, finished_before: str, limit: int) -> int:
        """Delete up to `limit` runs that finished before the given time, with their events.

        Runs inside the writer's transactions, so it never competes with it; callers
        prune in small batches so that no single commit is long."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._push(_Op("", None, future=future, prune=(finished_before, limit)))
        return await future

    def _push(self, op: _Op) -> None:
        if self._task is None or self._closing:
            raise RuntimeError("the store is not open")
        self._ops.append(op)
        self._wake.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._drain()
                if self._closing:
                    return
        except asyncio.CancelledError:
            # The event loop is ending (asyncio.run cancels every task): commit what is
            # queued, so that acknowledged work is kept, then stop.
            self._closing = True
            await self._drain()
            raise

    async def _drain(self) -> None:
        while self._ops:
            ops = [self._ops.popleft() for _ in range(min(len(self._ops), MAX_BATCH))]
            if len(self._ops) < HIGH_WATER // 2:
                self._drained.set()
            await self._write_batch(ops)
        self._drained.set()

    async def _write_batch(self, ops: list[_Op]) -> None:
        started = time.perf_counter()
        try:
            batch = await self._build(ops)
            await self._commit(batch)
        except Exception as exc:  # a failed batch fails its callers; the writer carries on
            log.exception("store batch of %d ops failed", len(ops))
            for lost in [op.run_id for op in ops if op.event is not None]:
                self._last_seq.pop(lost, None)  # reload from disk next time
            for op in ops:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.ops += len(ops)
        self.stats.events += len(batch.stored)
        self.stats.largest_batch = max(self.stats.largest_batch, len(ops))
        elapsed = time.perf_counter() - started
        self.stats.commit_seconds += elapsed
        for observer in self._batch_observers:
            observer(len(ops), elapsed)
        for future, seq in batch.futures:
            if not future.done():
                future.set_result(seq)
        if batch.stored:
            for listener in self._listeners:
                try:
                    listener(batch.stored)
                except Exception:  # a broken listener must not stop the writer
                    log.exception("store listener %r failed", listener)

    async def _build(self, ops: list[_Op]) -> _Batch:
        batch = _Batch()
        now = utc_now()  # the moment this batch is numbered: one clock read, not one per event
        for op in ops:
            if op.prune is not None:
                batch.prunes.append((*op.prune, op.future))
                continue
            if op.event is None:
                if op.state is not None:
                    batch.runs[op.run_id] = op.state
                    self._last_seq[op.run_id] = 0
                if op.future is not None:
                    batch.futures.append((op.future, 0))
                continue
            seq = self._last_seq.get(op.run_id)
            if seq is None:
                try:
                    seq = await self._load_last_seq(op.run_id)
                except KeyError as exc:  # a bug in the caller; fail that event alone
                    if op.future is not None:
                        op.future.set_exception(exc)
                    continue
            try:
                frame = event_frame(op.run_id, seq + 1, op.event, op.step, now, op.data)
            except Exception as exc:  # this event alone fails; the batch's other events are kept
                if op.future is not None:
                    op.future.set_exception(exc)
                continue
            seq += 1
            self._last_seq[op.run_id] = seq
            batch.seqs[op.run_id] = seq
            batch.events.append((op.run_id, seq, op.event, frame))
            batch.stored.append(StoredEvent(op.run_id, seq, op.event, frame))
            if op.state is not None:
                batch.runs[op.run_id] = op.state
            if op.event in TERMINAL_EVENTS:
                del self._last_seq[op.run_id]
            if op.future is not None:
                batch.futures.append((op.future, seq))
        return batch

    async def _load_last_seq(self, run_id: str) -> int:
        assert self._writer is not None
        rows = list(await self._writer.execute_fetchall("SELECT last_seq FROM runs WHERE run_id = ?", (run_id,)))
        row = rows[0] if rows else None
        if row is None:
            raise KeyError(f"event for unknown run {run_id}")
        return int(row[0])

    async def _commit(self, batch: _Batch) -> None:
        if not (batch.events or batch.runs or batch.prunes):
            return
        db = self._writer
        assert db is not None
        # The whole transaction is one call into the writer's thread: one hand-over of the
        # GIL each way per commit, not one per statement (a busy event loop can keep the
        # thread waiting for the GIL for a switch interval, 5 ms, at every hand-over).
        pruned = await db._execute(_write_transaction, db._conn, batch)
        for (_, _, future), count in zip(batch.prunes, pruned, strict=True):
            if future is not None:
                batch.futures.append((future, count))

    # ---- reads -----------------------------------------------------------------------
    # Each read is one call into the reader's thread (execute_fetchall): reads that
    # interleave on one connection would share a read transaction and see old data.

    async def get_run(self, run_id: str, *, steps: bool = True) -> dict[str, Any] | None:
        """The committed snapshot of a run, or None."""
        assert self._reader is not None
        rows = list(await self._reader.execute_fetchall(_SELECT_RUN + " WHERE run_id = ?", (run_id,)))
        row = rows[0] if rows else None
        return row_to_run(tuple(row), steps=steps) if row is not None else None

    async def read_events(self, run_id: str, after: int, limit: int) -> list[StoredEvent]:
        """Committed events with seq > after, in seq order, at most `limit`."""
        assert self._reader is not None
        rows = await self._reader.execute_fetchall(
            "SELECT seq, event, frame FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after, limit),
        )
        return [StoredEvent(run_id, seq, event, frame) for seq, event, frame in rows]

    async def list_runs(
        self, workflow: str | None, status: str | None, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Runs newest first, without steps; `next` is the cursor for the following page."""
        assert self._reader is not None
        where: list[str] = []
        params: list[Any] = []
        if workflow is not None:
            where.append("workflow = ?")
            params.append(workflow)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if before is not None:
            if not before.isdigit():
                raise ValueError("cursor 'before' is not one this server gave")
            where.append("n < ?")
            params.append(int(before))
        sql = "SELECT n, " + ", ".join(RUN_COLUMNS) + " FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY n DESC LIMIT ?"
        params.append(limit + 1)
        rows = list(await self._reader.execute_fetchall(sql, params))
        more = len(rows) > limit
        rows = rows[:limit]
        runs = [row_to_run(tuple(row)[1:], steps=False) for row in rows]
        return runs, (str(rows[-1][0]) if more and rows else None)

    async def unfinished_runs(self) -> list[dict[str, Any]]:
        """Runs left pending or running, oldest first: what a restart must continue."""
        assert self._reader is not None
        rows = await self._reader.execute_fetchall(_SELECT_RUN + " WHERE status IN ('pending', 'running') ORDER BY n")
        return [row_to_run(tuple(row)) for row in rows]


class StoreLocked(RuntimeError):
    """Another process already runs this database's runs."""


def _take_lock(path: str) -> IO[str]:
    # One process runs a database's runs: a second would run the same runs twice.
    handle = open(path, "a+")  # noqa: SIM115 - held open for the store's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StoreLocked(
            f"{path[:-5]} is in use by another runcast process (pid {holder}); "
            "stop it first, or give this one another --db"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def ensure_free(url: str) -> None:
    """Raise StoreLocked if another process holds the database named by `url`."""
    store = open_store(url)
    os.makedirs(os.path.dirname(os.path.abspath(store.path)), exist_ok=True)
    _take_lock(store.path + ".lock").close()


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
        rows = conn.execute(_SELECT_RUN + " WHERE run_id = ?", (run_id,)).fetchall()
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
