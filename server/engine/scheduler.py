"""Starts the runs of schedules at their ticks (contract 8.3), on every node that serves
their workflows: a tick's run id is the same everywhere (`sched:<name>:<tick>`), so the
first node to start it starts it and the others' starts are idempotent no-ops.

What each schedule last did (its last tick, its last run) is kept in the database, so a
restart knows which ticks it missed: those in code are written there when served, those
created over the wire live there. A lone server reads the table when it starts and when
its schedules change; a cluster's nodes also every beat (another node may have created or
deleted one)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..protocol import Conflict, InvalidInput, RuncastError, UnknownWorkflow
from ..schedules import Schedule, tick_run_id
from ..store import RunStore
from ..store import schedules as table
from ..store.schedules import ScheduleRow, row_schedule, schedule_row
from ..waiting import cancelled, wait_set

log = logging.getLogger("runcast.schedules")

LONE_LOOK_SECONDS = 3600.0  # the longest a lone server sleeps between looks (a clock that jumps)

StartTick = Callable[[Schedule, str], Awaitable[Any]]  # start the run of one tick (by its run id)
# A tick whose start failed for one of these is passed over (the next tick tries again);
# for any other reason (the store is away, the server overloaded), it is tried again.
_PASSED_OVER = (Conflict, InvalidInput, UnknownWorkflow)


@dataclass
class Entry:
    schedule: Schedule
    last_tick: float  # the last tick handled (or, before its first, when the schedule was made)
    last_run_id: str | None
    caught_up: bool = False  # its ticks missed while no server ran have been dealt with


class Scheduler:
    """The schedules of the workflows served here, ticking; and the stored ones' changes."""

    def __init__(
        self,
        store: RunStore,
        in_code: Callable[[], list[Schedule]],
        served: Callable[[], set[str]],
        start: StartTick,
        every: float = LONE_LOOK_SECONDS,
    ) -> None:
        self.store = store
        self.in_code = in_code
        self._served = served
        self._start = start
        self.every = every
        self.entries: dict[str, Entry] = {}  # name -> what ticks here
        self._changed = asyncio.Event()
        self._stale = True  # the table must be read before the next tick
        self._task: asyncio.Task[None] | None = None
        self._stored_code: set[tuple[Any, ...]] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="runcast-schedules")

    def changed(self) -> None:
        """Read the schedules again now (one was created or deleted, a workflow registered)."""
        self._stale = True
        self._changed.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)

    def abandon(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # ---- what is stored ------------------------------------------------------------------

    async def stored(self) -> dict[str, ScheduleRow]:
        return {row.name: row for row in await self.store.list_schedules()}

    async def create(self, schedule: Schedule) -> ScheduleRow:
        """Store a schedule made over the wire; Conflict if its name is taken (in code, or
        stored, by whoever stored it first in a race between nodes)."""
        if any(s.name == schedule.name for s in self.in_code()):
            raise Conflict(f"schedule {schedule.name!r} is defined in code; choose another name")
        row = schedule_row(schedule, time.time())
        await self.store.write_sql([(table.INSERT, row.params())])
        kept = (await self.stored()).get(schedule.name)
        if kept is None or kept.made != row.made:
            raise Conflict(f"a schedule named {schedule.name!r} exists already; delete it first or choose another name")
        self.changed()
        return kept

    async def delete(self, name: str) -> None:
        await self.store.write_sql([(table.DELETE, (name,))])
        self.changed()

    # ---- ticking ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        loaded = -math.inf  # when the table was last read (monotonic)
        while True:
            try:
                await self._store_code()
                # The table is read again only when something changed here, or every `every`
                # seconds (a cluster's other nodes): a tick needs only what is in memory.
                if self._stale or time.monotonic() - loaded >= self.every:
                    self._stale = False
                    loaded = time.monotonic()
                    await self._load()
                delay = await self.tick(time.time())
            except Exception as exc:  # the store is away: try again in a while
                log.warning("schedules: %s; trying again in 1 s", exc)
                self._stale = True
                delay = 1.0
            await wait_set(self._changed, max(0.0, min(delay, self.every)))
            self._changed.clear()

    async def _store_code(self) -> None:
        """Write the schedules in code whose definition the table does not have yet."""
        rows = [schedule_row(s, time.time()) for s in self.in_code()]
        new = [(table.SAVE_CODE, row.params()) for row in rows if row.definition() not in self._stored_code]
        if new:
            await self.store.write_sql(new)
        self._stored_code = {row.definition() for row in rows}

    async def _load(self) -> None:
        in_code = {s.name: s for s in self.in_code()}
        served = self._served()
        entries: dict[str, Entry] = {}
        for name, row in (await self.stored()).items():
            schedule = in_code.get(name) or (row_schedule(row) if row.source == "api" else None)
            if schedule is None or schedule.workflow not in served:
                continue  # in code on another node, or a workflow this node does not serve
            last = row.last_tick if row.last_tick is not None else row.created_at
            known = self.entries.get(name)
            if known is not None and known.caught_up and known.schedule == schedule:  # this node ticks it already
                entries[name] = Entry(schedule, max(last, known.last_tick), row.last_run_id, caught_up=True)
            else:
                entries[name] = Entry(schedule, last, row.last_run_id)
        self.entries = entries

    async def tick(self, now: float) -> float:
        """Start the runs of every tick due now; the seconds until the next tick."""
        due, ticked = self._due(now)
        started = await asyncio.gather(*(self._start_tick(entry.schedule, tick) for entry, tick in due))
        for (entry, tick), ok in zip(due, started, strict=True):
            if ok:
                entry.last_tick, entry.last_run_id = tick, tick_run_id(entry.schedule.name, tick)
                ticked[entry.schedule.name] = (tick, entry.last_run_id)
        if ticked:  # what each schedule last did, for a restart (ticks only move forward)
            await self.store.write_sql([(table.TICKED, (t, run_id, name, t)) for name, (t, run_id) in ticked.items()])
        if not all(started):
            return 1.0  # try those again soon
        if not self.entries:
            return self.every
        return min(e.schedule.next_tick(max(now, e.last_tick)) for e in self.entries.values()) - time.time()

    def _due(self, now: float) -> tuple[list[tuple[Entry, float]], dict[str, tuple[float, str | None]]]:
        """The ticks to start now, and the schedules whose missed ticks catchup passes over
        (the first look since this server started, with "skip"): their last tick now."""
        due: list[tuple[Entry, float]] = []
        passed: dict[str, tuple[float, str | None]] = {}
        for entry in self.entries.values():
            ticks = entry.schedule.due(entry.last_tick, now, catching_up=not entry.caught_up)
            due += [(entry, tick) for tick in ticks]
            latest = [] if entry.caught_up or ticks else entry.schedule.ticks_between(entry.last_tick, now, 1)
            if latest:
                entry.last_tick = latest[-1]
                passed[entry.schedule.name] = (entry.last_tick, entry.last_run_id)
            entry.caught_up = True
        return due, passed

    async def _start_tick(self, schedule: Schedule, tick: float) -> bool:
        """Start one tick's run; False if it should be tried again."""
        run_id = tick_run_id(schedule.name, tick)
        try:
            await self._start(schedule, run_id)
        except _PASSED_OVER as exc:  # e.g. its input no longer fits the workflow
            log.warning("schedule %r: no run for tick %s: %s", schedule.name, run_id, exc)
        except (RuncastError, OSError, RuntimeError) as exc:
            log.warning("schedule %r: the run of tick %s did not start (%s); trying again", schedule.name, run_id, exc)
            return False
        return True
