"""What storage is made of, whatever the database: stored events, batches, the backend
interface, and the interface the engine and the endpoints use (`RunStore`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from ..bounds import truncated_marker
from ..fold import run_progress
from ..jsontext import dumps
from ..vocabulary import FINISHED_STATUSES, SUSPENDED_STATUSES, TERMINAL_EVENTS, UNFINISHED_STATUSES, sql_list
from .schedules import ScheduleRow

# Statuses in SQL, from the vocabulary (the migrations keep the literals they were written with).
FINISHED_SQL = sql_list(FINISHED_STATUSES)  # 'completed', 'failed', 'cancelled'
UNFINISHED_SQL = sql_list(UNFINISHED_STATUSES)  # 'pending', 'running'
SUSPENDED_SQL = sql_list(SUSPENDED_STATUSES)  # 'waiting', 'sleeping'

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
    "waiting_for",
    "started_by",  # the snapshot's `owner`: the sub of the identity that started the run
    "scheduled_for",  # (8.2) when a delayed run may start; NULL: at once
    "priority",  # (8.2) among due pending runs, higher starts first
    "concurrency_key",  # (8.2) at most concurrency_limit runs with one key running at once
    "concurrency_limit",
    "sleeps_until",  # (8.1) the snapshot's `wake_at`: while a run sleeps, when it wakes
)
# Columns whose snapshot key differs (PostgreSQL's `owner` column is the node running a run).
SNAPSHOT_KEY = {"started_by": "owner", "sleeps_until": "wake_at"}
JSON_COLUMNS = ("input", "output", "error", "steps", "waiting_for")
# What a write stores: the snapshot's columns, then when a suspended run must be looked at
# (epoch seconds: its earliest request expiry or sleep end; NULL if none), for the watch.
WRITE_COLUMNS = (*RUN_COLUMNS, "wake_at")
_LISTS = ("steps", "waiting_for")  # JSON columns that are never null


def log_migrated(where: str, was: int, now: int) -> None:
    """One line for a store made or brought up to date (none when it was up to date)."""
    if was == 0:
        logging.getLogger("runcast.store").info("store %s created (schema version %d)", where, now)
    elif was < now:
        logging.getLogger("runcast.store").info("store %s migrated from schema version %d to %d", where, was, now)


class StoreError(RuntimeError):
    """The database cannot be used as it is (not runcast's, newer, unreadable, in use):
    the message names it and says what to do."""


class StoreLocked(StoreError):
    """Another process already runs this database's runs."""


class RunLost(RuntimeError):
    """This node no longer owns the run (another node took it over): its writes are dropped."""


class RunExists(RuntimeError):
    """A run to be created was already in the database (created through another node, or by
    another start of this one): nothing was written for it. Decided by the database, in the
    transaction that would have created it."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a list (or the runs feed) shows: of a workflow, a status, an owner (the
    sub that started them), and only these run ids; None is any."""

    workflow: str | None = None
    status: str | None = None
    owner: str | None = None
    run_ids: frozenset[str] | None = None

    def matches(self, run: dict[str, Any]) -> bool:
        return (
            (self.workflow is None or run.get("workflow") == self.workflow)
            and (self.status is None or run.get("status") == self.status)
            and (self.owner is None or run.get("owner") == self.owner)
            and (self.run_ids is None or run.get("run_id") in self.run_ids)
        )


ANY_RUN = RunFilter()
MAX_CURSOR = 2**63 - 1


def parse_cursor(before: str) -> int:
    """A `list_runs` cursor this server gave (a row number), or ValueError."""
    if not (before.isascii() and before.isdigit()) or len(before) > 19 or int(before) > MAX_CURSOR:
        raise ValueError("cursor 'before' is not one this server gave")
    return int(before)


@dataclass(slots=True)
class StoredEvent:
    """One committed event: its seq and its frame (JSON text), encoded once and sent as is
    to everyone. `wire` is where the transport keeps its bytes once it has framed it."""

    run_id: str
    seq: int
    event: str
    frame: str
    wire: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS


@dataclass(slots=True)
class BatchStats:
    """What the writer has done, for benchmarks and metrics."""

    batches: int = 0
    ops: int = 0
    events: int = 0
    commit_seconds: float = 0.0
    largest_batch: int = 0
    retries: int = 0


@dataclass
class Batch:
    """One transaction's worth of writes, numbered and encoded by the writer."""

    events: list[tuple[str, int, str, str]] = field(default_factory=list)  # run_id, seq, event, frame
    stored: list[StoredEvent] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # the latest state of each run
    seqs: dict[str, int] = field(default_factory=dict)  # the last seq of each run in this batch
    futures: list[tuple[asyncio.Future[int], int]] = field(default_factory=list)
    prunes: list[tuple[str, int, asyncio.Future[int] | None]] = field(default_factory=list)
    sql: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)  # other writes: (sql.py template, params)
    created: set[str] = field(default_factory=set)  # runs this batch creates
    existed: set[str] = field(default_factory=set)  # of those, the ones the database already had: not written
    lost: set[str] = field(default_factory=set)  # runs the backend found owned by another node: not written

    @property
    def empty(self) -> bool:
        return not (self.events or self.runs or self.prunes or self.sql)

    def drop(self, run_ids: set[str]) -> None:
        """Take every write of these runs out of the batch (another node owns them, or they
        existed already)."""
        self.events = [e for e in self.events if e[0] not in run_ids]
        self.stored = [e for e in self.stored if e.run_id not in run_ids]
        for run_id in run_ids:
            self.runs.pop(run_id, None)
            self.seqs.pop(run_id, None)
        self.created -= run_ids

    def seq_only(self) -> list[tuple[int, str]]:
        """(last_seq, run_id) of runs whose state did not change here: only last_seq moves."""
        return [(seq, run_id) for run_id, seq in self.seqs.items() if run_id not in self.runs]


