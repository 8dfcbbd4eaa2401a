"""What one process runs: a store, the engine on top of it, and the broker and the runs
feed that fan out. The server runs one; so does each `SqliteDb` / `PostgresDb` of a
script (server/databases.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .engine import Engine
from .live import Broker, RunsFeed
from .live.feed import ClusterFeed
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
        self.retention_days = settings.retention_days
        self._pruner: asyncio.Task[None] | None = None

    async def open(self, *, recover: bool = True) -> None:
        await self.store.open()
        if self.feed is not None:
            self.feed.start()
        if recover:
            await self.engine.recover()
        if self.retention_days > 0:
            self._pruner = asyncio.create_task(keep_pruning(self.store, self.retention_days), name="runcast-retention")

    async def close(self) -> None:
        """Stop runs where they are (they resume on the next start), then flush the store."""
        await cancelled(self._pruner)
        await self.engine.shutdown()
        if self.feed is not None:
            await self.feed.stop()
        await self.store.close()

    def abandon(self) -> None:
        """Let go at once, e.g. when the event loop it ran on is gone (see Store.abandon)."""
        if self._pruner is not None:
            self._pruner.cancel()
        self.engine.abandon()
        self.store.abandon()
