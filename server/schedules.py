"""Schedules (contract 8.3): what one is, when it ticks, and which ticks start a run.

Pure: no I/O and no clock (the caller gives the times), so the engine's scheduler, the
commands and the tests share it. Cron expressions are read by croniter, in the schedule's
time zone; `every` ticks fall on whole multiples of `every` seconds since the epoch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .wire import utc_iso

NAME = re.compile(r"[A-Za-z0-9_\-.]{1,40}")
CATCHUPS = ("latest", "skip", "all")
MAX_CATCHUP = 100  # runs one schedule starts for ticks missed while no server ran ("all")
MAX_EVERY = 366 * 24 * 3600  # seconds: an `every` schedule ticks at least yearly

Catchup = Literal["latest", "skip", "all"]


class ScheduleError(ValueError):
    """A schedule that cannot be: the message says which field and why."""


@dataclass(frozen=True)
class Schedule:
    """A workflow started on a clock: `cron` (a cron expression in `timezone`) or `every`
    (whole seconds), with `input`. `catchup` says what to do about ticks missed while no
    server ran: start one run for the latest ("latest"), none ("skip"), or one for each,
    at most 100 ("all"). `Workflow(..., schedules=[Schedule("nightly", cron="0 3 * * *")])`."""

    name: str
    cron: str | None = None
    every: int | None = None
    input: Any = None
    timezone: str = "UTC"
    catchup: Catchup = "latest"
    workflow: str = ""  # set by the Workflow that lists it, or given over the wire
    source: Literal["code", "api"] = "code"
    owner: str | None = None  # the sub of who created it over the wire; its runs are theirs
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise ScheduleError("a schedule's name is 1 to 40 characters of A-Z a-z 0-9 _ - .")
        if (self.cron is None) == (self.every is None):
            raise ScheduleError(f"schedule {self.name!r}: give either 'cron' or 'every', not both or neither")
        if self.cron is not None and (not isinstance(self.cron, str) or not croniter.is_valid(self.cron)):
            example = "such as '0 3 * * *' (minute hour day month weekday)"
            raise ScheduleError(f"schedule {self.name!r}: 'cron' {self.cron!r} is not a cron expression {example}")
        if self.every is not None:
            every = self.every
            if isinstance(every, bool) or not isinstance(every, int | float) or not math.isfinite(every):
                raise ScheduleError(f"schedule {self.name!r}: 'every' must be a number of seconds")
            if every != int(every) or not 1 <= every <= MAX_EVERY:
                raise ScheduleError(f"schedule {self.name!r}: 'every' must be whole seconds from 1 to {MAX_EVERY}")
            object.__setattr__(self, "every", int(every))
        if self.catchup not in CATCHUPS:
            raise ScheduleError(f"schedule {self.name!r}: 'catchup' must be one of {', '.join(CATCHUPS)}")
        try:
            zone = ZoneInfo(self.timezone) if isinstance(self.timezone, str) and self.timezone else None
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
        if zone is None:
            why = "is not a time zone such as 'UTC' or 'Europe/Paris'"
            raise ScheduleError(f"schedule {self.name!r}: 'timezone' {self.timezone!r} {why}")
        object.__setattr__(self, "_zone", zone)

    def for_workflow(self, workflow: str) -> Schedule:
        return replace(self, workflow=workflow)

    # ---- ticks -------------------------------------------------------------------------

    def next_tick(self, after: float) -> float:
        """The first tick strictly after `after` (epoch seconds)."""
        if self.every is not None:
            return (math.floor(after / self.every) + 1) * self.every
        assert self.cron is not None
        start = datetime.fromtimestamp(math.floor(after), self._zone)
        return float(croniter(self.cron, start).get_next(float))

    def ticks_between(self, after: float, until: float, most: int) -> list[float]:
        """The last `most` ticks in (after, until], oldest first."""
        if until <= after or most <= 0:
            return []
        if self.every is not None:
            last = math.floor(until / self.every) * self.every
            first = max((math.floor(after / self.every) + 1) * self.every, last - (most - 1) * self.every)
            return [float(t) for t in range(int(first), int(last) + 1, self.every)]
        assert self.cron is not None
        # Back from `until`: a tick exactly at `until` counts (get_prev is strictly before).
        ticks: list[float] = []
        it = croniter(self.cron, datetime.fromtimestamp(math.floor(until) + 1, self._zone))
        while len(ticks) < most:
            tick = float(it.get_prev(float))
            if tick <= after:
                break
            ticks.append(tick)
        return ticks[::-1]

    def due(self, last_tick: float, now: float, *, catching_up: bool = False) -> list[float]:
        """The ticks after `last_tick` (the last one handled) that start a run now. While a
        server runs every tick does, however late its loop; the ticks found when it starts
        (`catching_up`) were missed while none ran, and `catchup` says which of them do."""
        ticks = self.ticks_between(last_tick, now, MAX_CATCHUP)
        if not catching_up or self.catchup == "all":
            return ticks
        return ticks[-1:] if self.catchup == "latest" else []

    # ---- the wire ----------------------------------------------------------------------

    def describe(self, now: float, last_run_id: str | None) -> dict[str, Any]:
        """The schedule as the contract shows it."""
        return {
            "name": self.name,
            "workflow": self.workflow,
            "input": self.input,
            "cron": self.cron,
            "every": self.every,
            "timezone": self.timezone,
            "catchup": self.catchup,
            "next_at": utc_iso(self.next_tick(now)),
            "last_run_id": last_run_id,
            "source": self.source,
            "owner": self.owner,
        }


def tick_run_id(name: str, tick: float) -> str:
    """The id of the run a tick starts: `sched:<name>:<YYYYMMDDTHHMMSSZ>` (UTC, whole seconds)."""
    return f"sched:{name}:{datetime.fromtimestamp(math.floor(tick), UTC):%Y%m%dT%H%M%SZ}"
