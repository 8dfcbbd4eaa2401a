"""A commit batch on PostgreSQL in one statement, so one round trip: the fence, the new runs,
the changed runs, the events, the last seqs and the NOTIFY are the parts of one `WITH`.

Each round trip costs the node's event loop (asyncpg's messages, a wake-up) and the database
(a statement to bind and run, on the same two cores here): a batch of six statements in a
transaction was eight of them. A statement that is not in a transaction block commits alone,
so this one is the transaction, unless the batch also prunes or carries other writes (then
the caller opens one around it).

What each part does is what the statements did one after the other:
- `fenced` locks the rows of the runs the batch writes (other than new ones) that this node
  still owns at its epoch; the writes of the others (lost) are left out of every part;
- `made` inserts the new runs; an id the table has (a start of the same id through another
  node) is skipped and not returned, and its events are left out too;
- `changed` writes the new state of the fenced runs that have one (the write that makes a run
  wait or sleep lets go of it: owner NULL), `moved` the last seq of those that have not;
- `added` inserts the events of fenced and made runs;
- `told` sends the NOTIFY, only when nothing was left out: else the caller sends one that
  names only what was written.
All parts see one snapshot; `fenced` is read first (every writing part refers to it), and the
row locks it takes are held to the commit, as `SELECT ... FOR UPDATE` did.
"""

from __future__ import annotations

from typing import Any

from .base import SUSPENDED_SQL, WRITE_COLUMNS

# WRITE_COLUMNS, then owner (the node) and epoch: text but these.
_NOT_TEXT = {"last_seq": "bigint", "priority": "integer", "concurrency_limit": "integer", "wake_at": "float8"}
ROW_TYPES = (*(_NOT_TEXT.get(c, "text") for c in WRITE_COLUMNS), "text", "bigint")
_ROW = f"{', '.join(WRITE_COLUMNS)}, owner, epoch"
_SET = ", ".join(f"{c} = excluded.{c}" for c in WRITE_COLUMNS if c not in ("run_id", "created_at"))


def _arrays(first: int, types: tuple[str, ...]) -> str:
    return ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(types, start=first))


_NEW = 4  # $1-$3: the fence's run ids, epochs and this node
_CHANGED = _NEW + len(ROW_TYPES)
_EVENTS = _CHANGED + len(ROW_TYPES)
_SEQS = _EVENTS + 4
_NOTIFY = _SEQS + 2  # the channel, and the payload (NULL: nothing to tell)

WRITE_BATCH = f"""WITH fenced AS (
    SELECT r.run_id FROM runs r JOIN unnest($1::text[], $2::bigint[]) AS o(run_id, epoch)
        ON r.run_id = o.run_id AND r.epoch = o.epoch AND r.owner = $3
    ORDER BY r.run_id FOR UPDATE OF r
), made AS (
    INSERT INTO runs ({_ROW}) SELECT * FROM unnest({_arrays(_NEW, ROW_TYPES)})
    ON CONFLICT (run_id) DO NOTHING RETURNING run_id
), changed AS (
    INSERT INTO runs ({_ROW}) SELECT * FROM unnest({_arrays(_CHANGED, ROW_TYPES)}) AS u({_ROW})
        WHERE u.run_id IN (SELECT run_id FROM fenced)
    ON CONFLICT (run_id) DO UPDATE SET {_SET},
        owner = CASE WHEN excluded.status IN ({SUSPENDED_SQL}) THEN NULL ELSE runs.owner END
    RETURNING 1
), added AS (
    INSERT INTO events (run_id, seq, event, frame)
    SELECT * FROM unnest({_arrays(_EVENTS, ("text", "bigint", "text", "text"))}) AS e(run_id, seq, event, frame)
        WHERE e.run_id IN (SELECT run_id FROM fenced) OR e.run_id IN (SELECT run_id FROM made)
    RETURNING 1
), moved AS (
    UPDATE runs SET last_seq = u.seq FROM unnest({_arrays(_SEQS, ("text", "bigint"))}) AS u(run_id, seq)
        WHERE runs.run_id = u.run_id AND u.run_id IN (SELECT run_id FROM fenced)
    RETURNING 1
), told AS (
    SELECT pg_notify(${_NOTIFY}, ${_NOTIFY + 1}) WHERE ${_NOTIFY + 1}::text IS NOT NULL
        AND (SELECT count(*) FROM fenced) = cardinality($1::text[])
        AND (SELECT count(*) FROM made) = cardinality(${_NEW}::text[])
)
SELECT ARRAY(SELECT run_id FROM fenced) AS kept, ARRAY(SELECT run_id FROM made) AS made,
    (SELECT count(*) FROM told) = 1 AS told"""


def columns(rows: list[tuple[Any, ...]], width: int = len(ROW_TYPES)) -> list[list[Any]]:
    """Rows of `width` values (ROW_TYPES' by default) as one array per column (empty arrays
    for no rows)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
