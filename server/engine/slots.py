"""Who runs next: at most `--max-running` runs at once, and the waiting ones in order.

A run takes a slot once it is due (its `scheduled_for` has passed); while none is free, the
waiting runs get them highest `priority` first, then oldest (contract 8.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from datetime import datetime


class Slots:
    """Up to `limit` holders at once; waiters are served highest priority, then oldest."""

    def __init__(self, limit: int) -> None:
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

    def _give_back(self) -> None:
        while self._waiting:
            given = heapq.heappop(self._waiting)[-1]
            if not given.done():
                given.set_result(None)
                return
        self.free += 1


def seconds_until(wire_time: str | None) -> float:
    """How long until a wire time (ISO 8601 UTC); 0 when it has passed or is None."""
    if wire_time is None:
        return 0.0
    return max(0.0, datetime.fromisoformat(wire_time).timestamp() - time.time())
