"""A cluster's bookkeeping in PostgreSQL: nodes and their heartbeats, which node owns which
run (with an epoch, the fencing token), claims, takeovers, cancel requests, and the fence
every write transaction checks. The `Coordination` of a PostgreSQL store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..wire import utc_now
from .base import RUN_COLUMNS, SUSPENDED_SQL, UNFINISHED_SQL, Batch, row_to_run
from .pg_listen import CONTROL_CHANNEL, Listener, payload

# Nobody holds the run, or the node that holds it has gone silent ($2 the takeover seconds;
# NULL: free runs only). Never this node's own ($3): it runs those already.
_UNHELD = """(
        owner IS NULL
        OR ($2::float8 IS NOT NULL AND owner <> $3
            AND owner NOT IN (SELECT node_id FROM nodes WHERE seen_at > now() - make_interval(secs => $2::float8)))
    )"""
# Runs a node may take: pending or running, and unheld.
_ORPHANED = f"status IN ({UNFINISHED_SQL}) AND {_UNHELD}"
# What a claim takes ($1 how many, $4 the workflows, $5 now): due runs (a delayed one waits for
# its time), highest priority first, then oldest; of a concurrency key, only as many as its
# limit leaves beside the runs of that key live nodes hold (pending or running: a waiting
# run does not count). Claims take the CLAIM_LOCK, so these counts hold until they commit.
# It walks the claim order's index (runs_claim_order) and stops after a few times $1 runs
# whose key has room; a key's room is counted from the runs held (runs_held_by_key), and
# ranked among those few, so its cost grows with $1, with the held runs of the keys it
# meets, and with the due runs it walks past because their key is full, not with the runs
# pending. A run behind a full key never holds back another key's.
_DUE = f"{_ORPHANED} AND workflow = ANY($4::text[]) AND (scheduled_for IS NULL OR scheduled_for <= $5)"
_HELD = f"""(SELECT count(*) FROM runs k WHERE k.concurrency_key = r.concurrency_key
        AND k.status IN ({UNFINISHED_SQL}) AND k.owner IS NOT NULL AND NOT {_UNHELD.replace("owner", "k.owner")})"""
_CLAIM = f"""SELECT n, owner FROM (
        SELECT n, owner, priority, concurrency_key IS NULL
            OR held + row_number() OVER (PARTITION BY concurrency_key ORDER BY priority DESC, n)
                <= coalesce(concurrency_limit, 1) AS room
        FROM (
            SELECT n, owner, priority, concurrency_key, concurrency_limit,
                CASE WHEN concurrency_key IS NULL THEN 0 ELSE {_HELD} END AS held
            FROM runs r WHERE {_DUE} AND (concurrency_key IS NULL OR {_HELD} < coalesce(concurrency_limit, 1))
            ORDER BY priority DESC, n LIMIT $1 * 4 FOR UPDATE SKIP LOCKED
        ) candidates
    ) ranked WHERE room ORDER BY priority DESC, n LIMIT $1"""
CLAIM_LOCK = 0x72756E63  # "runc": the advisory lock every claim holds while it decides
# A waiting run a node may take to answer, cancel or expire it: unheld too.
_FREE_WAITING = f"status IN ({SUSPENDED_SQL}) AND {_UNHELD}"

Connect = Callable[[], Any]  # an async context manager giving a pooled connection


class PostgresCluster:
    """This node among the nodes of one PostgreSQL database."""

    def __init__(self, node_id: str, connect: Connect, listener: Listener) -> None:
        self.node_id = node_id
        self.owned: dict[str, int] = {}  # run_id -> epoch this node writes it with
        self._conn = connect
        self.listener = listener

    def on_events(self, callback: Callable[[dict[str, int] | None, set[str] | None], None]) -> None:
        """See Listener.on_events."""
        self.listener.on_events(callback)

    def on_control(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self.listener.on_control(callback)

    async def join(self) -> None:
        """Come (back): runs left by this node id's previous life are free to claim now."""
        async with self._conn() as conn:
            await conn.execute(
                f"UPDATE runs SET owner = NULL WHERE owner = $1 AND status IN ({UNFINISHED_SQL}, {SUSPENDED_SQL})",
                self.node_id,
            )
        await self.heartbeat()

    async def leave(self, conn: Any) -> None:
        """Go: this node's unfinished runs are orphans at once, and the others are told to look."""
        await conn.execute("DELETE FROM nodes WHERE node_id = $1", self.node_id)
        await conn.execute("SELECT pg_notify($1, $2)", CONTROL_CHANNEL, payload(self.node_id, {"pending": True}))

    def owner_of(self, run_id: str) -> tuple[str | None, int]:
        """(owner, epoch) to write for a run: this node at its epoch, or nobody."""
        epoch = self.owned.get(run_id)
        return (self.node_id if epoch is not None else None), (epoch or 0)

    def fence(self, batch: Batch) -> tuple[list[str], list[int]]:
        """The runs of a batch (other than new ones) with the epoch this node writes each one
        at (-1: not its own): the write locks those rows and writes only those it still owns
        at that epoch (store/pg_batch.py), then tells `lose` of the others."""
        ids = [r for r in {*batch.runs, *batch.seqs} if r not in batch.created]
        return ids, [self.owned.get(r, -1) for r in ids]

    def lose(self, lost: set[str]) -> None:
        """These runs are another node's now: this node writes them no more."""
        for run_id in lost:
            self.owned.pop(run_id, None)

    async def heartbeat(self) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO nodes (node_id) VALUES ($1) ON CONFLICT (node_id) DO UPDATE SET seen_at = now()",
                self.node_id,
            )

    async def claim(
        self, limit: int, takeover_seconds: float | None, workflows: list[str]
    ) -> list[tuple[dict[str, Any], bool]]:
        """Take up to `limit` due runs of these workflows that no live node owns, highest
        priority then oldest first, and of each concurrency key only as many as it has room
        for: (snapshot, taken over from another node). With `takeover_seconds` None, only
        runs that have no owner at all."""
        if limit <= 0:
            return []
        seconds = float(takeover_seconds) if takeover_seconds is not None else None
        return await self._take(_CLAIM, limit, seconds, self.node_id, workflows, utc_now(), serial=True)

    async def claim_run(self, run_id: str, takeover_seconds: float) -> tuple[dict[str, Any], bool] | None:
        """Take one run if no live node owns it (to cancel it here), else None."""
        taken = await self._take(
            f"SELECT n, owner FROM runs WHERE run_id = $1 AND {_ORPHANED} FOR UPDATE",
            run_id,
            float(takeover_seconds),
            self.node_id,
        )
        return taken[0] if taken else None

    async def _take(self, chosen: str, *params: Any, serial: bool = False) -> list[tuple[dict[str, Any], bool]]:
        """Own the runs `chosen` (a SELECT of n, owner) selects ($3 is this node), one epoch
        up: (snapshot, taken over from another node) for each. `serial`: one such take at a
        time in the whole cluster, so that two nodes never both see a key's last room."""
        async with self._conn() as conn, conn.transaction():
            if serial:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            rows = await conn.fetch(
                f"""WITH chosen AS ({chosen})
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
        chosen = f"SELECT n, owner FROM runs WHERE run_id = $1 AND {_FREE_WAITING} FOR UPDATE"
        taken = await self._take(chosen, run_id, takeover_seconds, self.node_id)
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

    async def request_cancel(self, run_id: str, by: str | None) -> None:
        async with self._conn() as conn:
            await conn.execute("UPDATE runs SET cancel_requested = true, cancel_by = $2 WHERE run_id = $1", run_id, by)
        await self.notify_control({"cancel": run_id, "by": by})

    async def cancel_requests(self) -> list[tuple[str, str | None]]:
        """Runs of this node whose cancel was asked through another node, and by whom."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT run_id, cancel_by FROM runs"
                f" WHERE owner = $1 AND cancel_requested AND status IN ({UNFINISHED_SQL})",
                self.node_id,
            )
        return [(row[0], row[1]) for row in rows]

    async def heads(self, run_ids: list[str]) -> dict[str, int]:
        """The last seq of each run (for the periodic catch-up of other nodes' runs)."""
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT run_id, last_seq FROM runs WHERE run_id = ANY($1::text[])", run_ids)
        return {row[0]: int(row[1]) for row in rows}

    async def notify_control(self, message: dict[str, Any]) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT pg_notify($1, $2)", CONTROL_CHANNEL, payload(self.node_id, message))
