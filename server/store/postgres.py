"""PostgreSQL: runs and events shared by every node of a cluster: the SQL and the
connections. The cluster's bookkeeping (owners, claims, heartbeats, the fence) is in
pg_cluster.py, the LISTEN connection in pg_listen.py.

Every write transaction of the group-commit writer locks the rows of the runs it writes
and checks that this node still owns each one at the epoch it was given: a node that was
frozen or cut off and lost a run can never write to it again. Each commit sends one
NOTIFY (the runs it wrote and their last seqs) so that other nodes wake their
subscribers and read the new events from the table by seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from . import pg_batch, schedules, sql
from .base import (
    RUN_COLUMNS,
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
from .pg_cluster import PostgresCluster
from .pg_listen import CONNECT_TIMEOUT, EVENTS_CHANNEL, Listener, payload
from .sql import POSTGRES

log = logging.getLogger("runcast.store")

NOTIFY_LIMIT = 7900  # PostgreSQL refuses payloads of 8000 bytes or more
MIGRATION_LOCK = 0x52434153_0001  # advisory lock keys: migrations, retention
RETENTION_LOCK = 0x52434153_0002
POOL_SIZE = 8
# A node frozen inside a transaction keeps its runs' rows locked, and claims skip locked
# rows: the server ends such a transaction after this long, so that the runs can move.
IDLE_IN_TRANSACTION_MS = 1000

MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        n BIGSERIAL PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        workflow TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT,
        output TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        last_seq BIGINT NOT NULL DEFAULT 0,
        steps TEXT NOT NULL DEFAULT '[]',
        owner TEXT,
        epoch BIGINT NOT NULL DEFAULT 0,
        cancel_requested BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX runs_by_workflow ON runs (workflow, n);
    CREATE INDEX runs_by_status ON runs (status, n);
    CREATE INDEX runs_by_workflow_status ON runs (workflow, status, n);
    CREATE INDEX runs_unfinished ON runs (n) WHERE status IN ('pending', 'running');  -- claims: oldest first
    CREATE INDEX runs_finished ON runs (finished_at) WHERE status IN ('completed', 'failed', 'cancelled');
    CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        event TEXT NOT NULL,
        frame TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    """,
    # 2: runs that wait for people: their open requests, and when the first one expires.
    # A waiting run has no owner: any node may answer it, cancel it or let it time out.
    """
    ALTER TABLE runs ADD COLUMN waiting_for TEXT NOT NULL DEFAULT '[]', ADD COLUMN wake_at DOUBLE PRECISION;
    CREATE INDEX runs_waking ON runs (wake_at) WHERE wake_at IS NOT NULL;
    """,
    # 3: nothing: from here on both databases' migrations have the same numbers (SQLite's
    # 2, an index, was in this one's 1).
    "SELECT 1",
    # 4: who started each run (the snapshot's `owner`; this table's `owner` is the node
    # that runs it), for what each identity may reach.
    """
    ALTER TABLE runs ADD COLUMN started_by TEXT, ADD COLUMN cancel_by TEXT;
    CREATE INDEX runs_by_owner ON runs (started_by, n);
    """,
    # 5: time and order (8.2): when a delayed run may start (claims take due runs only),
    # and its priority (claims take the highest first).
    """
    ALTER TABLE runs ADD COLUMN scheduled_for TEXT, ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: concurrency keys (8.2): claims count the runs each key has held by live nodes.
    """
    ALTER TABLE runs ADD COLUMN concurrency_key TEXT, ADD COLUMN concurrency_limit INTEGER;
    CREATE INDEX runs_by_key ON runs (concurrency_key) WHERE concurrency_key IS NOT NULL;
    """,  # 7: durable sleep (8.1): when a sleeping run wakes, as its snapshot says it (wake_at).
    """
    ALTER TABLE runs ADD COLUMN sleeps_until TEXT;
    """,  # 8: schedules (8.3): those created over the wire, and what each one last did.
    schedules.POSTGRES_TABLE,
    # 9: claims walk the claim order (priority, then age) and count each key's held runs
    # from indexes, whatever the number of runs pending (bench/claims.py).
    """
    CREATE INDEX runs_claim_order ON runs (priority DESC, n) WHERE status IN ('pending', 'running');
    CREATE INDEX runs_held_by_key ON runs (concurrency_key)
        WHERE concurrency_key IS NOT NULL AND owner IS NOT NULL AND status IN ('pending', 'running');
    """,
]

_COLUMNS = ", ".join(RUN_COLUMNS)
# Errors a later try may not meet: connection lost, server shutting down or starting,
# transaction rolled back (serialization, deadlock), out of resources (disk full), I/O.
_TRANSIENT_CLASSES = ("08", "57", "40", "53", "58")
IDLE_IN_TRANSACTION_TIMEOUT = "25P03"  # our own transaction ended by the server (see above): write again


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _where(url: str) -> str:
    """host:port/db of a URL, without user or password (for messages and logs)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"