def run_params(state: dict[str, Any], last_seq: int) -> tuple[Any, ...]:
    """A run's state as the values of WRITE_COLUMNS (JSON columns encoded)."""
    values: list[Any] = []
    for column in RUN_COLUMNS:
        key = SNAPSHOT_KEY.get(column, column)
        if key == "last_seq":
            values.append(last_seq)
        elif key in _LISTS:
            values.append(dumps(state.get(key) or []))
        elif key in JSON_COLUMNS:
            value = state.get(key)
            values.append(dumps(value) if value is not None else None)
        elif key == "priority":
            values.append(state.get(key) or 0)
        else:
            values.append(state.get(key))
    values.append(wake_at(state))
    return tuple(values)


def wake_at(state: dict[str, Any]) -> float | None:
    """When a suspended run must be looked at (epoch seconds): the earliest expiry of its
    open requests or end of its steps' sleeps; None if it has neither (or is not suspended)."""
    if state.get("status") not in SUSPENDED_STATUSES:
        return None
    times = [r["expires_at"] for r in state.get("waiting_for") or () if r.get("expires_at") is not None]
    times += [_epoch(st["wake_at"]) for st in state.get("steps") or () if st.get("wake_at")]
    return min(times) if times else None


def _epoch(wire_time: str) -> float:
    return datetime.fromisoformat(wire_time).timestamp()


LIST_VALUE_CAP = 8192  # input, output and error longer than this (bytes of JSON) are left out of list_runs
_CAPPED = ("input", "output", "error")


def list_columns(steps_summary: str, size: str) -> str:
    """What `list_runs` reads of each run, so that a page costs the event loop little
    whatever the runs hold: input, output and error only when at most LIST_VALUE_CAP bytes
    (with their sizes), and of the steps only their names and statuses. `steps_summary` is
    the dialect's SQL for that JSON array; `size`, its SQL for a column's size in bytes."""
    capped = ", ".join(
        f"CASE WHEN {size.format(c)} <= {LIST_VALUE_CAP} THEN {c} END, {size.format(c)}" for c in _CAPPED
    )
    times = "created_at, started_at, finished_at"
    order = "scheduled_for, priority, concurrency_key, concurrency_limit, sleeps_until"
    rest = f"last_seq, {steps_summary}, waiting_for, started_by, {order}"
    return f"n, run_id, workflow, status, {capped}, {times}, {rest}"


_ORDER_KEYS = ("scheduled_for", "priority", "concurrency_key", "concurrency_limit", "wake_at")


def listed_run(row: Any) -> tuple[str, dict[str, Any]]:
    """(cursor, run without steps) from a row of `list_columns`: a value too long to list
    is `{"truncated": true, "bytes": N, "full": ...}`, named in the run's `truncated`."""
    n, run_id, workflow, status, *capped = row[: 4 + 2 * len(_CAPPED)]
    created_at, started_at, finished_at, last_seq, steps, waiting_for, owner, *order = row[4 + 2 * len(_CAPPED) :]
    run: dict[str, Any] = {"run_id": run_id, "workflow": workflow, "status": status}
    truncated = []
    for name, value, size in zip(_CAPPED, capped[0::2], capped[1::2], strict=True):
        if value is None and size is not None:
            run[name] = truncated_marker(int(size), run_id)
            truncated.append(name)
        else:
            run[name] = orjson.loads(value) if value is not None else None
    run.update(created_at=created_at, started_at=started_at, finished_at=finished_at, last_seq=last_seq, owner=owner)
    run.update(zip(_ORDER_KEYS, order, strict=True))
    run["waiting_for"] = orjson.loads(waiting_for) if waiting_for else []
    run.update(run_progress(orjson.loads(steps) if steps else []))
    if truncated:
        run["truncated"] = truncated
    return str(n), run


def row_to_run(row: Any, *, steps: bool = True) -> dict[str, Any]:
    """A stored row (RUN_COLUMNS in order) as the run snapshot of the contract; without
    steps, it says where the run is instead (`current_step`, `steps_done`, `steps_total`)."""
    run = {SNAPSHOT_KEY.get(c, c): value for c, value in zip(RUN_COLUMNS, row, strict=True)}
    for key in JSON_COLUMNS:
        value = run[key]
        run[key] = orjson.loads(value) if value is not None else None
    if not steps:
        run.update(run_progress(run.pop("steps") or []))
    return run


