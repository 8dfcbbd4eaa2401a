"""Schedules as the database keeps them (contract 8.3), and their SQL, written once for
both databases: those created over the wire, and what each one last did (for those in
code too: a restart must know which ticks it missed)."""

from __future__ import annotations

import os
from dataclasses import astuple, dataclass
from typing import Any

import orjson

from ..jsontext import dumps
from ..schedules import Schedule

COLUMNS = (
    "name",
    "workflow",
    "input",
    "cron",
    "every",
    "timezone",
    "catchup",
    "source",
    "owner",
    "created_at",
    "last_tick",
    "last_run_id",
    "made",
)
_MARKS = ", ".join(f"{{{i}}}" for i in range(len(COLUMNS)))
_DEFINITION = ("workflow", "input", "cron", "every", "timezone", "catchup", "made")

SELECT = f"SELECT {', '.join(COLUMNS)} FROM schedules ORDER BY name"
# Over the wire: a name taken is left as it is (the caller reads back whose `made` won).
INSERT = f"INSERT INTO schedules ({', '.join(COLUMNS)}) VALUES ({_MARKS}) ON CONFLICT (name) DO NOTHING"
# In code: its definition as served now, keeping what it last did.
SAVE_CODE = (
    f"INSERT INTO schedules ({', '.join(COLUMNS)}) VALUES ({_MARKS}) ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _DEFINITION)
    + " WHERE schedules.source = 'code'"
)
DELETE = "DELETE FROM schedules WHERE name = {0} AND source = 'api'"
# Ticks only move forward, whichever node writes them.
TICKED = (
    "UPDATE schedules SET last_tick = {0}, last_run_id = {1}"
    " WHERE name = {2} AND (last_tick IS NULL OR last_tick < {3})"
)

SQLITE_TABLE = """
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        input TEXT NOT NULL,
        cron TEXT,
        every INTEGER,
        timezone TEXT NOT NULL,
        catchup TEXT NOT NULL,
        source TEXT NOT NULL,
        owner TEXT,
        created_at REAL NOT NULL,
        last_tick REAL,
        last_run_id TEXT,
        made TEXT NOT NULL
    );
"""
POSTGRES_TABLE = SQLITE_TABLE.replace("REAL", "DOUBLE PRECISION")


@dataclass
class ScheduleRow:
    """One row of `schedules`."""

    name: str
    workflow: str
    input: str  # JSON
    cron: str | None
    every: int | None
    timezone: str
    catchup: str
    source: str
    owner: str | None
    created_at: float
    last_tick: float | None
    last_run_id: str | None
    made: str  # who wrote this definition: a random id, to tell a lost race to create it

    def params(self) -> tuple[Any, ...]:
        return astuple(self)

    def definition(self) -> tuple[Any, ...]:
        return (self.name, self.workflow, self.input, self.cron, self.every, self.timezone, self.catchup)


def schedule_row(schedule: Schedule, now: float) -> ScheduleRow:
    """A new row for a schedule (never ticked: its missed ticks count from `now`)."""
    return ScheduleRow(
        schedule.name,
        schedule.workflow,
        dumps(schedule.input),
        schedule.cron,
        schedule.every,
        schedule.timezone,
        schedule.catchup,
        schedule.source,
        schedule.owner,
        now,
        None,
        None,
        os.urandom(8).hex(),
    )


def row_schedule(row: ScheduleRow) -> Schedule:
    """The schedule a stored row defines."""
    return Schedule(
        row.name,
        cron=row.cron,
        every=row.every,
        input=orjson.loads(row.input),
        timezone=row.timezone,
        catchup=row.catchup,  # type: ignore[arg-type]
        workflow=row.workflow,
        source=row.source,  # type: ignore[arg-type]
        owner=row.owner,
    )


def read_row(values: Any) -> ScheduleRow:
    name, workflow, input, cron, every, timezone, catchup, source, owner, created, last, last_run, made = values
    return ScheduleRow(
        name,
        workflow,
        input,
        cron,
        int(every) if every is not None else None,
        timezone,
        catchup,
        source,
        owner,
        float(created),
        float(last) if last is not None else None,
        last_run,
        made,
    )
