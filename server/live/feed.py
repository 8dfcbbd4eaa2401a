"""The cluster feed: events that other nodes commit reach this node's subscribers, and
their runs' changes reach this node's runs feed.

A notification (one per commit of another node: its runs and their last seqs) is only a
wake-up; the events are read from the table by seq, after what this node's subscribers
have, and offered to the broker like local commits. A periodic catch-up compares each
followed run's last seq with what was offered, so that a lost notification or a dropped
LISTEN connection delays delivery by at most a beat and never loses an event.

For the runs feed (only while someone here watches runs), each run whose state another
node wrote is read back once per wake-up, however many commits it had meanwhile, in a
task of its own so that events are not delayed by it, and offered to the feed, which
sends it only if its status or a step's status moved. When a notice could not say which
runs (too many for one, or the LISTEN connection was down), the runs the feed knows
unfinished and the newest page of runs are read again.
"""

from __future__ import annotations

import asyncio
import logging

from ..store import ANY_RUN, Coordination, RunStore
from ..waiting import cancelled, wait_set
from .broker import REFILL_PAGE, Broker
from .runs_feed import RunsFeed

log = logging.getLogger("runcast.feed")

CATCH_UP_SECONDS = 1.0
RUNS_CATCH_UP_PAGE = 100  # newest runs read again when a notice could not say which runs changed


class ClusterFeed:
    """Reads other nodes' new events for the runs this node's clients follow."""

    def __init__(
        self, broker: Broker, store: RunStore, coordination: Coordination, runs_feed: RunsFeed | None = None
    ) -> None:
        self.broker = broker
        self.store = store
        self.coordination = coordination
        self.runs_feed = runs_feed
        self._dirty: set[str] = set()
        self._everything = False
        self._changed: set[str] = set()  # runs whose state another node wrote, for the runs feed
        self._all_changed = False  # a notice that could not say which
        self._wake = asyncio.Event()
        self._runs_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        coordination.on_events(self._heard)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._loop(), name="runcast-cluster-feed"))
        if self.runs_feed is not None:
            # A task of its own: reading runs back for the runs feed must not delay events.
            self._tasks.append(asyncio.create_task(self._runs_loop(self.runs_feed), name="runcast-cluster-runs"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancelled(*tasks)

    def _heard(self, runs: dict[str, int] | None, changed: set[str] | None) -> None:
        if runs is None:
            self._everything = True
        else:
            followed = self.broker.followed
            self._dirty.update(r for r in runs if r in followed)  # one lookup per run of the commit
        if self.runs_feed is not None and self.runs_feed.watched:
            if changed is not None:
                self._changed |= changed
            elif runs is not None:
                self._changed.update(runs)
            else:
                self._all_changed = True
            self._runs_wake.set()
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

    async def _runs_loop(self, feed: RunsFeed) -> None:
        while True:
            await self._runs_wake.wait()
            self._runs_wake.clear()
            try:
                await self._deliver_changes(feed)
            except Exception as exc:  # the database is away: the runs left are read once it is back
                log.warning("cluster feed (runs): %s", exc)
                self._runs_wake.set()
                await asyncio.sleep(CATCH_UP_SECONDS)

    async def _deliver_changes(self, feed: RunsFeed) -> None:
        """Read back each run another node changed (once, however many commits it had
        since) and offer it to the runs feed. What fails to be read stays to read."""
        if not feed.watched:
            self._changed.clear()
            self._all_changed = False
            return
        if self._all_changed:
            runs, _ = await self.store.list_runs(ANY_RUN, RUNS_CATCH_UP_PAGE, None)
            self._all_changed = False
            self._changed.update(r["run_id"] for r in runs)
            self._changed.update(feed.unfinished)
        while self._changed:
            run_id = self._changed.pop()
            if self.coordination.owns(run_id):
                continue  # this node's writer told the feed already
            try:
                state = await self.store.get_run(run_id, steps=True)
            except Exception:
                self._changed.add(run_id)
                raise
            if state is not None:
                feed.offer(state, state["last_seq"])

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
