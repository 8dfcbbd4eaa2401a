"""Fan-out of one server subscription per run to any number of local iterators.

The server keeps one subscription per run per connection (a second `subscribe` replaces
the first), so the client subscribes once per run and lets each iterator (a `Follower`)
take, from what arrives, only the event right after its own cursor. Each follower's queue
is bounded: when it is full the follower just stops taking; once its reader has drained
it to half, the feed subscribes again from that follower's cursor (the server replays
from its store), and when no follower wants events the feed unsubscribes. So a slow
reader holds at most `queue_size` events and still gets every event once, in order.

Pure bookkeeping: events go in, the messages to send come out; no I/O here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from server.vocabulary import TERMINAL_EVENTS

QUEUE_SIZE = 1000  # events held per subscription iterator before the client stops taking and refills later

Event = dict[str, Any]


class Follower:
    """One subscription iterator: its cursor and its bounded queue of events to yield."""

    def __init__(self, after: int, size: int = QUEUE_SIZE) -> None:
        self.seq = after  # the last seq put in the queue
        self.size = max(1, size)
        self.queue: deque[Event] = deque()
        self.hungry = True  # wants events; off when the queue fills, on again at half
        self.ended = False  # nothing comes after what is queued
        self.error: BaseException | None = None
        self._wake = asyncio.Event()

    def offer(self, event: Event) -> None:
        """Take the event if it is the next one and there is room."""
        if self.ended or event["seq"] != self.seq + 1 or len(self.queue) >= self.size:
            return
        self.queue.append(event)
        self.seq = event["seq"]
        self.ended = event["event"] in TERMINAL_EVENTS
        if len(self.queue) >= self.size:
            self.hungry = False
        self._wake.set()

    def end_at(self, last_seq: int) -> None:
        """The run has ended at `last_seq`: a follower already there gets nothing more."""
        if self.seq >= last_seq:
            self.ended = True
            self._wake.set()

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._wake.set()

    @property
    def wants(self) -> bool:
        return self.hungry and not self.ended and self.error is None

    async def get(self) -> Event | None:
        """The next event (None once the run has ended); raises the error after what is queued."""
        while not self.queue:
            if self.error is not None:
                raise self.error
            if self.ended:
                return None
            self._wake.clear()
            await self._wake.wait()
        event = self.queue.popleft()
        if len(self.queue) <= self.size // 2:
            self.hungry = True
        return event


class Feed:
    """The connection's one server subscription to a run, shared by that run's followers."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.followers: list[Follower] = []
        self.subscribed = False  # a subscription is in force on the server (or on its way there)
        self.expect = 0  # the next seq the server's subscription will send; lower seqs need a new subscribe

    def offer(self, event: Event) -> None:
        if event["seq"] == self.expect:
            self.expect += 1
        for follower in self.followers:
            follower.offer(event)
        if event["event"] in TERMINAL_EVENTS:
            self.end_at(event["seq"])

    def end_at(self, last_seq: int) -> None:
        for follower in self.followers:
            follower.end_at(last_seq)

    def fail(self, exc: BaseException) -> None:
        for follower in self.followers:
            follower.fail(exc)

    def lost(self) -> None:
        """The connection is gone, and the server's subscription with it."""
        self.subscribed = False

    def steer(self) -> dict[str, Any] | None:
        """The message that gives every hungry follower its next event: a subscribe from the
        lowest hungry cursor when the current subscription has passed it (or there is none),
        an unsubscribe when nobody wants events; None when nothing needs sending."""
        hungry = [f.seq for f in self.followers if f.wants]
        if not hungry:
            if not self.subscribed:
                return None
            self.subscribed = False
            return {"type": "unsubscribe", "run_id": self.run_id}
        after = min(hungry)
        if self.subscribed and after + 1 >= self.expect:
            return None  # the current subscription will still send it
        self.subscribed, self.expect = True, after + 1
        return {"type": "subscribe", "run_id": self.run_id, "after": after, "batch": True}
