"""Retention: finished runs and their events are deleted once they are older than a limit."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from .base import RunStore

log = logging.getLogger("runcast.retention")

PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BATCH = 200  # runs per transaction: keeps every commit short


def cutoff(days: float, now: datetime | None = None) -> str:
    """The finished_at before which runs are deleted, in the store's time format."""
    moment = (now or datetime.now(UTC)) - timedelta(days=days)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def prune_once(store: RunStore, days: float) -> int:
    """Delete every finished run older than `days`, in small batches; returns how many."""
    total = 0
    before = cutoff(days)
    while True:
        pruned = await store.prune(before, PRUNE_BATCH)
        total += pruned
        if pruned < PRUNE_BATCH:
            return total
        await asyncio.sleep(0.01)  # let the runs' own writes through between batches


async def keep_pruning(store: RunStore, days: float, every: float = PRUNE_EVERY_SECONDS) -> None:
    """Prune now and then every `every` seconds, until cancelled."""
    while True:
        try:
            pruned = await prune_once(store, days)
            if pruned:
                log.info("retention: deleted %d run(s) finished over %g day(s) ago", pruned, days)
        except Exception:  # a failed prune is retried next time; it must not stop the server
            log.exception("retention: pruning failed")
        await asyncio.sleep(every)
