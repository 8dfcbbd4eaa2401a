"""The cluster feed: events that other nodes commit reach this node's subscribers.

A notification (one per commit of another node: its runs and their last seqs) is only a
wake-up; the events are read from the table by seq, after what this node's subscribers
have, and offered to the broker like local commits. A periodic catch-up compares each
followed run's last seq with what was offered, so that a lost notification or a dropped
LISTEN connection delays delivery by at most a beat and never loses an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..store import Coordination, RunStore
from ..waiting import wait_set
from .broker import REFILL_PAGE, Broker

log = logging.getLogger("runcast.feed")

CATCH_UP_SECONDS = 1.0


class ClusterFeed:
    """Reads other nodes' new events for the runs this node's clients follow."""

    def __init__(self, broker: Broker, store: RunStore, coordination: Coordination) -> None:
        self.broker = broker
        self.store = store
        self.coordination = coordination
        self._dirty: set[str] = set()
        self._everything = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        coordination.on_events(self._heard)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="runcast-cluster-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _heard(self, runs: dict[str, int] | None) -> None:
        if runs is None:
            self._everything = True
        else:
            followed = self.broker.followed
            self._dirty.update(r for r in runs if r in followed)  # one lookup per run of the commit
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            if not await wait_set(self._wake, CATCH_UP_SECONDS):
                self._everything = True  # the catch-up beat
            self._wake.clear()
            try:
                await self._deliver()
            except Exception as exc:  # the database is away: the next beat tries again
                log.warning("cluster feed: %s", exc)
                self._everything = True
                await asyncio.sleep(CATCH_UP_SECONDS)

    async def _deliver(self) -> None:
        if self._everything:
            self._everything = False
            remote = [r for r in self.broker.followed if not self.coordination.owns(r)]
            heads = await self.coordination.heads(remote) if remote else {}
            for run_id, seq in heads.items():
                had = self.broker.had(run_id)
                if had is not None and seq > had:
                    self._dirty.add(run_id)
        dirty, self._dirty = self._dirty, set()
        for run_id in dirty:
            after = self.broker.had(run_id)
            while after is not None:
                events = await self.store.read_events(run_id, after, REFILL_PAGE)
                if not events:
                    break
                self.broker.publish(events)
                after = events[-1].seq if len(events) == REFILL_PAGE else None
