"""PostgreSQL: runs and events shared by every node of a cluster. The SQL and the
connections, and the cluster's bookkeeping: nodes and their heartbeats, which node owns
which run (with an epoch, the fencing token), claims, takeovers and cancel requests.

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
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

from ..waiting import wait_set
from . import sql
from .base import (
    RUN_COLUMNS,
    UNFINISHED_SQL,
    WAITING_SQL,
    WRITE_COLUMNS,
    Batch,
    StoredEvent,
    StoreError,
    listed_run,
    row_to_run,
    run_params,
)
from .sql import POSTGRES

log = logging.getLogger("runcast.store")

EVENTS_CHANNEL = "runcast_events"  # payload: {"node", "runs": {run_id: last_seq}} or {"node", "all": true}
CONTROL_CHANNEL = "runcast_control"  # payload: {"cancel": run_id} or {"pending": true}
NOTIFY_LIMIT = 7900  # PostgreSQL refuses payloads of 8000 bytes or more
MIGRATION_LOCK = 0x52434153_0001  # advisory lock keys: migrations, retention
RETENTION_LOCK = 0x52434153_0002
CONNECT_TIMEOUT = 5.0
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
]

_COLUMNS = ", ".join(RUN_COLUMNS)
UPSERT_RUN = (
    f"INSERT INTO runs ({', '.join(WRITE_COLUMNS)}, owner, epoch) VALUES ("
    + ", ".join(f"${i}" for i in range(1, len(WRITE_COLUMNS) + 3))
    + ") ON CONFLICT (run_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in WRITE_COLUMNS if c not in ("run_id", "created_at"))
    # The write that makes a run wait lets go of it, in the same transaction (see _fence).
    + f", owner = CASE WHEN excluded.status = {WAITING_SQL} THEN NULL ELSE runs.owner END"
)
# A new run is inserted, never upserted: an id the table has already is skipped (and not
# returned), so that the database alone decides which of two starts of one id creates it.
_NEW_RUN_TYPES = ("text",) * 9 + ("bigint", "text", "text", "float8", "text", "bigint")  # WRITE_COLUMNS, owner, epoch
INSERT_NEW_RUNS = (
    f"INSERT INTO runs ({', '.join(WRITE_COLUMNS)}, owner, epoch) SELECT * FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(_NEW_RUN_TYPES, start=1))
    + ") ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
)
# Nobody holds the run, or the node that holds it has gone silent ($2 the takeover seconds;
# NULL: free runs only). Never this node's own ($3): it runs those already.
_UNHELD = """(
        owner IS NULL
        OR ($2::float8 IS NOT NULL AND owner <> $3
            AND owner NOT IN (SELECT node_id FROM nodes WHERE seen_at > now() - make_interval(secs => $2::float8)))
    )"""
# Runs a node may take: pending or running, and unheld.
_ORPHANED = f"status IN ({UNFINISHED_SQL}) AND {_UNHELD}"
# A waiting run a node may take to answer, cancel or expire it: unheld too.
_FREE_WAITING = f"status = {WAITING_SQL} AND {_UNHELD}"
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
        self.coordination = self
        self.owned: dict[str, int] = {}  # run_id -> epoch this node writes it with
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listening: asyncio.Task[None] | None = None
        self._on_events: list[Callable[[dict[str, int] | None, set[str] | None], None]] = []
        self._on_control: list[Callable[[dict[str, Any]], None]] = []
        self.listening = False  # the LISTEN connection is up (else only the periodic catch-up delivers)

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
        async with self._conn() as conn:  # runs left by this node id's previous life: free to claim now
            await conn.execute(
                f"UPDATE runs SET owner = NULL WHERE owner = $1 AND status IN ({UNFINISHED_SQL}, {WAITING_SQL})",
                self.node_id,
            )
        await self.heartbeat()
        self._listening = asyncio.create_task(self._listen_loop(), name="runcast-pg-listen")

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
                log.info("store %s migrated to schema version %d", self.where, number)

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
            self._listening = None
        if self._pool is not None:
            # Leaving: our unfinished runs are orphans at once, and the others are told to look.
            with contextlib.suppress(Exception):
                async with self._pool.acquire(timeout=1.0) as conn:
                    await conn.execute("DELETE FROM nodes WHERE node_id = $1", self.node_id)
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", CONTROL_CHANNEL, _payload(self.node_id, {"pending": True})
                    )
            await self._pool.close()
            self._pool = None

    def abandon(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            self._listening = None
        if self._listener is not None:  # the cancelled loop will not get to close it
            self._listener.terminate()
            self._listener = None
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

    # ---- notifications -----------------------------------------------------------------

    def on_events(self, callback: Callable[[dict[str, int] | None, set[str] | None], None]) -> None:
        """Call `callback({run_id: last_seq}, changed)` when another node committed: the runs
        it wrote (None: any run), and `changed`, those whose state (status, steps) it wrote
        (None: any of them may have; the runs feed then reads them all)."""
        self._on_events.append(callback)

    def on_control(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback(message)` for cancel requests and new pending runs."""
        self._on_control.append(callback)

    async def _listen_loop(self) -> None:
        """Keep one LISTEN connection; reconnect with backoff when it drops (the periodic
        catch-up covers what was missed meanwhile)."""
        delay = 0.1
        while True:
            lost = asyncio.Event()
            try:
                conn = self._listener = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
                # Held from here on, so that a cancel or a failure below still closes it.
                conn.add_termination_listener(lambda _c, gone=lost: gone.set())
                await conn.add_listener(EVENTS_CHANNEL, self._heard)
                await conn.add_listener(CONTROL_CHANNEL, self._heard)
                self.listening, delay = True, 0.1
                self._notify_all()  # whatever was missed while not listening
                while not lost.is_set():
                    if not await wait_set(lost, 5.0):
                        await conn.execute("SELECT 1")  # a dead connection says so here
            except asyncio.CancelledError:
                await self._drop_listener()
                raise
            except Exception as exc:
                if self.listening:
                    log.warning("store %s: LISTEN connection lost (%s); reconnecting", self.where, exc)
            self.listening = False
            await self._drop_listener()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 1.0)
            except Exception:  # a connection that cannot close politely is cut
                conn.terminate()

    def _notify_all(self) -> None:
        for callback in self._on_events:
            callback(None, None)

    def _heard(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if message.get("node") == self.node_id:
            return  # our own commit: the local broker has it already
        if channel == EVENTS_CHANNEL:
            runs = None if message.get("all") else message.get("runs", {})
            changed = message.get("changed")  # absent from an older node's: any may have changed
            states = set(changed) if runs is not None and isinstance(changed, list) else None
            for callback in self._on_events:
                callback(runs, states)
        else:
            for control in self._on_control:
                control(message)

    async def notify_control(self, message: dict[str, Any]) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT pg_notify($1, $2)", CONTROL_CHANNEL, _payload(self.node_id, message))

    # ---- the writer's calls ------------------------------------------------------------

    async def write(self, batch: Batch) -> list[int]:
        async with self._conn() as conn, conn.transaction():
            lost = await self._fence(conn, batch)
            if lost:
                batch.drop(lost)
            await self._insert_new(conn, batch)
            rows = [self._run_row(r, state, batch) for r, state in batch.runs.items() if r not in batch.created]
            if rows:
                await conn.executemany(UPSERT_RUN, rows)
            if batch.events:
                await conn.copy_records_to_table(
                    "events", records=batch.events, columns=("run_id", "seq", "event", "frame")
                )
            seq_only = batch.seq_only()
            if seq_only:
                await conn.execute(
                    "UPDATE runs SET last_seq = u.seq FROM unnest($1::text[], $2::bigint[]) AS u(run_id, seq)"
                    " WHERE runs.run_id = u.run_id",
                    [r for _, r in seq_only],
                    [s for s, _ in seq_only],
                )
            pruned = [await self._prune(conn, before, limit) for before, limit, _ in batch.prunes]
            if batch.seqs or batch.runs:
                await conn.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, self._events_payload(batch))
        return pruned

    def _run_row(self, run_id: str, state: dict[str, Any], batch: Batch) -> tuple[Any, ...]:
        epoch = self.owned.get(run_id)
        owner = self.node_id if epoch is not None else None
        return (*run_params(state, batch.seqs.get(run_id, 0)), owner, epoch or 0)

    async def _insert_new(self, conn: Any, batch: Batch) -> None:
        """Insert the batch's new runs, all in one statement; a run id the table has already
        (made through another node at the same moment: the insert waits for that node's
        transaction, then skips it) is put in `batch.existed`, and none of its writes are made."""
        new = [run_id for run_id in batch.created if run_id in batch.runs]
        if not new:
            return
        columns = list(zip(*(self._run_row(run_id, batch.runs[run_id], batch) for run_id in new), strict=True))
        inserted = {row[0] for row in await conn.fetch(INSERT_NEW_RUNS, *columns)}
        existed = set(new) - inserted
        batch.existed |= existed
        batch.drop(existed)

    async def _fence(self, conn: Any, batch: Batch) -> set[str]:
        """Lock the batch's runs (other than new ones) and return those this node no longer
        owns at its epoch: their writes are dropped."""
        ids = [r for r in {*batch.runs, *batch.seqs} if r not in batch.created]
        if not ids:
            return set()
        epochs = [self.owned.get(r, -1) for r in ids]
        rows = await conn.fetch(
            "SELECT r.run_id FROM runs r JOIN unnest($1::text[], $2::bigint[]) AS o(run_id, epoch)"
            " ON r.run_id = o.run_id AND r.epoch = o.epoch AND r.owner = $3 ORDER BY r.run_id FOR UPDATE OF r",
            ids,
            epochs,
            self.node_id,
        )
        lost = set(ids) - {row[0] for row in rows}
        for run_id in lost:
            self.owned.pop(run_id, None)
        batch.lost |= lost
        return lost

    def _events_payload(self, batch: Batch) -> str:
        """The runs of a commit with their last seqs (new runs at 0) and which of them had
        their state written (`changed`, for the runs feed); what does not fit says less."""
        runs = {run_id: batch.seqs.get(run_id, 0) for run_id in batch.runs} | batch.seqs
        payload = _payload(self.node_id, {"runs": runs, "changed": list(batch.runs)})
        if len(payload.encode()) > NOTIFY_LIMIT:
            payload = _payload(self.node_id, {"runs": runs})
        return payload if len(payload.encode()) <= NOTIFY_LIMIT else _payload(self.node_id, {"all": True})

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

    # ---- the cluster -------------------------------------------------------------------

    async def heartbeat(self) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO nodes (node_id) VALUES ($1) ON CONFLICT (node_id) DO UPDATE SET seen_at = now()",
                self.node_id,
            )

    async def claim(
        self, limit: int, takeover_seconds: float | None, workflows: list[str]
    ) -> list[tuple[dict[str, Any], bool]]:
        """Take up to `limit` runs of these workflows that no live node owns, oldest first:
        (snapshot, taken over from another node). With `takeover_seconds` None, only runs
        that have no owner at all."""
        if limit <= 0:
            return []
        chosen = f"{_ORPHANED} AND workflow = ANY($4::text[]) ORDER BY n LIMIT $1 FOR UPDATE SKIP LOCKED"
        seconds = float(takeover_seconds) if takeover_seconds is not None else None
        return await self._take(chosen, limit, seconds, self.node_id, workflows)

    async def claim_run(self, run_id: str, takeover_seconds: float) -> tuple[dict[str, Any], bool] | None:
        """Take one run if no live node owns it (to cancel it here), else None."""
        taken = await self._take(
            f"run_id = $1 AND {_ORPHANED} FOR UPDATE", run_id, float(takeover_seconds), self.node_id
        )
        return taken[0] if taken else None

    async def _take(self, chosen: str, *params: Any) -> list[tuple[dict[str, Any], bool]]:
        """Own the runs `chosen` selects ($3 is this node), one epoch up: (snapshot, taken
        over from another node) for each."""
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""WITH chosen AS (SELECT n, owner FROM runs WHERE {chosen})
                    UPDATE runs SET owner = $3, epoch = runs.epoch + 1 FROM chosen WHERE runs.n = chosen.n
                    RETURNING {", ".join("runs." + c for c in RUN_COLUMNS)}, runs.epoch, chosen.owner""",
                *params,
            )
        taken = []
        for row in rows:
            snapshot = row_to_run(tuple(row)[: len(RUN_COLUMNS)])
            self.owned[snapshot["run_id"]] = row["epoch"]
            taken.append((snapshot, row["owner"] is not None and row["owner"] != self.node_id))
        return taken

    async def claim_waiting(self, run_id: str, takeover_seconds: float) -> dict[str, Any] | None:
        """Take a waiting run that nobody holds (to record an answer, a cancel or a timeout
        here), one epoch up; None if it is not waiting or another node holds it now."""
        taken = await self._take(f"run_id = $1 AND {_FREE_WAITING} FOR UPDATE", run_id, takeover_seconds, self.node_id)
        return taken[0][0] if taken else None

    async def release(self, run_id: str) -> None:
        """Let go of a run this node holds (it is free for any node again) and forget it."""
        epoch = self.owned.pop(run_id, None)
        if epoch is None:
            return
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE runs SET owner = NULL WHERE run_id = $1 AND owner = $2 AND epoch = $3",
                run_id,
                self.node_id,
                epoch,
            )

    def take_new(self, run_id: str) -> None:
        """This node owns a run it is creating (epoch 1)."""
        self.owned[run_id] = 1

    def owns(self, run_id: str) -> bool:
        return run_id in self.owned

    def forget(self, run_id: str) -> None:
        """The run ended here (or was lost): no more writes for it."""
        self.owned.pop(run_id, None)

    async def request_cancel(self, run_id: str) -> None:
        async with self._conn() as conn:
            await conn.execute("UPDATE runs SET cancel_requested = true WHERE run_id = $1", run_id)
        await self.notify_control({"cancel": run_id})

    async def cancel_requests(self) -> list[str]:
        """Runs of this node whose cancel was asked through another node."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT run_id FROM runs WHERE owner = $1 AND cancel_requested AND status IN ({UNFINISHED_SQL})",
                self.node_id,
            )
        return [row[0] for row in rows]

    async def heads(self, run_ids: list[str]) -> dict[str, int]:
        """The last seq of each run (for the periodic catch-up of other nodes' runs)."""
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT run_id, last_seq FROM runs WHERE run_id = ANY($1::text[])", run_ids)
        return {row[0]: int(row[1]) for row in rows}

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
        self, workflow: str | None, status: str | None, limit: int, before: str | None
    ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        query, params = sql.list_runs_query(POSTGRES, workflow, status, limit, before)
        async with self._conn() as conn:
            rows = await conn.fetch(query, *params)
        return [listed_run(tuple(row)) for row in rows[:limit]], len(rows) > limit

    async def unfinished_runs(self) -> list[dict[str, Any]]:
        """Nothing to resume by itself: in a cluster, runs are claimed (see `claim`)."""
        return []

    async def due_waits(self, workflows: list[str], limit: int) -> list[tuple[str, float]]:
        async with self._conn() as conn:
            rows = await conn.fetch(POSTGRES.sql(sql.DUE_WAITS, len(workflows)), workflows, limit)
        return [(row[0], float(row[1])) for row in rows]


def _payload(node_id: str, message: dict[str, Any]) -> str:
    return orjson.dumps({"node": node_id, **message}).decode()
