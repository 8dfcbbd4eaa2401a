"""The group-commit writer, the same for every database.

Writes are queued as operations; one writer task takes everything queued, numbers the
events (seq, per run, in queue order), encodes each once, and hands the batch to the
backend to write in one transaction. Only after the commit are futures resolved and
listeners (the broker) given the events: nothing is shown before it is stored.

A batch that fails for a reason that can pass (a full disk, an I/O error, a lost
connection) is written again, unchanged, with backoff, until it commits: its seqs stay
taken, so numbering never skips or repeats, and producers wait (the queue fills to its
high-water mark) instead of running ahead of what is stored. Meanwhile `degraded` says
why, so that the server can refuse new starts and /healthz can say 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..bounds import page_of_runs
from ..redaction import redact
from ..vocabulary import TERMINAL_EVENTS
from ..wire import event_frame, utc_now
from .base import Backend, Batch, BatchStats, Coordination, RunExists, RunFilter, RunLost, StoredEvent
from .schedules import ScheduleRow

log = logging.getLogger("runcast.store")

MAX_BATCH = 4096  # ops per transaction; bounds one commit's latency
HIGH_WATER = 20_000  # queued ops past which producers wait for the writer
RETRY_FIRST_SECONDS = 0.05  # the first wait before a failed write is tried again
RETRY_MAX_SECONDS = 2.0  # the longest wait between tries
CLOSE_GIVE_UP_SECONDS = 3.0  # on close, how long to keep trying a store that cannot commit

T = TypeVar("T")


@dataclass(slots=True)
class _Op:
    run_id: str
    event: str | None  # None: create the run only
    step: str | None = None
    data: Any = None
    state: dict[str, Any] | None = None
    future: asyncio.Future[int] | None = None
    prune: tuple[str, int] | None = None  # (finished before, at most this many runs)
    ts: str | None = None  # the event's time, when its state was folded with it (else the batch's)
    sql: list[tuple[str, tuple[Any, ...]]] | None = None  # other writes (schedules): sql.py templates, params


class Store:
    """Runs and events on a backend, written by one group-committing writer task."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.stats = BatchStats()
        self._ops: deque[_Op] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_seq: dict[str, int] = {}
        self._committed: dict[str, int] = {}  # runs this process writes: their last committed seq
        self._listeners: list[Callable[[list[StoredEvent]], None]] = []
        self._run_listeners: list[Callable[[Batch], None]] = []
        self._batch_observers: list[Callable[[int, float], None]] = []
        self._closing = False
        self._degraded: str | None = None
        self._lost_listeners: list[Callable[[set[str]], None]] = []

    @property
    def url(self) -> str:
        """Where the store is, for logs and messages: with no password (redacted)."""
        return redact(self.backend.url)

    def add_listener(self, listener: Callable[[list[StoredEvent]], None]) -> None:
        """Call `listener` with each committed batch of events, in seq order per run."""
        self._listeners.append(listener)

    def add_run_listener(self, listener: Callable[[Batch], None]) -> None:
        """Call `listener(batch)` after each commit that wrote runs' state: `batch.runs` holds
        the latest state of each (without a database read), `batch.seqs` their last seqs,
        `batch.created` the new ones. Listeners must not change the batch."""
        self._run_listeners.append(listener)

    def add_batch_observer(self, observer: Callable[[int, float], None]) -> None:
        """Call `observer(ops, seconds)` after each committed batch (for metrics)."""
        self._batch_observers.append(observer)

    @property
    def queued(self) -> int:
        """Operations waiting for the writer."""
        return len(self._ops)

    @property
    def coordination(self) -> Coordination | None:
        """The cluster's bookkeeping when several nodes share the database, else None."""
        return self.backend.coordination

    def add_lost_listener(self, listener: Callable[[set[str]], None]) -> None:
        """Call `listener(run_ids)` when writes were dropped because another node owns those runs now."""
        self._lost_listeners.append(listener)

    @property
    def degraded(self) -> str | None:
        """Why the store cannot commit right now (it keeps trying), or None when it can."""
        return self._degraded

    # ---- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        await self.backend.open()
        self._task = asyncio.create_task(self._write_loop(), name="runcast-store-writer")

    async def close(self) -> None:
        """Write what is queued, then close. A store that cannot commit is given a few
        seconds; then what is not stored is left to the next start (runs resume)."""
        if self._task is not None:
            if not self._task.done():
                await self._flush_or_give_up()
                self._closing = True
                self._wake.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(self._task, CLOSE_GIVE_UP_SECONDS)
            self._task = None
        await self.backend.close()

    async def _flush_or_give_up(self) -> None:
        flushed = asyncio.ensure_future(self.flush())
        failing_since: float | None = None
        while not flushed.done():
            await asyncio.wait({flushed}, timeout=0.25)
            if self._degraded is None:
                failing_since = None
            elif failing_since is None:
                failing_since = time.monotonic()
            elif time.monotonic() - failing_since > CLOSE_GIVE_UP_SECONDS:
                log.error("store %s: closing with writes it could not commit (%s)", self.url, self._degraded)
                if self._task is not None:
                    self._task.cancel()
                break
        if not flushed.done():
            flushed.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await flushed

    def abandon(self) -> None:
        """Let go without waiting (the loop is ending): what is not committed is treated as a
        crash, and the runs resume next time."""
        self._closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        self.backend.abandon()

    # ---- writes ----------------------------------------------------------------------

    async def create_run(self, row: dict[str, Any]) -> None:
        """Store a new run; returns once it is committed."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._push(_Op(row["run_id"], None, state=row, future=future))
        await future

    async def append(
        self, run_id: str, event: str, step: str | None, data: Any, state: dict[str, Any] | None = None
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
        ts: str | None = None,
    ) -> asyncio.Future[int]:
        """`append` without the wait: for callbacks that cannot await. `ts` is the event's
        time when `state` was folded with it (default: when its batch is numbered)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._push(_Op(run_id, event, step, data, state, future, ts=ts))
        return future

    def emit(self, run_id: str, event: str, step: str | None, data: Any) -> None:
        """Queue an event that changes no state, with no future to tell its commit: the cheap
        way for the many events nobody waits for (streamed text, progress, tool calls);
        subscribers hear of them after the commit anyway. A change of state goes through
        `append_nowait` with the state it makes (engine/runs.record)."""
        self._push(_Op(run_id, event, step, data))

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

    async def write_sql(self, writes: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Other writes (each a template of store/sql.py or store/schedules.py and its
        parameters), in the writer's next transaction; returns once committed."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._push(_Op("", None, future=future, sql=writes))
        await future

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
            # queued, so that acknowledged work is kept, then stop (unless it cannot commit).
            self._closing = True
            if self._degraded is None:
                await self._drain()
            raise

    async def _drain(self) -> None:
        while self._ops:
            ops = [self._ops.popleft() for _ in range(min(len(self._ops), MAX_BATCH))]
            if len(self._ops) < HIGH_WATER // 2:
                self._drained.set()
            await self._write_batch(ops)
            # Let the tasks this commit woke run before the next batch is taken: what they
            # write at once (an awaited start's next start, a new run's first event) joins
            # it, instead of waiting a whole commit behind a batch that just missed it.
            await asyncio.sleep(0)
        self._drained.set()

    async def _write_batch(self, ops: list[_Op]) -> None:
        started = time.perf_counter()
        try:
            batch = await self._build(ops)
            pruned = await self._until_done("write", lambda: self.backend.write(batch)) if not batch.empty else []
        except Exception as exc:  # not a passing fault: the batch fails its callers, the writer carries on
            log.exception("store batch of %d ops failed", len(ops))
            for lost in [op.run_id for op in ops if op.event is not None]:
                self._last_seq.pop(lost, None)  # reload from the database next time
                self._committed.pop(lost, None)
            for op in ops:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(exc)
            return
        for (_, _, future), count in zip(batch.prunes, pruned, strict=True):
            if future is not None:
                batch.futures.append((future, count))
        if batch.lost:
            self._lose(ops, batch.lost)
        if batch.existed:
            self._refuse(ops, batch.existed)
        self._count(len(ops), len(batch.stored), time.perf_counter() - started)
        self._note_committed(batch)
        for future, seq in batch.futures:
            if not future.done():
                future.set_result(seq)
        if batch.stored:
            for listener in self._listeners:
                try:
                    listener(batch.stored)
                except Exception:  # a broken listener must not stop the writer
                    log.exception("store listener %r failed", listener)
        if batch.runs:
            for run_listener in self._run_listeners:
                try:
                    run_listener(batch)
                except Exception:  # a broken listener must not stop the writer
                    log.exception("store run listener %r failed", run_listener)

    def _note_committed(self, batch: Batch) -> None:
        """Remember how far each run this process writes is committed (before listeners hear
        of the batch): a subscription that has had all of it need not read the store."""
        committed = self._committed
        for run_id in batch.created:
            committed[run_id] = batch.seqs.get(run_id, 0)
        committed.update(batch.seqs)
        for event in batch.stored:
            if event.terminal:  # the run is over: nothing more is written by anyone
                committed.pop(event.run_id, None)

    def committed_head(self, run_id: str) -> int | None:
        """The run's last committed seq if this process writes the run and knows it (a new
        or running run of its own), else None: then only the store can say."""
        coordination = self.backend.coordination
        if coordination is not None and not coordination.owns(run_id):
            self._committed.pop(run_id, None)
            return None
        return self._committed.get(run_id)

    def _lose(self, ops: list[_Op], lost: set[str]) -> None:
        for run_id in lost:
            self._last_seq.pop(run_id, None)
            self._committed.pop(run_id, None)
        for op in ops:
            if op.run_id in lost and op.future is not None and not op.future.done():
                op.future.set_exception(RunLost(f"run {op.run_id} is owned by another node now"))
        for listener in self._lost_listeners:
            listener(lost)

    def _refuse(self, ops: list[_Op], existed: set[str]) -> None:
        """Fail the writes of runs that were to be created and existed already."""
        for run_id in existed:
            self._last_seq.pop(run_id, None)  # the existing run's own count is read afresh
        for op in ops:
            if op.run_id in existed and op.future is not None and not op.future.done():
                op.future.set_exception(RunExists(f"run {op.run_id} exists already"))

    def _count(self, ops: int, events: int, elapsed: float) -> None:
        self.stats.batches += 1
        self.stats.ops += ops
        self.stats.events += events
        self.stats.largest_batch = max(self.stats.largest_batch, ops)
        self.stats.commit_seconds += elapsed
        for observer in self._batch_observers:
            observer(ops, elapsed)

    async def _until_done(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` until it succeeds, waiting longer after each passing failure."""
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                result = await attempt()
            except Exception as exc:
                if not self.backend.transient(exc):
                    raise
                if self._degraded is None:
                    log.error("store %s cannot %s (%s); retrying until it can", self.url, what, exc)
                self._degraded = f"the store cannot {what}: {exc}"
                self.stats.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            if self._degraded is not None:
                log.warning("store %s recovered: writing again", self.url)
                self._degraded = None
            return result

    async def _build(self, ops: list[_Op]) -> Batch:
        batch = Batch()
        now = utc_now()  # the moment this batch is numbered: one clock read, not one per event
        for op in ops:
            if op.prune is not None:
                batch.prunes.append((*op.prune, op.future))
                continue
            if op.sql is not None:
                batch.sql.extend(op.sql)
                if op.future is not None:
                    batch.futures.append((op.future, 0))
                continue
            if op.event is None:
                if op.state is not None and op.run_id in batch.created:  # one batch, two starts of one id
                    if op.future is not None:
                        op.future.set_exception(RunExists(f"run {op.run_id} exists already"))
                    continue
                if op.state is not None:
                    batch.runs[op.run_id] = op.state
                    batch.created.add(op.run_id)
                    self._last_seq[op.run_id] = 0
                if op.future is not None:
                    batch.futures.append((op.future, 0))
                continue
            seq = self._last_seq.get(op.run_id)
            if seq is None:
                run_id = op.run_id
                seq = await self._until_done("read", lambda: self.backend.last_seq(run_id))  # noqa: B023
                if seq is None:  # a bug in the caller; fail that event alone
                    if op.future is not None:
                        op.future.set_exception(KeyError(f"event for unknown run {op.run_id}"))
                    continue
            try:
                frame = event_frame(op.run_id, seq + 1, op.event, op.step, op.ts or now, op.data)
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

    # ---- reads: straight to the backend ------------------------------------------------

    async def get_run(self, run_id: str, *, steps: bool = True) -> dict[str, Any] | None:
        """The committed snapshot of a run, or None."""
        return await self.backend.get_run(run_id, steps=steps)

    async def read_events(self, run_id: str, after: int, limit: int) -> list[StoredEvent]:
        """Committed events with seq > after, in seq order, at most `limit`."""
        return await self.backend.read_events(run_id, after, limit)

    def transient(self, exc: BaseException) -> bool:
        """True if a failed read or write may succeed later unchanged (a database restarting,
        a lost connection, a full disk): the caller tries again instead of giving up."""
        return self.backend.transient(exc)

    async def list_runs(
        self, which: RunFilter, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Runs newest first, without steps; `next` is the cursor for the following page.
        A page ends early when more would not fit in one reply frame."""
        rows, more = await self.backend.list_runs(which, limit, before)
        return page_of_runs(rows, more)

    async def unfinished_runs(self) -> list[dict[str, Any]]:
        """Runs left pending or running, oldest first: what a restart must continue."""
        return await self.backend.unfinished_runs()

    async def due_waits(self, workflows: list[str], limit: int) -> list[tuple[str, float]]:
        """(run_id, wake_at) of these workflows' waiting runs with a timeout, soonest first."""
        return await self.backend.due_waits(workflows, limit)

    async def list_schedules(self) -> list[ScheduleRow]:
        """Every stored schedule (those created over the wire, and what each one in code last did)."""
        return await self.backend.list_schedules()

    def release(self, run_id: str) -> None:
        """This process stops writing a run for now (it waits): forget its last seq, so that
        the next write reads it afresh (another node may have written meanwhile)."""
        self._last_seq.pop(run_id, None)
        self._committed.pop(run_id, None)
