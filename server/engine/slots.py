"""Who runs next: at most `--max-running` runs at once, and the waiting ones in order.

A run takes a slot once it is due (its `scheduled_for` has passed), and once its concurrency
key has room (at most the key's limit running); while none is free, the waiting runs get
them highest `priority` first, then oldest (contract 8.2). A run waiting for its key holds
no slot, so runs with other keys are not held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any


class Slots:
    """Up to `limit` holders at once; waiters are served highest priority, then oldest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.free = limit
        self._waiting: list[tuple[int, str, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()  # ties (same priority and age) in arrival order

    @contextlib.asynccontextmanager
    async def held(self, priority: int, age: str) -> AsyncIterator[None]:
        """Hold a slot for the block. `age` orders waiters of one priority (older first):
        a run's creation time and id."""
        await self._take(priority, age)
        try:
            yield
        finally:
            self._give_back()

    async def _take(self, priority: int, age: str) -> None:
        if self.free > 0 and not self._waiting:
            self.free -= 1
            return
        given: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, age, next(self._arrival), given))
        try:
            await given
        except asyncio.CancelledError:
            if given.done() and not given.cancelled():  # handed a slot as it was cancelled
                self._give_back()
            raise  # (a cancelled waiter is skipped when it comes up)

    @property
    def idle(self) -> bool:
        """Nobody holds a slot nor waits for one."""
        return not self._waiting and self.free == self.limit

    def _give_back(self) -> None:
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

    @contextlib.asynccontextmanager
    async def held(self, key: str | None, limit: int | None, priority: int, age: str) -> AsyncIterator[None]:
        if key is None:
            yield
            return
        slots = self._keys.setdefault(key, Slots(limit or 1))
        try:
            async with slots.held(priority, age):
                yield
        finally:
            if slots.idle and self._keys.get(key) is slots:
                del self._keys[key]  # nobody holds or waits: forget the key


class Turns:
    """Whose turn it is: a run waits until it is due, then for room in its key, then for a
    slot; holding nothing while it waits for the first two."""

    def __init__(self, max_running: int) -> None:
        self.slots = Slots(max_running)
        self.keys = KeySlots()

    @contextlib.asynccontextmanager
    async def taken(self, row: dict[str, Any]) -> AsyncIterator[None]:
        while (later := seconds_until(row.get("scheduled_for"))) > 0:
            await asyncio.sleep(later)  # (the loop's timers may fire a clock tick early)
        priority, age = row.get("priority") or 0, f"{row['created_at']} {row['run_id']}"
        key, limit = row.get("concurrency_key"), row.get("concurrency_limit")
        async with self.keys.held(key, limit, priority, age), self.slots.held(priority, age):
            yield


def seconds_until(wire_time: str | None) -> float:
    """How long until a wire time (ISO 8601 UTC); 0 when it has passed or is None."""
    if wire_time is None:
        return 0.0
    return max(0.0, datetime.fromisoformat(wire_time).timestamp() - time.time())
