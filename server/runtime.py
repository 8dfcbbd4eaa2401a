"""What one process runs: a store, the engine on top of it, and the broker and the runs
feed that fan out. The server runs one; so does each `SqliteDb` / `PostgresDb` of a
script (server/databases.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .engine import Engine
from .engine.scheduler import LONE_LOOK_SECONDS, Scheduler
from .live import Broker, RunsFeed
from .live.feed import ClusterFeed
from .schedules import Schedule
from .settings import Settings
from .store import open_store
from .store.retention import keep_pruning
from .waiting import cancelled
from .workflow import Workflow


class Runtime:
    """Store + engine + broker, opened and closed together."""

    def __init__(
        self,
        db: str,
        workflows: Iterable[Workflow] = (),
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings()
        self.settings = settings
        self.store = open_store(db, settings.node_id)
        self.broker = Broker(self.store)
        self.runs_feed = RunsFeed(self.store)
        self.engine = Engine(self.store, workflows, settings)
        coordination = self.store.coordination
        self.feed = (
            ClusterFeed(self.broker, self.store, coordination, self.runs_feed) if coordination is not None else None
        )
        cluster = self.engine.cluster
        self.scheduler = Scheduler(
            self.store,
            in_code=lambda: [s for wf in self.engine.workflows.values() for s in wf.schedules],
            served=lambda: set(self.engine.workflows),
            start=self._start_tick,
            every=cluster.beat_seconds if cluster is not None else LONE_LOOK_SECONDS,
        )
        self.retention_days = settings.retention_days
        self._pruner: asyncio.Task[None] | None = None

    async def open(self, *, recover: bool = True) -> None:
        await self.store.open()
        if self.feed is not None:
            self.feed.start()
        if recover:
            await self.engine.recover()
        self.scheduler.start()
        if self.retention_days > 0:
            self._pruner = asyncio.create_task(keep_pruning(self.store, self.retention_days), name="runcast-retention")

    async def close(self) -> None:
        """Stop runs where they are (they resume on the next start), then flush the store."""
        await cancelled(self._pruner)
        await self.scheduler.stop()
        await self.engine.shutdown()
        if self.feed is not None:
            await self.feed.stop()
        await self.store.close()

    def abandon(self) -> None:
        """Let go at once, e.g. when the event loop it ran on is gone (see Store.abandon)."""
        if self._pruner is not None:
            self._pruner.cancel()
        self.scheduler.abandon()
        self.engine.abandon()
        self.store.abandon()

    async def _start_tick(self, schedule: Schedule, run_id: str) -> None:
        """A schedule's tick: its run, started as whoever made the schedule (an idempotent
        start: the same tick started by another node is that run)."""
        await self.engine.start(schedule.workflow, schedule.input, run_id, owner=schedule.owner)
