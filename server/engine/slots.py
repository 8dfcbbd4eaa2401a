"""Who runs next: at most `--max-running` runs at once, and the waiting ones in order.

A run takes a slot once it is due (its `scheduled_for` has passed), and once its concurrency
key has room (at most the key's limit running); while none is free, the waiting runs get
them highest `priority` first, then oldest (contract 8.2). A run waiting for its key holds
no slot, so runs with other keys are not held back.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import datetime
from typing import Any


class Slots:
    """Up to `limit` holders at once; waiters are served highest priority, then oldest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.free = limit
        self._waiting: list[tuple[int, str, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()  # ties (same priority and age) in arrival order

    async def take(self, priority: int, age: str) -> None:
        """Wait for a slot and hold it (until `give_back`). `age` orders waiters of one
        priority (older first): a run's creation time and id."""
        if self.free > 0 and not self._waiting:
            self.free -= 1
            return
        given: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, age, next(self._arrival), given))
        try:
            await given
        except asyncio.CancelledError:
            if given.done() and not given.cancelled():  # handed a slot as it was cancelled
                self.give_back()
            raise  # (a cancelled waiter is skipped when it comes up)

    @property
    def idle(self) -> bool:
        """Nobody holds a slot nor waits for one."""
        return not self._waiting and self.free == self.limit

    def give_back(self) -> None:
        while self._waiting:
            given = heapq.heappop(self._waiting)[-1]
            if not given.done():
                given.set_result(None)
                return
        self.free += 1


class KeySlots:
    """At most each key's limit of holders at once, per concurrency key; a run with no key
    passes straight through. Waiters of one key go highest priority, then oldest."""

    def __init__(self) -> None:
        self._keys: dict[str, Slots] = {}

    async def take(self, key: str | None, limit: int | None, priority: int, age: str) -> None:
        """Wait for room in the key and hold it (until `give_back`); a run with no key
        takes nothing."""
        if key is None:
            return
        slots = self._keys.setdefault(key, Slots(limit or 1))
        try:
            await slots.take(priority, age)
        except BaseException:
            self._forget_if_idle(key, slots)
            raise

    def give_back(self, key: str | None) -> None:
        if key is not None:
            slots = self._keys[key]
            slots.give_back()
            self._forget_if_idle(key, slots)

    def _forget_if_idle(self, key: str, slots: Slots) -> None:
        if slots.idle and self._keys.get(key) is slots:
            del self._keys[key]  # nobody holds or waits: forget the key


class Turns:
    """Whose turn it is: a run waits until it is due, then for room in its key, then for a
    slot; holding nothing while it waits for the first two."""

    def __init__(self, max_running: int) -> None:
        self.slots = Slots(max_running)
        self.keys = KeySlots()

    def taken(self, row: dict[str, Any]) -> Turn:
        """`async with turns.taken(row):` runs the block in the run's turn."""
        return Turn(self, row)


class Turn:
    """One run's turn, as an async context manager (a class, not a generator: it is taken
    once per run, on the hot path)."""

    __slots__ = ("key", "row", "turns")

    def __init__(self, turns: Turns, row: dict[str, Any]) -> None:
        self.turns = turns
        self.row = row
        self.key: str | None = None

    async def __aenter__(self) -> None:
        row = self.row
        while (later := seconds_until(row.get("scheduled_for"))) > 0:
            await asyncio.sleep(later)  # (the loop's timers may fire a clock tick early)
        priority, age = row.get("priority") or 0, f"{row['created_at']} {row['run_id']}"
        key = row.get("concurrency_key")
        await self.turns.keys.take(key, row.get("concurrency_limit"), priority, age)
        try:
            await self.turns.slots.take(priority, age)
        except BaseException:
            self.turns.keys.give_back(key)
            raise
        self.key = key

    async def __aexit__(self, *exc: object) -> None:
        self.turns.slots.give_back()
        self.turns.keys.give_back(self.key)


def seconds_until(wire_time: str | None) -> float:
    """How long until a wire time (ISO 8601 UTC); 0 when it has passed or is None."""
    if wire_time is None:
        return 0.0
    return max(0.0, datetime.fromisoformat(wire_time).timestamp() - time.time())