class Coordination(Protocol):
    """A shared database's bookkeeping for a cluster of nodes (PostgreSQL): who owns which
    run, heartbeats, claims, takeovers, cancels asked through other nodes, wake-ups."""

    node_id: str

    async def heartbeat(self) -> None: ...
    async def claim(
        self, limit: int, takeover_seconds: float | None, workflows: list[str]
    ) -> list[tuple[dict[str, Any], bool]]: ...
    async def claim_run(self, run_id: str, takeover_seconds: float) -> tuple[dict[str, Any], bool] | None: ...
    async def claim_waiting(self, run_id: str, takeover_seconds: float) -> dict[str, Any] | None: ...
    async def release(self, run_id: str) -> None: ...
    def take_new(self, run_id: str) -> None: ...
    def owns(self, run_id: str) -> bool: ...
    def forget(self, run_id: str) -> None: ...
    async def request_cancel(self, run_id: str, by: str | None) -> None: ...
    async def cancel_requests(self) -> list[tuple[str, str | None]]: ...
    async def notify_control(self, message: dict[str, Any]) -> None: ...
    async def heads(self, run_ids: list[str]) -> dict[str, int]: ...
    def on_events(self, callback: Callable[[dict[str, int] | None, set[str] | None], None]) -> None: ...
    def on_control(self, callback: Callable[[dict[str, Any]], None]) -> None: ...


class Backend(Protocol):
    """One database: its SQL and its connections, nothing more. The writer (`Store`) owns
    batching, numbering and delivery; a backend only writes a batch in one transaction
    and answers reads."""

    url: str
    coordination: Coordination | None  # set when several nodes share this database

    def preflight(self) -> None:
        """Checks that can be made before serving; raises StoreError naming what to fix."""
        ...

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def abandon(self) -> None: ...
    async def write(self, batch: Batch) -> list[int]:
        """Write the batch in one transaction; returns how many runs each prune deleted."""
        ...

    def transient(self, exc: BaseException) -> bool:
        """True if a failed write may succeed later unchanged (disk full, I/O error, lost
        connection): the writer retries it. False for a bug: the batch's callers fail."""
        ...

    async def last_seq(self, run_id: str) -> int | None: ...
    async def get_run(self, run_id: str, *, steps: bool = True) -> dict[str, Any] | None: ...
    async def read_events(self, run_id: str, after: int, limit: int) -> list[StoredEvent]: ...
    async def list_runs(
        self, which: RunFilter, limit: int, before: str | None
    ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """(cursor, run) rows newest first, at most `limit`, and whether more follow.
        A `before` this backend did not give is a ValueError."""
        ...

    async def unfinished_runs(self) -> list[dict[str, Any]]: ...
    async def due_waits(self, workflows: list[str], limit: int) -> list[tuple[str, float]]:
        """(run_id, wake_at) of these workflows' waiting runs with a timeout, soonest first,
        at most `limit` (a server expires only what it could continue)."""
        ...

    async def list_schedules(self) -> list[ScheduleRow]: ...


class RunStore(Protocol):
    """What the engine and the endpoints need from storage."""

    stats: BatchStats

    def add_listener(self, listener: Callable[[list[StoredEvent]], None]) -> None: ...
    def add_run_listener(self, listener: Callable[[Batch], None]) -> None: ...
    def add_batch_observer(self, observer: Callable[[int, float], None]) -> None: ...
    @property
    def queued(self) -> int: ...
    @property
    def degraded(self) -> str | None: ...
    @property
    def coordination(self) -> Coordination | None: ...
    def add_lost_listener(self, listener: Callable[[set[str]], None]) -> None: ...
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def create_run(self, row: dict[str, Any]) -> None: ...
    async def append(
        self, run_id: str, event: str, step: str | None, data: Any, state: dict[str, Any] | None = None
    ) -> asyncio.Future[int]: ...
    def append_nowait(
        self,
        run_id: str,
        event: str,
        step: str | None,
        data: Any,
        state: dict[str, Any] | None = None,
        ts: str | None = None,
    ) -> asyncio.Future[int]: ...
    def emit(self, run_id: str, event: str, step: str | None, data: Any) -> None: ...
    async def flush(self) -> None: ...
    async def backlog(self) -> None: ...
    async def prune(self, finished_before: str, limit: int) -> int: ...
    async def get_run(self, run_id: str, *, steps: bool = True) -> dict[str, Any] | None: ...
    async def read_events(self, run_id: str, after: int, limit: int) -> list[StoredEvent]: ...
    async def list_runs(
        self, which: RunFilter, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...
    async def unfinished_runs(self) -> list[dict[str, Any]]: ...
    async def due_waits(self, workflows: list[str], limit: int) -> list[tuple[str, float]]: ...
    async def write_sql(self, writes: list[tuple[str, tuple[Any, ...]]]) -> None: ...
    async def list_schedules(self) -> list[ScheduleRow]: ...
    def release(self, run_id: str) -> None: ...
    def committed_head(self, run_id: str) -> int | None: ...
    def transient(self, exc: BaseException) -> bool: ...