class PostgresBackend:
    """Runs and events in PostgreSQL; one of many nodes sharing the database."""

    def __init__(self, url: str, node_id: str | None = None) -> None:
        self.url = url
        self.where = _where(url)
        self.node_id = node_id or default_node_id()
        self._pool: asyncpg.Pool | None = None
        self.listener = Listener(url, self.where, self.node_id)
        self.cluster = PostgresCluster(self.node_id, self._conn, self.listener)
        self.coordination: Coordination | None = self.cluster

    # ---- lifecycle -------------------------------------------------------------------

    def preflight(self) -> None:
        """Connect once (before serving), so that a wrong URL or a database that is down is
        one plain line, not a failed startup."""

        async def probe() -> None:
            conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
            await conn.close()

        try:
            asyncio.run(probe())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.where}: {exc}; check --db and that the server runs"
            ) from None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT,
                command_timeout=60,
                server_settings={"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)},
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.where}: {exc}; check --db and that it runs"
            ) from None
        await self._migrate()
        await self.cluster.join()
        self.listener.start()

    async def _migrate(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            # Nodes starting at once take turns: the first migrates, the others find it done.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS runcast_schema (version INTEGER NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM runcast_schema") or 0
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the database at {self.where} has runcast schema version {version}, newer than this "
                    f"runcast knows ({len(MIGRATIONS)}); upgrade runcast"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await conn.execute(script)
                await conn.execute("INSERT INTO runcast_schema (version) VALUES ($1)", number)
            log_migrated(self.where, version, len(MIGRATIONS))

    async def close(self) -> None:
        await self.listener.stop()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                async with self._pool.acquire(timeout=1.0) as conn:
                    await self.cluster.leave(conn)
            await self._pool.close()
            self._pool = None

    def abandon(self) -> None:
        self.listener.abandon()
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def transient(self, exc: BaseException) -> bool:
        if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
            return True
        code = getattr(exc, "sqlstate", None)
        return isinstance(code, str) and (code[:2] in _TRANSIENT_CLASSES or code == IDLE_IN_TRANSACTION_TIMEOUT)

    def _conn(self) -> Any:
        if self._pool is None:
            raise ConnectionError("the store is not open")
        return self._pool.acquire(timeout=CONNECT_TIMEOUT)

    # ---- the writer's calls ------------------------------------------------------------

    async def write(self, batch: Batch) -> list[int]:
        async with self._conn() as conn:
            if not (batch.prunes or batch.sql):
                await self._write_runs(conn, batch)  # one statement: its own transaction
                return []
            async with conn.transaction():
                await self._write_runs(conn, batch)
                pruned = [await self._prune(conn, before, limit) for before, limit, _ in batch.prunes]
                for template, params in batch.sql:
                    await conn.execute(POSTGRES.sql(template), *params)
        return pruned

    async def _write_runs(self, conn: Any, batch: Batch) -> None:
        """The batch's runs and events in one statement (pg_batch.py); what it left out (runs
        another node owns now, new ids the table had) is dropped from the batch."""
        if not (batch.runs or batch.seqs):
            return
        fenced, epochs = self.cluster.fence(batch)
        new = [r for r in batch.created if r in batch.runs]
        changed = [r for r in batch.runs if r not in batch.created]
        seq_only = batch.seq_only()
        kept, made, told = await conn.fetchrow(
            pg_batch.WRITE_BATCH,
            fenced,
            epochs,
            self.node_id,
            *pg_batch.columns([self._run_row(r, batch.runs[r], batch) for r in new]),
            *pg_batch.columns([self._run_row(r, batch.runs[r], batch) for r in changed]),
            *pg_batch.columns(batch.events, 4),
            [r for _, r in seq_only],
            [s for s, _ in seq_only],
            EVENTS_CHANNEL,
            self._events_payload(batch),
        )
        lost = set(fenced) - set(kept)
        existed = set(new) - set(made)
        if lost:
            self.cluster.lose(lost)
            batch.lost |= lost
        batch.existed |= existed
        batch.drop(lost | existed)
        if not told and (batch.runs or batch.seqs):  # say what was written, without what was left out
            await conn.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, self._events_payload(batch))

    def _run_row(self, run_id: str, state: dict[str, Any], batch: Batch) -> tuple[Any, ...]:
        return (*run_params(state, batch.seqs.get(run_id, 0)), *self.cluster.owner_of(run_id))

    def _events_payload(self, batch: Batch) -> str:
        """The runs of a commit with their last seqs (new runs at 0) and which of them had
        their state written (`changed`, for the runs feed); what does not fit says less."""
        runs = {run_id: batch.seqs.get(run_id, 0) for run_id in batch.runs} | batch.seqs
        message = payload(self.node_id, {"runs": runs, "changed": list(batch.runs)})
        if len(message.encode()) > NOTIFY_LIMIT:
            message = payload(self.node_id, {"runs": runs})
        return message if len(message.encode()) <= NOTIFY_LIMIT else payload(self.node_id, {"all": True})

    async def _prune(self, conn: Any, finished_before: str, limit: int) -> int:
        # One node prunes at a time; the others find the lock taken and leave it to it.
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RETENTION_LOCK):
            return 0
        ids = [row[0] for row in await conn.fetch(POSTGRES.sql(sql.PRUNABLE), finished_before, limit)]
        if ids:
            await conn.execute("DELETE FROM events WHERE run_id = ANY($1::text[])", ids)
            await conn.execute("DELETE FROM runs WHERE run_id = ANY($1::text[])", ids)
        return len(ids)

    async def last_seq(self, run_id: str) -> int | None:
        async with self._conn() as conn:
            seq = await conn.fetchval(POSTGRES.sql(sql.LAST_SEQ), run_id)
        return int(seq) if seq is not None else None

    # ---- reads -----------------------------------------------------------------------

    async def get_run(self, run_id: str, *, steps: bool = True) -> dict[str, Any] | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(POSTGRES.sql(sql.GET_RUN), run_id)
        return row_to_run(tuple(row), steps=steps) if row is not None else None

    async def read_events(self, run_id: str, after: int, limit: int) -> list[StoredEvent]:
        async with self._conn() as conn:
            rows = await conn.fetch(POSTGRES.sql(sql.READ_EVENTS), run_id, after, limit)
        return [StoredEvent(run_id, seq, event, frame) for seq, event, frame in rows]

    async def list_runs(
        self, which: RunFilter, limit: int, before: str | None
    ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        query, params = sql.list_runs_query(POSTGRES, which, limit, before)
        async with self._conn() as conn:
            rows = await conn.fetch(query, *params)
        return [listed_run(tuple(row)) for row in rows[:limit]], len(rows) > limit

    async def unfinished_runs(self) -> list[dict[str, Any]]:
        """Every run left pending or running, oldest first, whichever node holds it (a
        cluster's nodes do not resume these by themselves: they claim them, see PostgresCluster)."""
        async with self._conn() as conn:
            rows = await conn.fetch(POSTGRES.sql(sql.UNFINISHED_RUNS))
        return [row_to_run(tuple(row)) for row in rows]

    async def list_schedules(self) -> list[schedules.ScheduleRow]:
        async with self._conn() as conn:
            return [schedules.read_row(tuple(row)) for row in await conn.fetch(schedules.SELECT)]

    async def due_waits(self, workflows: list[str], limit: int) -> list[tuple[str, float]]:
        async with self._conn() as conn:
            rows = await conn.fetch(POSTGRES.sql(sql.DUE_WAITS, len(workflows)), workflows, limit)
        return [(row[0], float(row[1])) for row in rows]
